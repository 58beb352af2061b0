/**
 * What is stored for each queued message, and the interface the delivery engine uses to reach it. The
 * engine sees only `SpoolStore`, so it can be tested without a disk (test/helpers has an in-memory one).
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';

/** One recipient as received: address and its RFC 3461 parameters. */
export interface SpoolRecipient {
  address: string;
  notify?: string[];
  orcpt?: string;
}

/** The immutable envelope, written once with the message. Versioned by `v`. */
export interface Envelope {
  v: 1;
  id: string;
  /** Tenant the message belongs to (from the AUTH account or the trusted network). */
  tenant: string;
  /** IP pool the message must leave from; null = the default (unbound) egress. */
  pool: string | null;
  arrivedAt: number;
  /** Envelope sender; '' is the null sender `<>`. */
  from: string;
  rcpts: SpoolRecipient[];
  dsn: { ret?: 'FULL' | 'HDRS'; envid?: string };
  /** Length of the raw message in bytes, exactly as it will be delivered. */
  size: number;
  eightBit: boolean;
  smtpUtf8: boolean;
  /** What generated this message: client submission, or our own DSN. */
  origin: 'smtp' | 'dsn';
  client: { address: string; helo: string; user?: string; listener: string };
  /**
   * DKIM-Signature fields (each ending in CRLF) made at acceptance, put in front of the stored message when
   * it is sent (relay/src/dkim/). Not counted in `size`. Absent in files written before DKIM (ADR 012).
   */
  dkim?: string;
  /** The message's Message-ID header (delivery events). Absent in files written before it. */
  messageId?: string;
}

export type RcptStatus = 'pending' | 'delivered' | 'bounced' | 'expired';
export interface RcptState {
  status: RcptStatus;
  attempts: number;
  lastAttemptAt?: number;
  /** Last remote reply or local reason, one line. */
  lastReply?: string;
  /** RFC 3463 status of the last outcome. */
  lastStatus?: string;
  remoteMta?: string;
}

/** The mutable state of a message, rewritten (temp + rename) after each delivery attempt. */
export interface DeliveryState {
  v: 1;
  attempts: number;
  nextAttemptAt: number;
  delayWarned: boolean;
  rcpts: RcptState[];
}

export interface SpooledMessage {
  env: Envelope;
  state: DeliveryState;
  /** Where the raw message starts in its stored form (opaque to everyone but the store). */
  bodyOffset: number;
  /** CRC-32 of the raw message when the store keeps one: a damaged body is never sent. */
  crc32?: number;
}

/** A queue file that could not be read, set aside under `corrupt/` for a human (never delivered). */
export interface Quarantined {
  file: string;
  reason: string;
  /** Where it was moved; undefined when the move failed. */
  movedTo?: string;
}

/** The stored message is not what its envelope says (truncated, resized, unreadable): never sent. */
export class SpoolCorruptError extends Error {
  constructor(
    readonly id: string,
    reason: string,
  ) {
    super(`queue file ${id}: ${reason}`);
    this.name = 'SpoolCorruptError';
  }
}

/** Bodies up to this size are read into memory for delivery; larger ones are streamed from disk. */
export const MAX_BUFFERED_BODY = 256 * 1024;

/**
 * What the index needs of a queued message found at start: the scan sends only this (the envelope and state
 * are read again when the message becomes due).
 */
export interface QueuedEntry {
  id: string;
  nextAt: number;
  arrivedAt: number;
  size: number;
  attempts: number;
  tenant: string;
  /** Distinct domains of the pending recipients. */
  domains: string[];
  /** One of our own DSNs. */
  dsn: boolean;
}

/** The index entry of a message. */
export function entryOf(m: SpooledMessage): QueuedEntry {
  const domains = new Set<string>();
  m.state.rcpts.forEach((r, i) => {
    if (r.status === 'pending') {
      const a = m.env.rcpts[i].address;
      domains.add(a.slice(a.lastIndexOf('@') + 1).toLowerCase());
    }
  });
  return {
    id: m.env.id,
    nextAt: m.state.nextAttemptAt,
    arrivedAt: m.env.arrivedAt,
    size: m.env.size,
    attempts: m.state.attempts,
    tenant: m.env.tenant,
    domains: [...domains],
    dsn: m.env.origin === 'dsn',
  };
}

/**
 * The durable queue as the delivery engine sees it. Every method that changes something resolves only once
 * the change will survive a crash.
 */
export interface SpoolStore {
  /** Messages stored (known so far, while a scan is still running). */
  readonly size: number;
  readonly sizeBytes: number;
  /**
   * Every queued message once, in batches of index entries, for the background index after a start.
   * Damaged files are moved aside and passed to `onCorrupt`; they never stop the scan.
   */
  scan(onCorrupt: (q: Quarantined) => void): AsyncIterable<QueuedEntry[]>;
  /** Envelope and state of one queued message (when it becomes due). Throws SpoolCorruptError. */
  load(id: string): Promise<SpooledMessage>;
  /**
   * The raw message as it will be delivered, checked against `env.size` first: a Buffer up to
   * MAX_BUFFERED_BODY, a stream beyond. Throws SpoolCorruptError when the stored length differs.
   */
  readBody(msg: SpooledMessage): Promise<Buffer | Readable>;
  /** At most `maxBytes` of the raw message from its start (a DSN's returned content). */
  readHead(msg: SpooledMessage, maxBytes: number): Promise<Buffer>;
  /**
   * Stores a message the relay generates (a DSN) or receives whole. `internal` ones are not held to the
   * message count limit. Returns the message's bodyOffset.
   */
  write(env: Envelope, raw: Buffer[], opts?: { internal?: boolean }): Promise<number>;
  /** Durably records delivery state. */
  saveState(id: string, state: DeliveryState): Promise<void>;
  /** Removes a message whose every recipient reached a final state. */
  remove(id: string, size: number): Promise<void>;
  /** Moves a message that must not be delivered to `corrupt/` (it leaves the queue). */
  moveAside(id: string, size: number, reason: string): Promise<Quarantined>;
}

export function initialState(env: Envelope, now: number): DeliveryState {
  return {
    v: 1,
    attempts: 0,
    nextAttemptAt: now,
    delayWarned: false,
    rcpts: env.rcpts.map(() => ({ status: 'pending', attempts: 0 })),
  };
}

/** Queue ids: time-ordered, 20 characters of [0-9A-Z], unique without coordination. */
export function newQueueId(now = Date.now()): string {
  return (
    now.toString(36).padStart(9, '0') +
    randomBytes(8).readBigUInt64BE(0).toString(36).slice(0, 11).padStart(11, '0')
  ).toUpperCase();
}

export const QUEUE_ID_RE = /^[0-9A-Z]{20}$/;
