/**
 * The SMTP side of abuse resistance: wires the pure throttles (auth-throttle, client-limits, deadlines)
 * to smtp-server through the hooks in smtp-hooks.ts, and says what it did in metrics and logs. One per
 * Inbound; state is per relay (see docs/operations.md#abuse for what that means across a fleet).
 */
import type { Logger } from 'pino';
import type { ListenerConfig, ListenerLimits, RelayConfig } from '../config.js';
import type { HookedConnection, HookOptions } from '../smtp-hooks.js';
import { SmtpReplyError } from '../errors.js';
import { AuthThrottle, closesConnection, failureDelay, type AuthAttempt } from './auth-throttle.js';
import { ClientConnections, admitGlobal } from './client-limits.js';
import { DeadlineWatch, type DeadlineLimits, type Overdue, type Watched } from './deadlines.js';
import type { AbuseMetrics } from './metrics.js';

export interface GuardDeps {
  cfg: () => RelayConfig;
  trusted: (address: string) => boolean;
  metrics: AbuseMetrics;
  log: Logger;
  now: () => number;
}

/** What the guard keeps on a session. */
export interface GuardedSession {
  remoteAddress: string;
  authFailures?: number;
  releaseClient?: () => void;
  watched?: Watched;
}

export type AuthRefusal = { ok: false; error: SmtpReplyError; delayMs: number };
export type AuthVerdict = { ok: true } | AuthRefusal;

interface ListenerState {
  name: string;
  clients: ClientConnections;
  /** Open connections (smtp-server's count, read through the hooks). */
  open: () => number;
  stressed: boolean;
  setIdleTimeout: (ms: number) => void;
}

const authFailed = () => new SmtpReplyError('ERR_AUTH', 535, '5.7.8', 'Authentication credentials invalid');
const authLocked = () =>
  new SmtpReplyError('ERR_AUTH_LOCKED', 454, '4.7.0', 'Temporary authentication failure, try again later');
const authTooMany = () =>
  new SmtpReplyError(
    'ERR_AUTH_TOO_MANY',
    421,
    '4.7.0',
    'Too many failed authentication attempts, closing connection',
  );

export class SmtpGuard {
  readonly auth: AuthThrottle;
  private readonly watch: DeadlineWatch;
  private readonly listeners = new Map<string, ListenerState>();

  constructor(private readonly d: GuardDeps) {
    this.auth = new AuthThrottle(() => d.cfg().limits.auth, d.now);
    this.watch = new DeadlineWatch(d.now);
  }

  /** smtp-server options for a listener; `open` reads the listener's connection count. */
  hooks(l: ListenerConfig, open: () => number, setIdleTimeout: (ms: number) => void): HookOptions {
    const st: ListenerState = {
      name: l.name,
      clients: new ClientConnections(this.d.now),
      open,
      stressed: false,
      setIdleTimeout,
    };
    this.listeners.set(l.name, st);
    return {
      admitConnection: (address, n) => {
        this.updateStress(st);
        const cfg = this.d.cfg();
        const ok = admitGlobal(
          n,
          cfg.limits.maxConnections,
          cfg.limits.reservedForTrusted,
          this.d.trusted(address),
        );
        if (!ok) this.d.metrics.rejected.inc({ listener: l.name, reason: 'server_full' });
        return ok;
      },
      onConnectionInit: (conn) => this.track(st, conn),
      onCommandLine: (conn) => {
        const w = (conn.session as GuardedSession).watched;
        if (w) this.watch.commandSeen(w);
      },
    };
  }

  /** At connect (smtp-server's onConnect): the per-client caps. Returns the refusal, if any. */
  admit(listener: string, session: GuardedSession): SmtpReplyError | undefined {
    const st = this.listeners.get(listener);
    if (!st) return undefined;
    const a = st.clients.admit(
      session.remoteAddress,
      this.d.trusted(session.remoteAddress),
      this.limitsOf(listener),
    );
    if (a.ok) {
      session.releaseClient = a.release;
      return undefined;
    }
    this.d.metrics.rejected.inc({ listener, reason: a.reason });
    return new SmtpReplyError(
      'ERR_CLIENT_LIMIT',
      421,
      '4.7.0',
      a.reason === 'client_rate'
        ? 'Too many connections from your address, slow down'
        : 'Too many concurrent connections from your address, try again later',
    );
  }

  closed(listener: string, session: GuardedSession): void {
    session.releaseClient?.();
    session.releaseClient = undefined;
    if (session.watched) this.watch.remove(session.watched);
    session.watched = undefined;
    const st = this.listeners.get(listener);
    if (st) this.updateStress(st);
  }

  /** Before the password is looked at: a lock refuses the attempt. */
  preAuth(listener: string, session: GuardedSession, attempt: AuthAttempt): AuthVerdict {
    const lock = this.auth.locked(attempt);
    if (!lock) return { ok: true };
    const nth = (session.authFailures = (session.authFailures ?? 0) + 1);
    this.d.metrics.authFailures.inc({ listener, reason: `locked_${lock.scope}` });
    this.d.metrics.rejected.inc({ listener, reason: 'auth_locked' });
    const close = closesConnection(nth, this.d.cfg().limits.auth);
    return { ok: false, error: close ? authTooMany() : authLocked(), delayMs: 0 };
  }

  /** After a wrong password (or an unknown account): counts it, maybe locks, says how to answer. */
  failedAuth(listener: string, session: GuardedSession, attempt: AuthAttempt): AuthRefusal {
    const l = this.d.cfg().limits.auth;
    const nth = (session.authFailures = (session.authFailures ?? 0) + 1);
    this.d.metrics.authFailures.inc({ listener, reason: 'invalid' });
    const locks = this.auth.failed(attempt);
    for (const lock of locks) {
      this.d.metrics.authLockouts.inc({ scope: lock.scope });
      this.d.log.warn(
        {
          event: 'auth.lockout',
          listener,
          scope: lock.scope,
          client: attempt.address,
          ...(lock.scope === 'account' ? { username: attempt.username.slice(0, 256) } : {}),
          until: new Date(lock.until).toISOString(),
        },
        lock.scope === 'client'
          ? 'too many failed AUTH attempts from this address: AUTH refused from it until the lock ends'
          : 'too many failed AUTH attempts for this account: AUTH refused for it until the lock ends',
      );
    }
    if (!locks.length && !this.auth.locked(attempt)) {
      this.d.log.warn(
        { event: 'auth.failed', listener, client: attempt.address, username: attempt.username.slice(0, 256) },
        'authentication failed',
      );
    }
    return {
      ok: false,
      error: closesConnection(nth, l) ? authTooMany() : authFailed(),
      delayMs: failureDelay(nth, l),
    };
  }

  /** The client limits in force on a listener (its own merged over the top-level ones). */
  private limitsOf(listener: string): ListenerLimits {
    const l = this.d.cfg().listeners.find((x) => x.name === listener);
    return l ? l.limits : this.d.cfg().listeners[0].limits;
  }

  private deadlinesOf(st: ListenerState): DeadlineLimits {
    const own = this.limitsOf(st.name);
    const stress = this.d.cfg().limits.stress;
    return {
      commandTimeoutMs: st.stressed
        ? Math.min(own.commandTimeoutMs, stress.commandTimeoutMs)
        : own.commandTimeoutMs,
      minDataRate: own.minDataRate,
    };
  }

  /** Stress mode: from `threshold` × maxConnections open, shorter timeouts (as Postfix's `stress`). */
  private updateStress(st: ListenerState): void {
    const cfg = this.d.cfg();
    const stressed = st.open() >= Math.ceil(cfg.limits.stress.threshold * cfg.limits.maxConnections);
    const own = this.limitsOf(st.name);
    if (stressed !== st.stressed) {
      st.stressed = stressed;
      this.d.metrics.stress.set({ listener: st.name }, stressed ? 1 : 0);
      this.d.log.warn(
        { event: stressed ? 'smtp.stress.on' : 'smtp.stress.off', listener: st.name, open: st.open() },
        stressed ? 'listener nearly full: stress timeouts apply' : 'listener load back to normal',
      );
    }
    st.setIdleTimeout(
      stressed ? Math.min(own.idleTimeoutMs, cfg.limits.stress.idleTimeoutMs) : own.idleTimeoutMs,
    );
  }

  private track(st: ListenerState, conn: HookedConnection): void {
    const session = conn.session as GuardedSession;
    const w: Watched = {
      progress: () => ({
        inData: !!conn._parser && !!conn._parser._dataMode,
        waitingForUs:
          !!conn._handlerPending || (!!conn._dataStream && !(conn._parser && conn._parser._dataMode)),
        bytes: conn._socket.bytesRead,
      }),
      limits: () => this.deadlinesOf(st),
      cut: (why: Overdue) => this.cut(st, conn, why),
    };
    session.watched = w;
    this.watch.add(w);
  }

  private cut(st: ListenerState, conn: HookedConnection, why: Overdue): void {
    if (conn._closing || conn._socket.destroyed) return;
    this.d.metrics.rejected.inc({ listener: st.name, reason: why });
    this.d.log.info(
      { event: 'smtp.deadline', listener: st.name, client: conn.remoteAddress, reason: why },
      why === 'command_timeout'
        ? 'command not complete in time: connection closed'
        : 'DATA too slow: connection closed',
    );
    conn.send(
      421,
      why === 'command_timeout'
        ? '4.4.2 Error: timeout exceeded, closing connection'
        : '4.4.2 Error: data transfer too slow, closing connection',
    );
    // smtp-server's close() waits for the client to close its side; a client this slow may never do it
    const socket = conn._socket as unknown as import('node:net').Socket;
    const kill = setTimeout(() => socket.destroy(), 2000);
    kill.unref();
    socket.once('finish', () => {
      clearTimeout(kill);
      socket.destroy();
    });
  }

  /** Connections watched for deadlines (bounded by the listeners' maxConnections). */
  get watched(): number {
    return this.watch.size;
  }

  stop(): void {
    this.watch.stop();
  }
}
