/**
 * The suppression journal's file format, and reading it back: pure line encoding and parsing, plus the
 * scan that replays a journal file line by line. The store that owns the file (group commit, compaction,
 * the in-memory set and change feed) is suppression.ts.
 *
 * On disk, under the store's `dir`:
 *   suppressions.log       append-only journal, one JSON line per change (`Change`); after a compaction the
 *                          first line is a header `{"v":1,"lastSeq":N}` and the next lines, with seq <= N,
 *                          are the live entries as 'add' changes
 *   suppressions.log.tmp   a compaction being written; removed at open
 */
import type { FileHandle } from 'node:fs/promises';

export interface Suppression {
  tenant: string;
  /** Lower-cased. */
  address: string;
  /** Why, one line, e.g. the 5xx reply. */
  reason: string;
  source: 'bounce' | 'complaint' | 'admin' | 'fleet';
  createdAt: number;
  expiresAt: number;
}

export interface Change {
  seq: number;
  op: 'add' | 'remove';
  tenant: string;
  address: string;
  /** The entry added ('add' only). */
  entry?: Suppression;
  /** Who removed the entry ('remove' only, when the caller said). */
  source?: string;
  at: number;
}

export const JOURNAL = 'suppressions.log';
/** `expiresAt` of an entry added with a TTL that is not finite. */
export const NEVER = Number.MAX_SAFE_INTEGER;
export const MAX_REASON = 500;
const READ_CHUNK = 1 << 20;

/** The key of an entry in sorted listings: tenant and address joined by NUL (neither may contain one). */
export const keyOf = (tenant: string, address: string) => `${tenant}\u0000${address}`;

/** A reason as stored: one line (newlines and tabs become spaces), at most MAX_REASON characters. */
export function oneLine(text: string): string {
  const t = text
    .replace(/\s*[\r\n]+\s*/g, ' ')
    .replace(/\t/g, ' ')
    .trim();
  return t.length > MAX_REASON ? `${t.slice(0, MAX_REASON - 1)}…` : t;
}

function isSuppression(e: unknown): e is Suppression {
  const s = e as Suppression;
  return (
    typeof s === 'object' &&
    s !== null &&
    typeof s.tenant === 'string' &&
    typeof s.address === 'string' &&
    typeof s.reason === 'string' &&
    typeof s.source === 'string' &&
    typeof s.createdAt === 'number' &&
    typeof s.expiresAt === 'number'
  );
}

/** One journal line (without its newline): a change, the compaction header, or undefined when unreadable. */
export function parseChange(text: string): Change | { header: number } | undefined {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (typeof o !== 'object' || o === null) return undefined;
  if (o.v === 1 && typeof o.lastSeq === 'number' && o.op === undefined) return { header: o.lastSeq };
  if (typeof o.seq !== 'number' || typeof o.tenant !== 'string' || typeof o.address !== 'string')
    return undefined;
  if (o.op === 'add' && isSuppression(o.entry)) return o as unknown as Change;
  if (o.op === 'remove') return o as unknown as Change;
  return undefined;
}

/** A change as a journal line, newline included. */
export const changeLine = (c: Change): string => JSON.stringify(c) + '\n';

/** The header line a compacted journal starts with: every change up to `lastSeq` is in the entries below. */
export const headerLine = (lastSeq: number, compactedAt: number): string =>
  JSON.stringify({ v: 1, lastSeq, compactedAt }) + '\n';

/** A live entry as the 'add' change a compacted journal holds for it. */
export const entryLine = (s: Suppression, seq: number): string =>
  changeLine({ seq, op: 'add', tenant: s.tenant, address: s.address, entry: s, at: s.createdAt });

/** What a replay found; the changes themselves went to the callback. */
export interface JournalScan {
  /** `lastSeq` of the header, 0 without one. */
  header: number;
  /** Highest seq of a change read. */
  maxSeq: number;
  /** Change lines read (the header not counted). */
  lines: number;
  /** Unreadable lines followed by a readable one (a torn tail is not counted here). */
  corruptLines: number;
  /** End of the last line that parsed: what follows is a torn or unreadable tail when below `size`. */
  good: number;
  size: number;
}

/**
 * Reads a journal from the start, calling `onChange` for each readable change in order (`afterHeader`:
 * its seq is above the header's, so it belongs in the change feed). A header anywhere but on the first
 * line counts as corrupt; blank lines are skipped. Reads in 1 MiB chunks, so memory does not grow with
 * the file.
 */
export async function scanJournal(
  fh: FileHandle,
  onChange: (c: Change, afterHeader: boolean) => void,
): Promise<JournalScan> {
  const buf = Buffer.alloc(READ_CHUNK);
  let carry = Buffer.alloc(0);
  let pos = 0; // file offset of carry[0]
  let good = 0; // end of the last line that parsed
  let badSinceGood = 0;
  let first = true;
  const r: JournalScan = { header: 0, maxSeq: 0, lines: 0, corruptLines: 0, good: 0, size: 0 };
  for (;;) {
    const { bytesRead } = await fh.read(buf, 0, buf.length, pos + carry.length);
    if (bytesRead === 0) break;
    const data = carry.length
      ? Buffer.concat([carry, buf.subarray(0, bytesRead)])
      : buf.subarray(0, bytesRead);
    let start = 0;
    for (let nl = data.indexOf(10, start); nl !== -1; nl = data.indexOf(10, start)) {
      const text = data.toString('utf8', start, nl);
      start = nl + 1;
      if (text.trim() === '') continue;
      const c = parseChange(text);
      if (!c) {
        badSinceGood++;
        first = false;
        continue;
      }
      r.corruptLines += badSinceGood;
      badSinceGood = 0;
      good = pos + start;
      if ('header' in c) {
        if (first) r.header = c.header;
        else r.corruptLines++;
        first = false;
        continue;
      }
      first = false;
      r.lines++;
      r.maxSeq = Math.max(r.maxSeq, c.seq);
      onChange(c, c.seq > r.header);
    }
    carry = Buffer.from(data.subarray(start)); // copy: `buf` is reused
    pos += start;
  }
  r.good = good;
  r.size = pos + carry.length;
  return r;
}

/** Writes all of `buf` at the file's current (append) position; returns its length. */
export async function writeAll(fh: FileHandle, buf: Buffer): Promise<number> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off);
    off += bytesWritten;
  }
  return buf.length;
}
