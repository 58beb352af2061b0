/**
 * The shapes of the relay's admin API (relay/src/admin.ts, queue-admin.ts and the tenancy routes in
 * relay.ts) that the operator uses (operator/src/relay-admin.ts), part of the relay contract. A response
 * may carry more fields than these; the ones here are what a client may rely on.
 */

/** GET /queue?limit=N */
export interface QueueSummary {
  depth: number;
  byTenant: Record<string, number>;
  /** True while the relay still indexes its spool after a start: depth counts only what it found so far. */
  recovering?: boolean;
}
/** One tenant in GET /tenants, GET /tenants/:name and the answer of POST /tenants/:name/pause|resume. */
export interface TenantState {
  name: string;
  state: 'active' | 'warning' | 'paused';
  rate: number;
  attempted: number;
  hard: number;
  /** Complaints over delivered recipients in the complaint window (relays before ADR 018 do not send it). */
  complaintRate?: number;
  delivered?: number;
  complaints?: number;
  reason?: string;
  by?: string;
  pausedUntil?: number;
}
/** GET /tenants */
export interface TenantsResponse {
  tenants: TenantState[];
}
/** POST /tenants/:name/pause */
export interface PauseRequest {
  reason: string;
  /** `guard`: the operator's fleet-wide complaint-rate judgement (ADR 018), shared like a relay's own. */
  source?: 'admin' | 'fleet' | 'guard';
  /** Epoch milliseconds (or an ISO 8601 time). */
  until?: number | string;
}
/** GET /config: which config the relay runs. */
export interface ConfigResponse {
  hash: string;
  /** fleet.revision of the config (the operator's rendering), or null. */
  revision: string | null;
}
/** GET /drain and the answer of POST /drain. */
export interface DrainStatus {
  draining: boolean;
  queued: number;
  done: boolean;
  /** True while the relay still indexes its spool after a start (relays before 0.2 do not send it). */
  recovering?: boolean;
  /**
   * True while delivery events wait in the outbox: for a webhook endpoint, or during a drain with peers
   * until a peer took them (ADR 019). `done` waits for them.
   */
  eventsPending?: boolean;
  /** Delivery events handed to peers by this process during the drain (older relays do not send it). */
  eventsHandedOff?: number;
}
/** POST /drain */
export interface DrainRequest {
  peers: { host: string; port: number; tls?: 'none' | 'opportunistic' | 'required' | 'implicit' }[];
}
/** One limit of a tenant in GET /ratelimits. */
export interface RateLimitUse {
  unit: string;
  limit: number;
  used: number;
  windowStart: number;
  resetsAt: number;
}
/** GET /ratelimits */
export interface RateLimitsResponse {
  share: number;
  /** `fleet`: the counts are the fleet's, from the shared store; `replica`: this relay's own (its share). */
  scope: 'fleet' | 'replica';
  /** The shared store, when the relay has one, and whether it answers. */
  store?: { type: 'redis'; up: boolean };
  tenants: Record<string, RateLimitUse[]>;
}
/** POST /ratelimits/:tenant */
export interface AddRateUseRequest {
  unit: 'h' | 'd';
  used: number;
}
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
/** GET /queue/suspensions */
export interface SuspensionsResponse {
  suspensions: QueueSuspension[];
}
/** POST /queue/suspend */
export interface SuspendRequest extends QueueSelector {
  reason?: string;
  source?: 'admin' | 'fleet';
}
export interface SuspendResponse {
  suspension: QueueSuspension;
  held: number;
}
/** POST /queue/resume */
export interface ResumeRequest extends QueueSelector {
  source?: 'admin' | 'fleet';
}
export interface ResumeResponse {
  resumed: boolean;
  released: number;
}
/** POST /queue/purge */
export interface PurgeRequest extends QueueSelector {
  dsn: boolean;
}
export interface PurgeResult {
  purged: number;
  dsn: number;
  busy: number;
}
/** One entry of GET /suppressions/changes. */
export interface SuppressionChange {
  seq: number;
  op: 'add' | 'remove';
  tenant: string;
  address: string;
  source?: string;
  entry?: { reason: string; source: string; expiresAt: number };
}
/** GET /suppressions/changes?since=N */
export interface SuppressionChangesResponse {
  changes: SuppressionChange[];
  lastSeq: number;
  /** The relay's log does not reach back to `since`: read the whole list again. */
  reset?: boolean;
}
/** POST /suppressions */
export interface AddSuppressionRequest {
  tenant: string;
  address: string;
  reason: string;
  /** `complaint`: also counts against the tenant's complaint rate (ADR 018). */
  source?: 'admin' | 'fleet' | 'complaint';
}
/** POST /tenants/:name/complaints (ADR 018): answered 201 with the tenant's TenantState. */
export interface ComplaintRequest {
  recipient: string;
  reason?: string;
}

// --- bulk-sender lint (relay/src/lint/, ADR 014) ---
/** One rule a tenant broke in the window of GET /lint. */
export interface LintRuleSummary {
  /** dkim-alignment, spf, one-click-unsubscribe, message-id or date. */
  rule: string;
  /** Messages that broke it in the window (accepted under `report`, refused under `enforce`). */
  count: number;
  /** When the latest one did (ISO 8601). */
  lastSeen: string;
  /** The latest one: its queue id on this relay and its Message-ID (when it had one). */
  sample: { queueId: string; messageId?: string };
}
/** GET /lint: per tenant, the rules broken in the last `windowSeconds` (tenants without any are absent). */
export interface LintSummaryResponse {
  windowSeconds: number;
  tenants: Record<string, LintRuleSummary[]>;
}

// ---- DNS identity checks (POST /dns/checks, relay/src/identity/) ----

/** Forward-confirmed reverse DNS of a sending address, and whether its EHLO name is the confirmed name. */
export type FcrdnsResult = 'Verified' | 'PtrMissing' | 'ForwardMismatch' | 'EhloMismatch' | 'LookupFailed';
/** Whether DNS serves a DKIM key record. */
export type DkimTxtResult = 'Published' | 'Missing' | 'Mismatch' | 'LookupFailed';
/** At most this many addresses, and DKIM records, per POST /dns/checks. */
export const DNS_CHECKS_MAX_FCRDNS = 512;
export const DNS_CHECKS_MAX_DKIM = 256;
/** Largest POST /dns/checks body. */
export const DNS_CHECKS_MAX_BODY = 256 * 1024;
/** POST /dns/checks: lookups through the relay's resolvers (dns.servers). */
export interface DnsChecksRequest {
  fcrdns?: { ip: string; ehlo: string }[];
  /** `record`: the TXT record the key needs (`v=DKIM1; k=...; p=...`). */
  dkim?: { domain: string; selector: string; record: string }[];
}
export interface FcrdnsCheck {
  ip: string;
  ehlo: string;
  result: FcrdnsResult;
  /** PTR names of the address (lower-case, at most 10). */
  ptr: string[];
  message: string;
}
export interface DkimTxtCheck {
  domain: string;
  selector: string;
  /** `<selector>._domainkey.<domain>` */
  name: string;
  result: DkimTxtResult;
  message: string;
}
export interface DnsChecksResponse {
  fcrdns: FcrdnsCheck[];
  dkim: DkimTxtCheck[];
}

// --- the feedback loop (docs/feedback.md) ---
/** One report kept by the feedback listener because it matched nothing. */
export interface UnmatchedReportView {
  at: string;
  /** The address the listener took it for (a return path or a feedback address). */
  rcpt: string;
  tenant?: string;
  reason: string;
  /** dsn, arf or unknown. */
  kind: string;
  /** Bytes received. */
  size: number;
  /** The first 64 KiB, byte for byte (latin1). */
  text: string;
}
/** GET /feedback/unmatched: newest first, at most feedback.unmatchedKeep. */
export interface FeedbackUnmatchedResponse {
  /** Newest first: at most `?limit=` (default 100, at most 1000) and about 8 MiB of JSON. */
  reports: UnmatchedReportView[];
  /** More reports are kept than this answer holds. */
  truncated?: true;
}
/** A message in the sent-message index (docs/adr/020-sent-message-index.md). */
export interface SentMessageView {
  /** The normalized Message-ID (between < and >, lower case). */
  messageId: string;
  tenant: string;
  queueId: string;
  /** The first 100 envelope recipients, lower case. */
  recipients: string[];
  /** Recipients in all. */
  count: number;
  /** The UTC day it was accepted, yyyymmdd. */
  day: string;
}
/**
 * GET /feedback/sent?messageId=<id>[&tenant=<name>]: this relay's own index only (never its peers). A
 * message of `tenant` is preferred; `match` is null when none was found (`truncated`: the read budget was
 * spent first). 400 for a missing or unusable Message-ID, 503 when too many lookups wait.
 */
export interface FeedbackSentResponse {
  match: SentMessageView | null;
  truncated?: boolean;
}
/** GET /events: the delivery events' outbox and each webhook endpoint (docs/events.md). */
export interface EventsResponse {
  outboxBytes: number;
  segments: number;
  /** Events emitted and not yet written. */
  buffered: number;
  /** The webhook loops (empty while a drain hands the events to peers). */
  endpoints: EventsEndpointView[];
  /**
   * While a drain hands the events to peers (ADR 019): events a peer stored, chunks in a row no peer took,
   * and why the last one failed.
   */
  handoff?: { sent: number; failures: number; lastError?: string };
}
export interface EventsEndpointView {
  /** `<tenant>/<index>`, as in the metrics' `endpoint` label. */
  endpoint: string;
  tenant: string;
  /** The last read found nothing left to send. */
  caughtUp: boolean;
  /** Where the endpoint reads next in the outbox (segment and byte offset). */
  cursor: { seq: number; offset: number };
  /** Failed requests in a row for the batch in hand (0: the last one succeeded). */
  failures: number;
  lastFailure?: { reason: string; at: string };
}
