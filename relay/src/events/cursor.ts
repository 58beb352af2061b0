/**
 * An endpoint's reading position in the outbox (segment, byte offset), kept durably in
 * `<events>/cursors/<key>.json` (temp file, fdatasync, rename). It moves only after the endpoint
 * acknowledged a batch (or the batch was dropped after retryFor), so a crash resends at most the batch
 * that was in flight: at least once. `readBatch` collects the next events an endpoint wants.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import type { DeliveryEvent } from '../contract/events.js';
import { writeFileDurable } from '../durable.js';
import { decodeRecords } from './record.js';

export interface Cursor {
  seq: number;
  offset: number;
}

/** What readBatch needs of the outbox. */
export interface SegmentSource {
  segments(): number[];
  committed(seq: number): number | undefined;
  readonly activeSegment: number;
  file(seq: number): string;
}

/** A stable file-name key for an endpoint (tenant and URL; the URL may hold a token, so it is hashed). */
export function endpointKey(tenant: string, url: string): string {
  return createHash('sha256').update(`${tenant}\0${url}`).digest('hex').slice(0, 24);
}

export function cursorFile(dir: string, key: string): string {
  return path.join(dir, 'cursors', `${key}.json`);
}

export async function loadCursor(dir: string, key: string): Promise<Cursor | undefined> {
  try {
    const c = JSON.parse(await fsp.readFile(cursorFile(dir, key), 'utf8')) as Cursor;
    return Number.isSafeInteger(c.seq) && Number.isSafeInteger(c.offset) && c.offset >= 0 ? c : undefined;
  } catch {
    return undefined;
  }
}

export async function saveCursor(dir: string, key: string, c: Cursor): Promise<void> {
  await fsp.mkdir(path.join(dir, 'cursors'), { recursive: true });
  await writeFileDurable(cursorFile(dir, key), JSON.stringify({ seq: c.seq, offset: c.offset }));
}

/** Whether cursor `a` is before `b`. */
export function before(a: Cursor, b: Cursor): boolean {
  return a.seq < b.seq || (a.seq === b.seq && a.offset < b.offset);
}

/** The position to read from: a cursor pointing at a removed segment moves to the oldest one kept. */
export function normalise(c: Cursor, segments: number[]): Cursor {
  if (!segments.length) return c;
  if (c.seq < segments[0]) return { seq: segments[0], offset: 0 };
  return c;
}

/** Bytes read at a time (an event line is at most a few KiB: its free-text fields are cut to 1000). */
const CHUNK = 256 * 1024;
/** At most this many bytes are scanned per call (events of other tenants are skipped over). */
const SCAN_LIMIT = 64 * CHUNK;

export interface Batch {
  events: DeliveryEvent[];
  /** Where the next read starts once this batch is acknowledged. */
  next: Cursor;
  corrupt: number;
}

/**
 * The next at most `max` events (and at most `maxBytes` of record lines, but always one) from `from` that
 * `wants` accepts (`at`: where the event's record starts); `next` also moves past events not wanted.
 * Reads only committed bytes; a sealed segment's unreadable tail (torn by a crash) is skipped.
 */
export async function readBatch(
  src: SegmentSource,
  from: Cursor,
  max: number,
  wants: (e: DeliveryEvent, at: Cursor) => boolean,
  maxBytes = Infinity,
): Promise<Batch> {
  const out: Batch = { events: [], next: normalise(from, src.segments()), corrupt: 0 };
  let scanned = 0;
  let bytes = 0;
  const full = (len = 0) => out.events.length >= max || (out.events.length > 0 && bytes + len > maxBytes);
  while (!full() && scanned < SCAN_LIMIT) {
    const cur = out.next;
    const limit = src.committed(cur.seq);
    const sealed = cur.seq < src.activeSegment;
    if (limit === undefined || cur.offset >= limit) {
      if (!sealed) break;
      const later = src.segments().find((s) => s > cur.seq);
      if (later === undefined) break;
      out.next = { seq: later, offset: 0 };
      continue;
    }
    const len = Math.min(CHUNK, limit - cur.offset);
    const buf = Buffer.alloc(len);
    const fh = await fsp.open(src.file(cur.seq), 'r');
    let got: number;
    try {
      ({ bytesRead: got } = await fh.read(buf, 0, len, cur.offset));
    } finally {
      await fh.close();
    }
    scanned += got;
    const d = decodeRecords(buf.subarray(0, got), Infinity);
    let end = 0;
    let stopped = false;
    for (const r of d.records) {
      if (full(r.end - r.start)) {
        stopped = true;
        break;
      }
      if (wants(r.event, { seq: cur.seq, offset: cur.offset + r.start })) {
        out.events.push(r.event);
        bytes += r.end - r.start;
      }
      end = r.end;
    }
    if (stopped) {
      // the batch is full: the next read starts at the first record not taken
      if (end > 0) out.next = { seq: cur.seq, offset: cur.offset + end };
      break;
    }
    out.corrupt += d.corrupt;
    end = d.consumed;
    if (end === 0) {
      // nothing whole here: a torn tail of a sealed segment (skip it), or a file shorter than its size
      if (!sealed) break;
      out.next = { seq: cur.seq, offset: limit };
      continue;
    }
    out.next = { seq: cur.seq, offset: cur.offset + end };
  }
  return out;
}
