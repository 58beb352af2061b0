/**
 * The outbox's record format (relay/src/events/outbox.ts): one event per line, `<crc32 hex8> <json>\n`,
 * the CRC-32 over the JSON bytes. Appended in batches to segment files; a crash can leave a torn last
 * line (no newline, or a CRC that does not match), which the reader ignores: only whole, checked lines
 * count. A damaged line in the middle (bit rot) is skipped and counted, never delivered.
 */
import { crc32 } from 'node:zlib';
import type { DeliveryEvent } from '../contract/events.js';

const NL = 0x0a;
/**
 * The longest record line taken from a peer's hand-off (handoff-wire.ts): the outbox's own records are a
 * few KiB (their free-text fields are cut to 1000 characters), and a reader (cursor.ts readBatch) reads a
 * segment 256 KiB at a time, so a longer line would never be read whole and would stop every reader.
 */
export const MAX_RECORD_BYTES = 64 * 1024;

export function encodeRecord(e: DeliveryEvent): Buffer {
  const json = Buffer.from(JSON.stringify(e));
  const crc = (crc32(json) >>> 0).toString(16).padStart(8, '0');
  return Buffer.concat([Buffer.from(`${crc} `), json, Buffer.from('\n')]);
}

export interface DecodedRecord {
  event: DeliveryEvent;
  /** Byte offset of the record within the buffer given to decodeRecords, and just after it. */
  start: number;
  end: number;
}

export interface Decoded {
  records: DecodedRecord[];
  /** Bytes consumed: up to and including the last newline seen (complete lines only). */
  consumed: number;
  /** Complete lines that failed their check (skipped). */
  corrupt: number;
}

/**
 * Decodes the complete lines of `buf` (stopping after `max` records): a trailing part without a newline is
 * left unconsumed (a torn tail, or a batch still being written).
 */
export function decodeRecords(buf: Buffer, max = Infinity): Decoded {
  const out: Decoded = { records: [], consumed: 0, corrupt: 0 };
  let pos = 0;
  while (pos < buf.length && out.records.length < max) {
    const nl = buf.indexOf(NL, pos);
    if (nl < 0) break;
    const event = checkLine(buf.subarray(pos, nl));
    if (event) out.records.push({ event, start: pos, end: nl + 1 });
    else out.corrupt++;
    pos = nl + 1;
    out.consumed = pos;
  }
  return out;
}

function checkLine(line: Buffer): DeliveryEvent | undefined {
  if (line.length < 10 || line[8] !== 0x20) return undefined;
  const want = parseInt(line.subarray(0, 8).toString('latin1'), 16);
  const json = line.subarray(9);
  if (!Number.isFinite(want) || crc32(json) >>> 0 !== want) return undefined;
  try {
    const e = JSON.parse(json.toString('utf8')) as DeliveryEvent;
    return e && typeof e === 'object' && typeof e.id === 'string' && typeof e.type === 'string'
      ? e
      : undefined;
  } catch {
    return undefined;
  }
}

/** Segment file names: `seg-<16 digit sequence>.log`, so that names sort in write order. */
export function segmentName(seq: number): string {
  return `seg-${String(seq).padStart(16, '0')}.log`;
}
export function segmentSeq(name: string): number | undefined {
  const m = /^seg-([0-9]{16})\.log$/.exec(name);
  return m ? Number(m[1]) : undefined;
}
