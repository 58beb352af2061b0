/**
 * A small client for a relay pod's admin API (relay/src/admin.ts), used for status, drain and fleet sync.
 * The requests and responses are the relay contract's (relay/src/contract/admin-api.ts).
 */
import type {
  AddRateUseRequest,
  AddSuppressionRequest,
  ConfigResponse,
  DrainRequest,
  DrainStatus,
  LintSummaryResponse,
  PauseRequest,
  PurgeRequest,
  PurgeResult,
  QueueSelector,
  QueueSummary,
  RateLimitsResponse,
  ResumeRequest,
  ResumeResponse,
  SuppressionChangesResponse,
  SuspendRequest,
  SuspendResponse,
  SuspensionsResponse,
  TenantsResponse,
} from '../../../relay/src/contract/index.js';

export type {
  DrainStatus,
  LintRuleSummary,
  LintSummaryResponse,
  PurgeResult,
  QueueSelector,
  QueueSummary,
  QueueSuspension,
  RateLimitUse,
  SuppressionChange,
  TenantState,
} from '../../../relay/src/contract/index.js';

/** The pod's queue depth, or undefined while it is not known yet (the relay still indexes its spool). */
export function knownDepth(q: QueueSummary): number | undefined {
  return q.recovering ? undefined : q.depth;
}

/**
 * A drain is finished only when the queue is empty and known to be (not while the spool is indexed), and
 * the pod's delivery events have reached their webhook endpoints, or with peers a peer relay (eventsPending;
 * docs/events.md, ADR 019).
 */
export function drainFinished(d: DrainStatus): boolean {
  return d.done && !d.recovering && !d.eventsPending;
}

/** How a pending drain reads in status messages. */
export function drainPending(name: string, d: DrainStatus): string {
  return d.recovering
    ? `${name} (indexing its spool, ${d.queued} found so far)`
    : `${name} (${d.queued} queued${d.eventsPending ? ', delivery events pending' : ''})`;
}

/** Bulk queue operations walk a relay's whole queue: they get longer than the status reads. */
const BULK_TIMEOUT_MS = 60_000;

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
  tenants = async () => (await this.call<TenantsResponse>('GET', '/tenants')).tenants;
  config = () => this.call<ConfigResponse>('GET', '/config');
  drainStatus = () => this.call<DrainStatus>('GET', '/drain');
  /** The bulk-sender lint rules each tenant broke in the last hour (relays before the lint: 404). */
  lint = () => this.call<LintSummaryResponse>('GET', '/lint');
  drain = (peers: { host: string; port: number }[]) =>
    this.call<DrainStatus>('POST', '/drain', { peers } satisfies DrainRequest);
  rateLimits = () => this.call<RateLimitsResponse>('GET', '/ratelimits');
  addRateUse = (tenant: string, unit: 'h' | 'd', used: number) =>
    this.call('POST', `/ratelimits/${encodeURIComponent(tenant)}`, {
      unit,
      used,
    } satisfies AddRateUseRequest);
  pause = (tenant: string, reason: string, until?: number) =>
    this.call('POST', `/tenants/${encodeURIComponent(tenant)}/pause`, {
      reason,
      source: 'fleet',
      ...(until ? { until } : {}),
    } satisfies PauseRequest);
  /** Queue suspensions (held mail) on this relay, made by the operator (`fleet`) or by hand (`admin`). */
  suspensions = async () => (await this.call<SuspensionsResponse>('GET', '/queue/suspensions')).suspensions;
  /** Holds queued mail of a tenant, a domain or both; idempotent per tenant, domain and source. */
  suspend = (s: QueueSelector & { reason: string }) =>
    this.call<SuspendResponse>(
      'POST',
      '/queue/suspend',
      { ...s, source: 'fleet' } satisfies SuspendRequest,
      BULK_TIMEOUT_MS,
    );
  resume = (s: QueueSelector) =>
    this.call<ResumeResponse>(
      'POST',
      '/queue/resume',
      { ...s, source: 'fleet' } satisfies ResumeRequest,
      BULK_TIMEOUT_MS,
    );
  /** Deletes queued mail of a tenant, a domain or both, optionally bouncing it to its senders. */
  purge = (s: QueueSelector & { dsn: boolean }) =>
    this.call<PurgeResult>('POST', '/queue/purge', s satisfies PurgeRequest, BULK_TIMEOUT_MS);
  suppressionChanges = (since: number) =>
    this.call<SuppressionChangesResponse>('GET', `/suppressions/changes?since=${since}`);
  addSuppression = (tenant: string, address: string, reason: string) =>
    this.call('POST', '/suppressions', {
      tenant,
      address,
      reason,
      source: 'fleet',
    } satisfies AddSuppressionRequest);
  removeSuppression = (tenant: string, address: string) =>
    this.call(
      'DELETE',
      `/suppressions/${encodeURIComponent(tenant)}/${encodeURIComponent(address)}?source=fleet`,
    );
}
