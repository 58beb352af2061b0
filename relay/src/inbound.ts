/**
 * Inbound SMTP: one smtp-server per listener, its handlers from connect to the end of DATA. Policy
 * decisions come from policy.ts, abuse limits from abuse/, and accepting a message (spool, envelope,
 * queue) from accept.ts: the client hears `250 ... queued as <id>` only once it is durable.
 */
import {
  SMTPServer,
  type SMTPServerOptions,
  type SMTPServerDataStream,
  type SMTPServerAddress,
  type SMTPServerAuthentication,
} from 'smtp-server';
import type { ListenerConfig } from './config.js';
import { reply, SmtpReplyError } from './errors.js';
import { addressProblem, secretEquals } from './policy.js';
import { installSmtpHooks, type HookOptions } from './smtp-hooks.js';
import { SmtpGuard } from './abuse/smtp-guard.js';
import { registerAbuseMetrics } from './abuse/metrics.js';
import { acceptMessage, OVERHEAD, type AcceptDeps, type InboundSession } from './accept.js';
import { rcptRefusedEvent } from './events/smtp-events.js';

export type InboundDeps = AcceptDeps;

interface Listening {
  name: string;
  config: ListenerConfig;
  server: SMTPServer;
  address: string;
  port: number;
}

type Session = InboundSession;

export class Inbound {
  private listening: Listening[] = [];
  private closing = false;
  private openTransactions = 0;
  readonly guard: SmtpGuard;

  constructor(private readonly d: InboundDeps) {
    const abuse = registerAbuseMetrics(d.metrics.registry, d.metrics.rejected, () => ({
      clients: this.guard.auth.lockedClients(),
      accounts: this.guard.auth.lockedAccounts(),
    }));
    this.guard = new SmtpGuard({
      cfg: () => this.d.cfg,
      trusted: (address) => this.d.tenancy.dir.tenantForClient(undefined, address) !== undefined,
      metrics: abuse,
      log: d.log,
      now: d.now,
    });
  }

  get ports(): Record<string, number> {
    return Object.fromEntries(this.listening.map((l) => [l.name, l.port]));
  }

  get transactionsInFlight(): number {
    return this.openTransactions;
  }

  async start(): Promise<void> {
    const hooks = installSmtpHooks();
    if (!hooks.init) {
      this.d.log.warn(
        { event: 'greeting.delay.unsupported' },
        'this smtp-server version changed its greeting code: greetingDelay, reservedForTrusted and command deadlines are not applied',
      );
    } else if (!hooks.command) {
      this.d.log.warn(
        { event: 'smtp.deadlines.unsupported' },
        'this smtp-server version changed its command dispatch: command deadlines count from the connection start',
      );
    }
    for (const l of this.d.cfg.listeners) {
      const ref: { server?: SMTPServer } = {};
      const hookOptions = this.guard.hooks(
        l,
        () => ref.server?.connections.size ?? 0,
        (ms) => {
          if (ref.server) ref.server.options.socketTimeout = ms;
        },
      );
      const server = (ref.server = new SMTPServer({
        ...this.options(l),
        ...hookOptions,
      } as SMTPServerOptions));
      server.on('error', (err) =>
        this.d.log.warn({ event: 'smtp.error', listener: l.name, err: err.message }, 'SMTP listener error'),
      );
      await new Promise<void>((resolve, reject) => {
        const onErr = (e: Error) => reject(e);
        server.server.once('error', onErr);
        server.listen(l.port, l.address, () => {
          server.server.removeListener('error', onErr);
          resolve();
        });
      });
      const addr = server.server.address();
      const port = typeof addr === 'object' && addr ? addr.port : l.port;
      this.listening.push({ name: l.name, config: l, server, address: l.address, port });
      this.d.log.info(
        { event: 'listening', listener: l.name, address: l.address, port, tls: l.tls, auth: l.auth },
        'SMTP listener ready',
      );
    }
  }

  /** Drain: the listeners stay up but every new connection and every new transaction gets 421. */
  stopAccepting(): void {
    this.closing = true;
  }

  /**
   * Stops accepting (the listening sockets close, so new connections are refused), tells idle sessions
   * 421 at once, and lets sessions inside DATA finish. Resolves when every listener closed, or at the deadline.
   */
  async stop(graceMs: number): Promise<void> {
    this.closing = true;
    this.guard.stop();
    const deadline = Date.now() + graceMs;
    await Promise.all(
      this.listening.map(
        (l) =>
          new Promise<void>((resolve) => {
            const t = setTimeout(resolve, Math.max(0, deadline - Date.now()));
            t.unref();
            // smtp-server's close() stops listening, waits up to closeTimeout for open sessions, then 421s them
            l.server.close(() => {
              clearTimeout(t);
              resolve();
            });
            // an idle session would otherwise hold the shutdown for the whole grace period
            for (const conn of [...l.server.connections]) {
              if (!conn._dataStream) conn.send(421, reply.shuttingDown().message);
            }
          }),
      ),
    );
  }

  /**
   * After a config reload. smtp-server reads these options as it goes, so new connections get the new
   * hostname, message size (SIZE), connection limit, idle timeout and greeting delay, and AUTH is offered
   * once the config has accounts (and no longer when it has none). Listeners need a restart; a new
   * certificate is applied by updateTls.
   */
  reconfigure(): void {
    const cfg = this.d.cfg;
    for (const l of this.listening) {
      const o = l.server.options as SMTPServerOptions & HookOptions & { disabledCommands: string[] };
      const now = cfg.listeners.find((x) => x.name === l.name) ?? l.config;
      o.name = cfg.hostname;
      o.size = cfg.limits.maxMessageSize;
      o.maxClients = cfg.limits.maxConnections;
      o.socketTimeout = now.limits.idleTimeoutMs;
      o.closeTimeout = cfg.gracePeriodMs;
      o.greetingDelayMs = cfg.limits.greetingDelayMs;
      o.disabledCommands = this.disabledCommands(l.config);
    }
  }

  /**
   * A renewed certificate: the TLS listeners (implicit and STARTTLS alike: smtp-server upgrades each
   * socket with its current default context) use it for every new handshake; open connections keep
   * the one they negotiated. The pair must have been checked (tls-pair.ts). Returns the listeners changed.
   */
  updateTls(tls: { cert: Buffer; key: Buffer }): string[] {
    const changed: string[] = [];
    for (const l of this.listening) {
      if (l.config.tls === 'none') continue;
      l.server.updateSecureContext({ key: tls.key, cert: tls.cert });
      changed.push(l.name);
    }
    return changed;
  }

  private disabledCommands(l: ListenerConfig): string[] {
    const cfg = this.d.cfg;
    return [
      ...(l.tls === 'none' ? ['STARTTLS'] : []),
      ...(cfg.accounts.size === 0 && !cfg.peer ? ['AUTH'] : []),
    ];
  }

  private options(l: ListenerConfig): SMTPServerOptions {
    const cfg = this.d.cfg;
    const tls = cfg.tls;
    return {
      name: cfg.hostname,
      banner: 'Cartero',
      secure: l.tls === 'implicit',
      ...(tls && l.tls !== 'none' ? { key: tls.key, cert: tls.cert, minVersion: 'TLSv1.2' } : {}),
      disabledCommands: this.disabledCommands(l),
      authMethods: ['PLAIN', 'LOGIN'],
      authOptional: l.auth === 'optional',
      // On a plaintext listener (in-cluster traffic) AUTH is allowed without TLS; with starttls it needs TLS first.
      allowInsecureAuth: l.tls === 'none',
      size: cfg.limits.maxMessageSize,
      hideSize: false,
      hidePIPELINING: false,
      hide8BITMIME: false,
      hideSMTPUTF8: false,
      hideDSN: false,
      hideENHANCEDSTATUSCODES: true,
      maxClients: cfg.limits.maxConnections,
      socketTimeout: l.limits.idleTimeoutMs,
      closeTimeout: cfg.gracePeriodMs,
      disableReverseLookup: true,
      logger: false,
      greetingDelayMs: cfg.limits.greetingDelayMs,
      onConnect: (session, cb) => {
        if (this.closing) return cb(reply.shuttingDown());
        const refused = this.guard.admit(l.name, session as Session);
        if (refused) {
          this.d.log.info(
            {
              event: 'connection.refused',
              listener: l.name,
              client: session.remoteAddress,
              reply: refused.message,
            },
            'connection refused: client over its limits',
          );
          return cb(refused);
        }
        (session as Session).carteroListener = l.name;
        this.d.metrics.connections.inc({ listener: l.name });
        cb();
      },
      onClose: (session) => {
        const s = session as Session;
        s.closed = true;
        s.reservation?.release();
        this.guard.closed(l.name, s);
        if (s.carteroListener) this.d.metrics.connections.dec({ listener: l.name });
      },
      onAuth: (auth, session, cb) =>
        this.guarded(l, 'AUTH', cb, () => this.onAuth(l, auth, session as Session, cb)),
      onMailFrom: (address, session, cb) =>
        this.guarded(l, 'MAIL', cb, () => this.onMailFrom(l, address, session as Session, cb)),
      onRcptTo: (address, session, cb) =>
        this.guarded(l, 'RCPT', cb, () => this.onRcptTo(l, address, session as Session, cb)),
      onData: (stream, session, cb) => this.onData(l, stream, session as Session, cb),
    } as SMTPServerOptions;
  }

  /** A bug in a handler must not go unseen: log it and answer 451 (the client retries later). */
  private guarded(l: ListenerConfig, command: string, cb: (err: Error) => void, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.d.log.error(
        { event: 'smtp.handler.error', listener: l.name, command, err: (e as Error).stack ?? String(e) },
        'internal error in an SMTP handler',
      );
      cb(new SmtpReplyError('ERR_LOCAL', 451, '4.3.0', 'Local error in processing, try again later'));
    }
  }

  private refuse(l: ListenerConfig, reason: string, err: SmtpReplyError, cb: (e: Error) => void): void {
    this.d.metrics.rejected.inc({ listener: l.name, reason });
    cb(err);
  }

  private onAuth(
    l: ListenerConfig,
    auth: SMTPServerAuthentication,
    session: Session,
    cb: (err: Error | null | undefined, res?: { user: string }) => void,
  ): void {
    const peer = this.d.cfg.peer;
    const username = auth.username ?? '';
    const attempt = {
      address: session.remoteAddress,
      username,
      trusted: this.d.tenancy.dir.tenantForClient(undefined, session.remoteAddress) !== undefined,
      peer: !!peer && username === peer.username,
    };
    // a lock refuses the attempt before the password is looked at: a right one is refused too
    const pre = this.guard.preAuth(l.name, session, attempt);
    if (!pre.ok) return cb(pre.error);
    let tenant: string | undefined;
    let ok: boolean;
    if (attempt.peer) {
      ok = secretEquals(peer!.password, auth.password ?? '');
    } else {
      const acct = username ? this.d.cfg.accounts.get(username) : undefined;
      // compare even for unknown users, so timing does not tell which usernames exist
      ok =
        secretEquals(acct ? acct.password : Buffer.from('\0no-such-account'), auth.password ?? '') && !!acct;
      tenant = acct?.tenant;
    }
    if (ok) {
      if (attempt.peer) session.peer = true;
      else session.tenant = tenant;
      return cb(null, { user: username });
    }
    this.d.metrics.rejected.inc({ listener: l.name, reason: 'auth' });
    const v = this.guard.failedAuth(l.name, session, attempt);
    // failures after the first are answered late (smtp-server reads no further command meanwhile)
    if (v.delayMs > 0) setTimeout(() => cb(v.error), v.delayMs).unref();
    else cb(v.error);
  }

  private onMailFrom(
    l: ListenerConfig,
    address: SMTPServerAddress,
    session: Session,
    cb: (err?: Error | null) => void,
  ): void {
    if (this.closing) return cb(reply.shuttingDown());
    const problem = addressProblem(address.address, { allowNull: true, allowSingleLabel: true });
    if (problem) return this.refuse(l, 'bad_sender', reply.badSender(address.address, problem), cb);
    const user = typeof session.user === 'string' ? session.user : undefined;
    if (session.peer) {
      // a peer relay handing off queued mail: its tenant travels with each message; tenant limits do not apply
      return this.reserve(l, address, session, cb);
    }
    const tenant = this.d.tenancy.dir.tenantForClient(user, session.remoteAddress);
    // A client with no tenant may not relay: it is refused at RCPT (550 5.7.1), as MTAs do.
    session.tenant = tenant;
    if (tenant) {
      const err = this.d.tenancy.checkMail(tenant, address.address, this.d.engine.tenantUsage(tenant));
      if (err) {
        const reason =
          err.code === 'ERR_TENANT_PAUSED'
            ? 'tenant_paused'
            : err.code === 'ERR_SENDER_DOMAIN'
              ? 'sender_domain'
              : 'tenant_quota';
        this.d.log.info(
          {
            event: 'mail.refused',
            listener: l.name,
            tenant,
            from: address.address,
            reason,
            reply: err.message,
          },
          'MAIL FROM refused',
        );
        return this.refuse(l, reason, err, cb);
      }
    }
    // a client with no tenant is refused at RCPT: it never reaches DATA, so it holds no space
    if (!tenant) {
      session.reservation?.release();
      session.reservation = undefined;
      return cb();
    }
    this.reserve(l, address, session, cb);
  }

  /**
   * Holds disk space for the transaction: the declared SIZE, or the size limit when none is declared (a
   * client sending more than it declared grows the reservation while it streams, or gets 452).
   */
  private reserve(
    l: ListenerConfig,
    address: SMTPServerAddress,
    session: Session,
    cb: (err?: Error | null) => void,
  ): void {
    session.reservation?.release();
    session.reservation = undefined;
    const max = this.d.cfg.limits.maxMessageSize;
    const declared = address.args ? Number((address.args as Record<string, string>).SIZE) : NaN;
    const size = (Number.isSafeInteger(declared) && declared >= 0 ? Math.min(declared, max) : max) + OVERHEAD;
    this.d.spool.reserve(size).then(
      (r) => {
        if (session.reservation) session.reservation.release();
        if (session.closed) return r.release(); // the client left while statfs ran
        session.reservation = r;
        cb();
      },
      (e: Error) => {
        this.d.log.info(
          {
            event: 'mail.refused',
            listener: l.name,
            client: session.remoteAddress,
            reason: 'queue_full',
            reply: e.message,
          },
          'MAIL FROM refused: no room in the spool',
        );
        this.refuse(l, 'queue_full', e as SmtpReplyError, cb);
      },
    );
  }

  private onRcptTo(
    l: ListenerConfig,
    address: SMTPServerAddress,
    session: Session,
    cb: (err?: Error | null) => void,
  ): void {
    const tenant = session.tenant;
    if (session.peer) {
      const problem = addressProblem(address.address);
      if (problem) return this.refuse(l, 'bad_recipient', reply.badAddress(address.address, problem), cb);
      return cb();
    }
    if (!tenant) {
      this.d.log.warn(
        { event: 'relay.denied', listener: l.name, client: session.remoteAddress, to: address.address },
        'relay access denied',
      );
      return this.refuse(l, 'relay_denied', reply.relayDenied(address.address), cb);
    }
    const problem = addressProblem(address.address);
    if (problem) return this.refuse(l, 'bad_recipient', reply.badAddress(address.address, problem), cb);
    if (session.envelope.rcptTo.length >= this.d.cfg.limits.maxRecipients) {
      return this.refuse(
        l,
        'too_many_recipients',
        reply.tooManyRecipients(this.d.cfg.limits.maxRecipients),
        cb,
      );
    }
    this.d.tenancy.checkRcpt(tenant, address.address).then(
      ({ err, reason, fallback }) => {
        if (fallback) this.d.metrics.rateLimitStoreFallbacks.inc({ reason: fallback });
        if (err) {
          if (reason === 'rate_limited') this.d.metrics.rateLimited.inc({ tenant });
          this.d.events?.emit(rcptRefusedEvent(tenant, address.address, reason!, err, this.d.now()));
          this.d.log.info(
            {
              event: 'rcpt.refused',
              listener: l.name,
              tenant,
              to: address.address,
              reason,
              reply: err.message,
            },
            'RCPT TO refused',
          );
          return this.refuse(l, reason!, err, cb);
        }
        cb();
      },
      (e: unknown) => cb(e as Error),
    );
  }

  private onData(
    l: ListenerConfig,
    stream: SMTPServerDataStream,
    session: Session,
    cb: (err?: Error | null, message?: string) => void,
  ): void {
    this.openTransactions++;
    let done = false;
    const finish = (err: Error | null, msg?: string) => {
      if (done) return;
      done = true;
      this.openTransactions--;
      cb(err, msg);
    };
    acceptMessage(this.d, l, stream, session).then(
      (text) => finish(null, text),
      (e: Error) => {
        if (!(e instanceof SmtpReplyError) || e.responseCode === 451) {
          this.d.log.error(
            {
              event: 'accept.error',
              listener: l.name,
              client: session.remoteAddress,
              err: e.message,
              cause: (e.cause as Error | undefined)?.message,
            },
            'could not queue message',
          );
        }
        if (e instanceof SmtpReplyError) {
          const reason =
            e.code === 'ERR_TOO_BIG'
              ? 'too_big'
              : e.code === 'ERR_LOOP'
                ? 'loop'
                : e.code === 'ERR_SPOOL_FULL'
                  ? 'queue_full'
                  : e.code === 'ERR_TENANT_QUOTA'
                    ? 'tenant_quota'
                    : e.responseCode === 451
                      ? 'spool_error'
                      : e.code === 'ERR_HEADER_LINE_TOO_LONG'
                        ? 'header_line_too_long'
                        : e.code === 'ERR_HEADER_TOO_BIG'
                          ? 'header_too_big'
                          : 'refused';
          this.d.metrics.rejected.inc({ listener: l.name, reason });
        }
        finish(
          e instanceof SmtpReplyError
            ? e
            : new SmtpReplyError('ERR_LOCAL', 451, '4.3.0', 'Local error in processing, try again later'),
        );
      },
    );
  }
}
