/**
 * Leader election on a coordination.k8s.io/v1 Lease, after client-go's leaderelection package:
 *
 * - a candidate reads the Lease every retryPeriod (× up to 1.2, jittered) and takes it when it is
 *   missing (create), free (no holderIdentity), expired (renewTime + leaseDurationSeconds < now) or
 *   already its own;
 * - the leader renews every retryPeriod with a bare update (no read: the Lease it last wrote carries
 *   the resourceVersion precondition); a conflict or error falls back to read-then-update;
 * - a leader that has not renewed for renewDeadline stops leading (onStoppedLeading) and becomes a
 *   candidate again; so does one that finds the Lease held by someone else;
 * - every write carries a resourceVersion precondition, so of two candidates racing for the Lease
 *   only one write succeeds; a 409 re-reads;
 * - leaseTransitions counts holder changes; acquireTime/renewTime are MicroTime
 *   (`2026-01-02T03:04:05.123000Z`; the clock gives milliseconds);
 * - `release()` (for SIGTERM) stops leading, then clears holderIdentity (leaseDurationSeconds 1, as
 *   client-go does) so another replica takes over on its next retry instead of after expiry.
 *
 * Lease expiry is judged from the Lease's renewTime against this process's clock (`now`), so clocks
 * must agree to within a fraction of leaseDurationSeconds (client-go instead times how long it has
 * observed the record unchanged, which tolerates skew but delays a takeover after a restart).
 */
import {
  CoordinationV1Api,
  Observable,
  V1MicroTime,
  type ConfigurationOptions,
  type ObservableMiddleware,
  type KubeConfig,
  type RequestContext,
  type ResponseContext,
  type V1Lease,
} from '@kubernetes/client-node';
import { errorField, silentLogger, type RuntimeLogger } from './log.js';

export interface LeaderElectionOptions {
  kc: KubeConfig;
  namespace: string;
  /** The Lease's name. */
  name: string;
  /** This replica (e.g. the pod name); unique among the candidates. */
  identity: string;
  /** How long a Lease stays valid after its renewTime (default 15; written to the Lease). */
  leaseDurationSeconds?: number;
  /** A leader that could not renew for this long stops leading (default 10; < leaseDurationSeconds). */
  renewDeadlineSeconds?: number;
  /** Between attempts to acquire or renew (default 2; × 1.2 < renewDeadlineSeconds). */
  retryPeriodSeconds?: number;
  onStartedLeading: () => void;
  onStoppedLeading: () => void;
  log?: RuntimeLogger;
  /** The wall clock for renewTime/acquireTime and expiry (default `new Date()`). */
  now?: () => Date;
}

export interface LeaderElection {
  isLeader(): boolean;
  /** Stops, and gives up the Lease (clears holderIdentity) if this replica holds it. */
  release(): Promise<void>;
  /** Stops without touching the Lease: another replica takes over once it expires. */
  stop(): Promise<void>;
}

const JITTER = 1.2;

function httpCode(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

/**
 * Per-call options that abort a request after `ms`: client-node 1.4.0's generated calls have no
 * timeout of their own (a hung request would stall the election loop), but a middleware can set the
 * request's AbortSignal. The object-parameter API (`makeApiClient`) runs Observable middleware
 * (`ObservableMiddleware`; the type exported as `Middleware` is the Promise kind, which it rejects).
 */
function timeoutOptions(ms: number): ConfigurationOptions {
  const middleware: ObservableMiddleware = {
    pre: (ctx: RequestContext) => {
      ctx.setSignal(AbortSignal.timeout(ms));
      return new Observable(Promise.resolve(ctx));
    },
    post: (ctx: ResponseContext) => new Observable(Promise.resolve(ctx)),
  };
  return { middleware: [middleware], middlewareMergeStrategy: 'append' };
}

/** A MicroTime value: client-node serialises V1MicroTime with six fractional digits. */
function microTime(d: Date): V1MicroTime {
  return new V1MicroTime(d.getTime());
}

/** renewTime as read back: client-node 1.4.0 leaves MicroTime fields as strings when deserialising. */
function timeOf(v: unknown): number | undefined {
  if (v instanceof Date) return v.getTime();
  if (typeof v !== 'string' || !v) return undefined;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : t;
}

class Elector implements LeaderElection {
  private readonly api: CoordinationV1Api;
  private readonly log: RuntimeLogger;
  private readonly now: () => Date;
  private readonly leaseDuration: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;
  private leading = false;
  private stopped = false;
  /** The Lease as last written by this replica (the leader's renewals start from it). */
  private held?: V1Lease;
  private tickTimer?: NodeJS.Timeout;
  private deadlineTimer?: NodeJS.Timeout;
  private inFlight?: Promise<void>;
  private readonly callOptions: ConfigurationOptions;

  constructor(private readonly opts: LeaderElectionOptions) {
    this.api = opts.kc.makeApiClient(CoordinationV1Api);
    this.log = opts.log ?? silentLogger;
    this.now = opts.now ?? (() => new Date());
    this.leaseDuration = opts.leaseDurationSeconds ?? 15;
    const renewDeadline = opts.renewDeadlineSeconds ?? 10;
    const retryPeriod = opts.retryPeriodSeconds ?? 2;
    if (!(this.leaseDuration > renewDeadline))
      throw new Error('leaseDurationSeconds must be greater than renewDeadlineSeconds');
    if (!(renewDeadline > JITTER * retryPeriod))
      throw new Error(`renewDeadlineSeconds must be greater than ${JITTER} × retryPeriodSeconds`);
    if (!(retryPeriod > 0)) throw new Error('retryPeriodSeconds must be positive');
    if (!opts.identity) throw new Error('identity must not be empty');
    this.renewDeadlineMs = renewDeadline * 1000;
    this.retryPeriodMs = retryPeriod * 1000;
    this.callOptions = timeoutOptions(Math.max(this.retryPeriodMs, this.renewDeadlineMs / 2));
    this.schedule(0);
  }

  isLeader(): boolean {
    return this.leading;
  }

  async stop(): Promise<void> {
    await this.halt();
    if (this.leading) this.lose('stopped');
  }

  async release(): Promise<void> {
    await this.halt();
    if (this.leading) this.lose('releasing the lease');
    await this.giveUp();
  }

  /** Stops the loop and waits for an attempt in flight. */
  private async halt(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.tickTimer);
    clearTimeout(this.deadlineTimer);
    await this.inFlight;
  }

  private get fields() {
    return { lease: `${this.opts.namespace}/${this.opts.name}`, identity: this.opts.identity };
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.tickTimer = setTimeout(() => {
      this.inFlight = this.tick().finally(() => (this.inFlight = undefined));
    }, ms);
  }

  private async tick(): Promise<void> {
    try {
      await this.tryAcquireOrRenew();
    } catch (err) {
      this.log.warn({ ...this.fields, err: errorField(err) }, 'leader election: lease request failed');
    }
    if (this.stopped) return;
    this.schedule(
      this.leading ? this.retryPeriodMs : this.retryPeriodMs * (1 + Math.random() * (JITTER - 1)),
    );
  }

  private async tryAcquireOrRenew(): Promise<void> {
    const attemptStart = performance.now();
    if (this.leading && this.held) {
      try {
        const lease = await this.api.replaceNamespacedLease(
          {
            name: this.opts.name,
            namespace: this.opts.namespace,
            body: this.renewed(this.held),
          },
          this.callOptions,
        );
        this.succeeded(lease, attemptStart);
        return;
      } catch (err) {
        this.held = undefined;
        if (this.stopped) return;
        this.log.debug(
          { ...this.fields, err: errorField(err) },
          'leader election: renewal failed; re-reading',
        );
      }
    }
    // Read, then write with the read's resourceVersion; a conflict means someone else wrote in
    // between: read again (once), and decide anew.
    for (let round = 0; round < 2 && !this.stopped; round++) {
      const current = await this.read();
      if (this.stopped) return;
      try {
        if (!current) {
          const lease = await this.api.createNamespacedLease(
            {
              namespace: this.opts.namespace,
              body: this.fresh(0),
            },
            this.callOptions,
          );
          this.succeeded(lease, attemptStart);
          return;
        }
        const spec = current.spec ?? {};
        const holder = spec.holderIdentity ?? '';
        if (holder && holder !== this.opts.identity && !this.expired(current)) {
          if (this.leading) this.lose(`the lease is held by ${holder}`);
          return;
        }
        const next: V1Lease =
          holder === this.opts.identity
            ? this.renewed(current)
            : {
                ...this.fresh((spec.leaseTransitions ?? 0) + 1),
                metadata: { ...current.metadata, name: this.opts.name, namespace: this.opts.namespace },
              };
        const lease = await this.api.replaceNamespacedLease(
          {
            name: this.opts.name,
            namespace: this.opts.namespace,
            body: next,
          },
          this.callOptions,
        );
        if (holder !== this.opts.identity)
          this.log.info(
            { ...this.fields, previous: holder || undefined },
            'leader election: acquired the lease',
          );
        this.succeeded(lease, attemptStart);
        return;
      } catch (err) {
        if (httpCode(err) !== 409) throw err;
        this.log.debug({ ...this.fields }, 'leader election: conflict; re-reading the lease');
      }
    }
  }

  private async read(): Promise<V1Lease | undefined> {
    try {
      return await this.api.readNamespacedLease(
        { name: this.opts.name, namespace: this.opts.namespace },
        this.callOptions,
      );
    } catch (err) {
      if (httpCode(err) === 404) return undefined;
      throw err;
    }
  }

  private expired(lease: V1Lease): boolean {
    const renewed = timeOf(lease.spec?.renewTime);
    if (renewed === undefined) return true;
    const duration = lease.spec?.leaseDurationSeconds ?? this.leaseDuration;
    return renewed + duration * 1000 < this.now().getTime();
  }

  /** A Lease taken over by this replica (metadata to be filled in by the caller for updates). */
  private fresh(transitions: number): V1Lease {
    const now = microTime(this.now());
    return {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: this.opts.name, namespace: this.opts.namespace },
      spec: {
        holderIdentity: this.opts.identity,
        leaseDurationSeconds: this.leaseDuration,
        acquireTime: now,
        renewTime: now,
        leaseTransitions: transitions,
      },
    };
  }

  /** The Lease renewed: our own, renewTime now (acquireTime, transitions and resourceVersion kept). */
  private renewed(lease: V1Lease): V1Lease {
    return {
      ...lease,
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      spec: {
        ...lease.spec,
        holderIdentity: this.opts.identity,
        leaseDurationSeconds: this.leaseDuration,
        renewTime: microTime(this.now()),
      },
    };
  }

  private succeeded(lease: V1Lease, attemptStart: number): void {
    if (this.stopped) {
      // stop()/release() came while this write was in flight: it may have (re)taken the lease.
      this.held = lease;
      return;
    }
    this.held = lease;
    clearTimeout(this.deadlineTimer);
    const left = this.renewDeadlineMs - (performance.now() - attemptStart);
    if (left <= 0) {
      // The write took longer than renewDeadline: too late to count on (the next attempt renews).
      this.lose('the lease write took longer than renewDeadline');
      return;
    }
    this.deadlineTimer = setTimeout(() => this.lose('could not renew the lease within renewDeadline'), left);
    if (this.leading) return;
    this.leading = true;
    this.log.info({ ...this.fields }, 'leader election: started leading');
    try {
      this.opts.onStartedLeading();
    } catch (err) {
      this.log.error({ ...this.fields, err: errorField(err) }, 'leader election: onStartedLeading threw');
    }
  }

  private lose(reason: string): void {
    clearTimeout(this.deadlineTimer);
    if (!this.leading) return;
    this.leading = false;
    this.held = undefined;
    this.log.warn({ ...this.fields, reason }, 'leader election: stopped leading');
    try {
      this.opts.onStoppedLeading();
    } catch (err) {
      this.log.error({ ...this.fields, err: errorField(err) }, 'leader election: onStoppedLeading threw');
    }
  }

  /** Clears holderIdentity if this replica holds the Lease (precondition: the resourceVersion read). */
  private async giveUp(): Promise<void> {
    let lease = this.held;
    for (let round = 0; round < 3; round++) {
      try {
        lease ??= await this.read();
        if (!lease || lease.spec?.holderIdentity !== this.opts.identity) return;
        const now = microTime(this.now());
        await this.api.replaceNamespacedLease(
          {
            name: this.opts.name,
            namespace: this.opts.namespace,
            body: {
              ...lease,
              apiVersion: 'coordination.k8s.io/v1',
              kind: 'Lease',
              spec: {
                ...lease.spec,
                holderIdentity: '',
                leaseDurationSeconds: 1,
                acquireTime: now,
                renewTime: now,
              },
            },
          },
          this.callOptions,
        );
        this.held = undefined;
        this.log.info({ ...this.fields }, 'leader election: released the lease');
        return;
      } catch (err) {
        lease = undefined;
        if (httpCode(err) === 409) continue;
        this.log.warn(
          { ...this.fields, err: errorField(err) },
          'leader election: could not release the lease; it will expire',
        );
        return;
      }
    }
  }
}

/** Campaigns for the Lease `namespace/name` until stopped or released. */
export function startLeaderElection(opts: LeaderElectionOptions): LeaderElection {
  return new Elector(opts);
}
