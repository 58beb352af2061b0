/** Types shared by the parts of the delivery engine (relay/src/delivery/). */
import type { Logger } from 'pino';
import type { Readable } from 'node:stream';
import type { RelayConfig } from '../config.js';
import type { Envelope, SpooledMessage, SpoolStore } from '../spool/types.js';
import type { Route } from '../router.js';
import type { MxResolver } from '../dns.js';
import type { RelayMetrics } from '../metrics.js';
import type { TenantRuntime } from '../tenant-runtime.js';
import type { OutboundTlsRuntime } from './tls-runtime.js';
import type { EventSink } from '../events/sink.js';

/** What one attempt made of one recipient. */
export interface Outcome {
  /** Overrides the retry schedule (drain: try the peers again soon). */
  retryAt?: number;
  /** Do not try again before this time (pool caps, destination back-off). */
  notBefore?: number;
  result: 'delivered' | 'deferred' | 'bounced';
  reply: string;
  status: string;
  remoteMta?: string;
  route: Route['kind'] | 'backup' | 'handoff';
  /** The pool address the attempt left from (delivery events). */
  egress?: string;
}

/** A message loaded for an attempt (or just accepted): envelope, state and, when small and at hand, its body. */
export interface ActiveMessage extends SpooledMessage {
  body?: Buffer;
}

/** Recipients of one message that travel together to one route. */
export interface Job {
  /** Set when the relay drains: the recipients go to a peer relay, metadata and all. */
  handoff?: boolean;
  msg: ActiveMessage;
  route: Route;
  rcpts: number[];
  resolve: (o: Map<number, Outcome>) => void;
}

/** The body of a job, opened once per transaction (a stream can be read once). */
export type BodySource = () => Promise<Buffer | Readable>;

export interface EngineDeps {
  cfg: RelayConfig;
  spool: SpoolStore;
  resolver: MxResolver;
  metrics: RelayMetrics;
  tenancy: TenantRuntime;
  log: Logger;
  now: () => number;
  /** Outbound TLS policy and MTA-STS (delivery by MX is opportunistic without it). */
  outboundTls?: OutboundTlsRuntime;
  /** Where delivery events go (relay/src/events/); absent: none. */
  events?: EventSink;
}

export const HANDOFF_HEADER = 'X-Cartero-Handoff';

/** What travels with a message handed to a peer relay (base64url JSON in the X-Cartero-Handoff header). */
export interface HandoffMeta {
  v: 1;
  tenant: string;
  arrivedAt: number;
  origin: Envelope['origin'];
  dsn: Envelope['dsn'];
  delayWarned: boolean;
  attempts: number;
  rcpts: { address: string; notify?: string[]; orcpt?: string; attempts: number; lastReply?: string }[];
  /** Queue id on the relay that handed it off. */
  from: string;
}

export function domainOf(addr: string): string {
  return addr.slice(addr.lastIndexOf('@') + 1).toLowerCase();
}
