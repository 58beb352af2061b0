/** A small client for a relay pod's admin API (relay/src/admin.ts), used for status, drain and fleet sync. */

export interface QueueSummary {
  depth: number;
  byTenant: Record<string, number>;
  /** True while the relay still indexes its spool after a start: depth counts only what it found so far. */
  recovering?: boolean;
}
export interface TenantState {
  name: string;
  state: 'active' | 'warning' | 'paused';
  rate: number;
  attempted: number;
  hard: number;
  reason?: string;
  by?: string;
  pausedUntil?: number;
}
export interface DrainStatus {
  draining: boolean;
  queued: number;
  done: boolean;
  /** True while the relay still indexes its spool after a start (relays before 0.2 do not send it). */
  recovering?: boolean;
}

/** The pod's queue depth, or undefined while it is not known yet (the relay still indexes its spool). */
export function knownDepth(q: QueueSummary): number | undefined {
  return q.recovering ? undefined : q.depth;
}

/** A drain is finished only when the queue is empty and known to be (not while the spool is indexed). */
export function drainFinished(d: DrainStatus): boolean {
  return d.done && !d.recovering;
}

/** How a pending drain reads in status messages. */
export function drainPending(name: string, d: DrainStatus): string {
  return d.recovering
    ? `${name} (indexing its spool, ${d.queued} found so far)`
    : `${name} (${d.queued} queued)`;
}
export interface RateLimitUse {
  unit: string;
  limit: number;
  used: number;
  windowStart: number;
  resetsAt: number;
}

/** Bulk queue operations walk a relay's whole queue: they get longer than the status reads. */
const BULK_TIMEOUT_MS = 60_000;

export interface QueueSelector {
  tenant?: string;
  domain?: string;
}
export interface QueueSuspension extends QueueSelector {
  reason: string;
  source: 'admin' | 'fleet';
  since: string;
  /** Messages held, when the relay reports it (not part of the contract yet). */
  held?: number;
}
export interface PurgeResult {
  purged: number;
  dsn: number;
  busy: number;
}

export class RelayAdmin {
  constructor(
    readonly base: string,
    private readonly token: string,
    private readonly timeoutMs = 3000,
  ) {}

  async call<T>(method: string, path: string, body?: unknown, timeoutMs = this.timeoutMs): Promise<T> {
    const res = await fetch(this.base + path, {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${this.base}${path}: ${res.status} ${text.trim().slice(0, 200)}`);
    return JSON.parse(text) as T;
  }

  queue = () => this.call<QueueSummary>('GET', '/queue?limit=1');
  tenants = async () => (await this.call<{ tenants: TenantState[] }>('GET', '/tenants')).tenants;
  config = () => this.call<{ hash: string; revision: string | null }>('GET', '/config');
  drainStatus = () => this.call<DrainStatus>('GET', '/drain');
  drain = (peers: { host: string; port: number }[]) => this.call<DrainStatus>('POST', '/drain', { peers });
  rateLimits = () =>
    this.call<{ share: number; tenants: Record<string, RateLimitUse[]> }>('GET', '/ratelimits');
  addRateUse = (tenant: string, unit: 'h' | 'd', used: number) =>
    this.call('POST', `/ratelimits/${encodeURIComponent(tenant)}`, { unit, used });
  pause = (tenant: string, reason: string, until?: number) =>
    this.call('POST', `/tenants/${encodeURIComponent(tenant)}/pause`, {
      reason,
      source: 'fleet',
      ...(until ? { until } : {}),
    });
  /** Queue suspensions (held mail) on this relay, made by the operator (`fleet`) or by hand (`admin`). */
  suspensions = async () =>
    (await this.call<{ suspensions: QueueSuspension[] }>('GET', '/queue/suspensions')).suspensions;
  /** Holds queued mail of a tenant, a domain or both; idempotent per tenant, domain and source. */
  suspend = (s: QueueSelector & { reason: string }) =>
    this.call<{ suspension: QueueSuspension; held: number }>(
      'POST',
      '/queue/suspend',
      { ...s, source: 'fleet' },
      BULK_TIMEOUT_MS,
    );
  resume = (s: QueueSelector) =>
    this.call<{ resumed: boolean; released: number }>(
      'POST',
      '/queue/resume',
      { ...s, source: 'fleet' },
      BULK_TIMEOUT_MS,
    );
  /** Deletes queued mail of a tenant, a domain or both, optionally bouncing it to its senders. */
  purge = (s: QueueSelector & { dsn: boolean }) =>
    this.call<PurgeResult>('POST', '/queue/purge', s, BULK_TIMEOUT_MS);
  suppressionChanges = (since: number) =>
    this.call<{ changes: SuppressionChange[]; lastSeq: number; reset?: boolean }>(
      'GET',
      `/suppressions/changes?since=${since}`,
    );
  addSuppression = (tenant: string, address: string, reason: string) =>
    this.call('POST', '/suppressions', { tenant, address, reason, source: 'fleet' });
  removeSuppression = (tenant: string, address: string) =>
    this.call(
      'DELETE',
      `/suppressions/${encodeURIComponent(tenant)}/${encodeURIComponent(address)}?source=fleet`,
    );
}

export interface SuppressionChange {
  seq: number;
  op: 'add' | 'remove';
  tenant: string;
  address: string;
  source?: string;
  entry?: { reason: string; source: string; expiresAt: number };
}
