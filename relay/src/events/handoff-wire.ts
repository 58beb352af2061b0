/**
 * Delivery events handed to a peer relay during a drain (docs/adr/019-event-handoff.md), the pure parts:
 * the message that carries a chunk of them over SMTP (an `X-Cartero-Events` header field, then the
 * outbox's record lines, record.ts, one per CRLF line), its checks on the receiving side, and the
 * shipper's decisions (where to read from, which events still go, which cursors move, how long to wait).
 */
import type { DeliveryEvent } from '../contract/events.js';
import { decodeRecords, encodeRecord, MAX_RECORD_BYTES } from './record.js';
import { reply } from '../errors.js';
import { before, type Cursor } from './cursor.js';
import { backoffMs, wants, type EndpointFilter } from './policy.js';

export const EVENTS_HEADER = 'X-Cartero-Events';
/**
 * The envelope of an events message: the null sender and a recipient in a reserved domain (RFC 2606), so
 * that a relay that does not know the header never delivers it anywhere.
 */
export const EVENTS_RCPT = 'cartero-events@handoff.invalid';
/** A chunk holds at most this many events and this many bytes of record lines. */
export const CHUNK_MAX_EVENTS = 4000;
export const CHUNK_MAX_BYTES = 2 * 1024 * 1024;
/** The receiving side holds at most this much of an events message (and at most limits.maxMessageSize). */
export const RECEIVE_MAX_BYTES = 8 * 1024 * 1024;
/** The text of the 250 that stores a chunk; a sender takes any other 250 as a peer that does not know events. */
export const STORED_TEXT = 'events stored';
/** The longest wait between two tries of a chunk no peer took. */
export const SHIP_BACKOFF_MAX_MS = 30_000;

/**
 * The bytes of record lines in one chunk: CHUNK_MAX_BYTES, less when the fleet's `limits.maxMessageSize`
 * is smaller (the peer refuses a larger message; CRs and the header section take the 10 % and 1 KiB kept).
 * At least one event goes whatever the bound (readBatch).
 */
export function chunkBytes(maxMessageSize: number): number {
  return Math.max(1, Math.min(CHUNK_MAX_BYTES, Math.floor(maxMessageSize * 0.9) - 1024));
}

/** The whole message for `events`: the header section, then one record per line. */
export function encodeEventsMessage(events: DeliveryEvent[]): Buffer {
  const lines = events.map((e) => {
    const r = encodeRecord(e);
    // the record ends with LF; on the wire every line ends with CRLF
    return Buffer.concat([r.subarray(0, r.length - 1), Buffer.from('\r\n')]);
  });
  return Buffer.concat([Buffer.from(`${EVENTS_HEADER}: 1; count=${events.length}\r\n\r\n`), ...lines]);
}

/** The value of an `X-Cartero-Events` field: version 1 and the number of events that follow. */
export function parseEventsHeader(value: string): { count: number } | undefined {
  const m = /^\s*1\s*;\s*count=([0-9]{1,9})\s*$/.exec(value);
  return m ? { count: Number(m[1]) } : undefined;
}

/**
 * The events of a received body (after the header section): every line must pass its CRC, be at most
 * MAX_RECORD_BYTES long, and their number must be the one the header announced, or the whole chunk is
 * refused (the sender tries again).
 */
export function decodeEventsBody(
  body: Buffer,
  count: number,
): { events: DeliveryEvent[] } | { error: string } {
  // JSON never holds a raw CR or LF, so every CR before an LF is the line ending
  let lf = Buffer.from(body.toString('latin1').replace(/\r\n/g, '\n'), 'latin1');
  if (lf.length && lf[lf.length - 1] !== 0x0a) lf = Buffer.concat([lf, Buffer.from('\n')]);
  const d = decodeRecords(lf);
  if (d.corrupt) return { error: `${d.corrupt} damaged event line(s)` };
  if (d.consumed !== lf.length) return { error: 'torn event line' };
  if (d.records.some((r) => r.end - r.start > MAX_RECORD_BYTES))
    return { error: `an event line longer than ${MAX_RECORD_BYTES} bytes` };
  if (d.records.length !== count)
    return { error: `${d.records.length} events where the header announced ${count}` };
  return { events: d.records.map((r) => r.event) };
}

/** Where the shipper reads from: the lowest cursor of all endpoints (undefined: none). */
export function lowestCursor(cursors: Iterable<Cursor>): Cursor | undefined {
  let low: Cursor | undefined;
  for (const c of cursors) if (!low || before(c, low)) low = c;
  return low;
}

/** The endpoints whose cursor must move to `next` once a chunk up to there is acknowledged. */
export function cursorsToAdvance<K>(cursors: Map<K, Cursor>, next: Cursor): K[] {
  return [...cursors].filter(([, c]) => before(c, next)).map(([k]) => k);
}

export interface ShipEndpoint extends EndpointFilter {
  cursor: Cursor;
  retryForMs: number;
}

/**
 * What becomes of the event whose record starts at `at`: it goes (some endpoint that has not passed it
 * wants it, and it is younger than that endpoint's retryFor), it expired (wanted, but older than every
 * such endpoint's retryFor: dropped as the endpoint loop would), or no endpoint wants it any more.
 */
export function shipDecision(
  endpoints: readonly ShipEndpoint[],
  e: DeliveryEvent,
  at: Cursor,
  now: number,
): 'ship' | 'expired' | 'skip' {
  let wanted = false;
  const age = now - Date.parse(e.at);
  for (const ep of endpoints) {
    if (before(at, ep.cursor) || !wants(ep, e)) continue;
    if (!(age >= ep.retryForMs)) return 'ship'; // an unreadable time ships
    wanted = true;
  }
  return wanted ? 'expired' : 'skip';
}

/** The wait after `failures` passes in a row in which no peer took the chunk: 1 s doubling to 30 s. */
export function shipBackoffMs(failures: number, rand: number): number {
  return Math.min(SHIP_BACKOFF_MAX_MS, backoffMs(failures, rand));
}

/** The body of an events message as it streams in, held up to `max` bytes (beyond: 552). */
export class EventsBody {
  private readonly parts: Buffer[] = [];
  private size = 0;
  constructor(
    readonly count: number,
    private readonly max: number,
  ) {}

  push(chunk: Buffer): void {
    this.size += chunk.length;
    if (this.size > this.max) throw reply.tooBig(this.max);
    this.parts.push(chunk);
  }

  decode(): ReturnType<typeof decodeEventsBody> {
    return decodeEventsBody(Buffer.concat(this.parts, this.size), this.count);
  }
}
