/** The resolved relay config (what resolveRelayConfig returns and the relay runs on), part of the relay contract. */
import type { KeyObject } from 'node:crypto';
import type ipaddr from 'ipaddr.js';
import type { EventType } from './events.js';

export type TlsMode = 'none' | 'starttls' | 'implicit';
export type OutboundTls = 'opportunistic' | 'required' | 'verify' | 'none' | 'implicit';
export interface HostRoute {
  host: string;
  port: number;
  tls: OutboundTls;
  credentials?: { username: string; password: string };
}
export interface ListenerConfig {
  name: string;
  address: string;
  port: number;
  tls: TlsMode;
  auth: 'required' | 'optional';
  /** The client limits of this listener (its overrides over the top-level ones). */
  limits: ListenerLimits;
}
export interface ListenerLimits {
  maxConnectionsPerClient: number;
  connectionRatePerClient?: { count: number; perMs: number };
  commandTimeoutMs: number;
  idleTimeoutMs: number;
  minDataRate: number;
}
export interface TenantConfig {
  name: string;
  senderDomains: string[];
  rateLimits: string[];
  burst?: number;
  ipPool?: string;
  retry?: { initialMs: number; factor: number; maxMs: number };
  maxAgeMs?: number;
  quota: { messages?: number; bytes?: number };
  bounceRate: { warn: number; pause: number; windowMs: number; minVolume: number; cooldownMs: number };
  /** The complaint-rate guard (ADR 018): complaints over delivered recipients. */
  complaintRate: { warn: number; pause: number; windowMs: number; minVolume: number; cooldownMs: number };
  suppression: { enabled: boolean; ttlMs: number };
  dkim?: TenantDkim;
  /** A bulk sender: the lint's one-click unsubscribe rule applies (ADR 014). */
  bulk: boolean;
  /** The bulk-sender lint: report (accept and count) or enforce (550 at DATA). */
  lint: { policy: 'report' | 'enforce' };
  /** Return-path tagging (VERP, relay/src/feedback/token.ts): lower case. */
  returnPath?: { domain: string; prefix: string };
  /** Where provider feedback loops send this tenant's ARF reports (lower case). */
  feedbackAddress?: string;
  /** Delivery event webhooks (relay/src/events/); absent or empty: no events for this tenant. */
  webhooks?: TenantWebhook[];
}
export interface TenantWebhook {
  url: string;
  secret: Buffer;
  events: EventType[];
  batchSize: number;
  timeoutMs: number;
  retryForMs: number;
}
export type DkimAlgorithm = 'rsa-sha256' | 'ed25519-sha256';
export interface DkimKey {
  /** The signing domain (d=), lower case, without a trailing dot. */
  domain: string;
  selector: string;
  algorithm: DkimAlgorithm;
  privateKey: KeyObject;
}
/** A tenant's DKIM signing (relay/src/dkim/): its keys, what to do with mail no key matches, x= after t=. */
export interface TenantDkim {
  keys: DkimKey[];
  unmatched: 'send' | 'refuse';
  expiryMs?: number;
}
export interface PoolConfigResolved {
  name: string;
  /** bind: false, an egress gateway maps the pod to the address (PoolAddressConfig.bind). */
  addresses: { ip: string; ehlo: string; perHour?: number; perDay?: number; bind?: boolean }[];
  warmup?: { start: string; dailyCaps: number[] };
}
export const DEFAULT_TENANT = 'default';

export interface RelayConfig {
  hostname: string;
  spoolDir: string;
  listeners: ListenerConfig[];
  tls?: { cert: Buffer; key: Buffer };
  trustedNetworks: [ipaddr.IPv4 | ipaddr.IPv6, number][];
  accounts: Map<string, { password: Buffer; tenant: string }>;
  limits: {
    maxMessageSize: number;
    maxRecipients: number;
    maxConnections: number;
    idleTimeoutMs: number;
    maxReceivedHeaders: number;
    maxHeaderLine: number;
    maxHeaderSize: number;
    greetingDelayMs: number;
    reservedForTrusted: number;
    stress: { threshold: number; commandTimeoutMs: number; idleTimeoutMs: number };
    auth: AuthLimits;
  };
  queue: {
    maxMessages: number;
    minFreeBytes: number;
    retry: { initialMs: number; factor: number; maxMs: number };
    maxAgeMs: number;
    delayWarningAfterMs?: number;
  };
  delivery: {
    concurrency: number;
    perDestinationConcurrency: number;
    connectTimeoutMs: number;
    commandTimeoutMs: number;
    connectionIdleMs: number;
    maxMessagesPerConnection: number;
  };
  routing: {
    default: { type: 'mx' } | { type: 'smarthost'; smarthost: HostRoute };
    domains: (HostRoute & { domain: string })[];
    backups: HostRoute[];
  };
  dns: {
    servers: string[];
    timeoutMs: number;
    allowPrivateTargets: [ipaddr.IPv4 | ipaddr.IPv6, number][];
    mxPort: number;
    /** How often the pool addresses' reverse DNS is checked (identity/monitor.ts). */
    identityCheckIntervalMs: number;
  };
  admin: { address: string; port: number; token?: Buffer };
  tenants: Map<string, TenantConfig>;
  /** The delivery events' outbox and webhook delivery (relay/src/events/). */
  events: { maxBytes: number; flushIntervalMs: number; maxBuffered: number; concurrency: number };
  /** Clients in these CIDRs send as the tenant named (most specific first); the global trustedNetworks map to 'default'. */
  tenantNetworks: { net: [ipaddr.IPv4 | ipaddr.IPv6, number]; tenant: string }[];
  ipPools: PoolConfigResolved[];
  shaping: {
    defaults: { maxConnections: number; messagesPerConnection: number; messagesPerSecond?: number };
    rules: {
      domain?: string;
      mx?: string;
      maxConnections?: number;
      messagesPerConnection?: number;
      messagesPerSecond?: number;
    }[];
    backoff: { initialMs: number; maxMs: number };
  };
  fleet: {
    rateLimitShare: number;
    revision?: string;
    rateLimitStore?: {
      type: 'redis';
      host: string;
      port: number;
      username?: string;
      password?: string;
      keyPrefix: string;
      timeoutMs: number;
      maxInFlight: number;
    };
  };
  peer?: { username: string; password: Buffer };
  /** Outbound TLS policy and MTA-STS (absent: opportunistic, MTA-STS with its defaults). */
  outboundTls?: OutboundTlsConfig;
  /** The feedback loop (relay/src/feedback/): the token key and the bounce and feedback listener. */
  feedback: FeedbackConfig;
  /** sha256 of the config file and every secret it names: which config this relay runs. */
  hash: string;
  /** Folders whose changes may change the config (secrets, TLS): watched for hot reload. */
  watchPaths: string[];
  gracePeriodMs: number;
  logLevel: string;
}

/** The AUTH abuse limits (relay/src/abuse/auth-throttle.ts enforces them). */
export interface AuthLimits {
  /** The Nth failed AUTH on one connection closes it. */
  failuresPerConnection: number;
  /** Delay before answering the 2nd failure on a connection; doubles for each further one. */
  failureDelayMs: number;
  maxFailureDelayMs: number;
  /** Failures per client address within `windowMs` before it is locked; 0 turns the lock off. */
  clientFailures: number;
  /** Failures per account name (from any untrusted address) within `windowMs`; 0 turns it off. */
  accountFailures: number;
  windowMs: number;
  lockoutMs: number;
}

// --- outbound TLS policy and MTA-STS (docs/adr/013-outbound-tls-policy.md) ---
/** A TLS level for delivery by MX (Postfix may / encrypt / verify). */
export type OutboundTlsLevel = 'opportunistic' | 'required' | 'verify';
export interface OutboundTlsConfig {
  level: OutboundTlsLevel;
  /** PEM CA certificates trusted besides the system CAs (outboundTls.caFile). */
  ca?: Buffer;
  /** `example.com` or `.example.com` (subdomains), lower case. */
  policies: { domain: string; level: OutboundTlsLevel }[];
  mtaSts: {
    enabled: boolean;
    fetchTimeoutMs: number;
    recheckMs: number;
    cacheMaxEntries: number;
    port: number;
  };
}
// --- end outbound TLS policy ---

// --- the feedback loop (docs/adr/016-feedback-loop.md) ---
export interface FeedbackConfig {
  /** The return-path token key (feedback.tokenKeyFile); required when a tenant has returnPath. */
  key?: Buffer;
  tokenTtlDays: number;
  listener?: {
    address: string;
    port: number;
    maxMessageSize: number;
    timeoutMs: number;
    maxConnections: number;
  };
  unmatchedKeep: number;
  /** The fleet's other relays, asked for a sent message this relay did not accept (ADR 020). */
  peerLookup?: { host: string; port: number; timeoutMs: number; maxPeers: number };
}
// --- end feedback loop ---
