/**
 * The sent-message index's entries, pure (docs/adr/020-sent-message-index.md): the normalized Message-ID
 * a report's returned message is looked up by, the file (day and hash-prefix bucket) an entry goes to,
 * and the line format `<crc32 hex8> <json>\n` (the CRC-32 over the JSON bytes). A torn or damaged line
 * fails its check and is skipped: the index is best-effort, never acknowledged data.
 */
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import type { SentMessageView } from '../contract/admin-api.js';

/** Recipients remembered per message (the first ones, in envelope order). */
export const MAX_RECIPIENTS = 100;
/** The longest Message-ID kept (RFC 5322's line limit). */
export const MAX_MESSAGE_ID = 998;
/** The longest line read back: a longer one is not an entry this relay wrote. */
export const MAX_LINE = 64 * 1024;
const DAY_MS = 86_400_000;

/** What the index remembers of one accepted message (the admin API's view, in the contract). */
export type SentEntry = SentMessageView;

/**
 * The key a Message-ID is indexed and looked up by: the id between the first `<` and `>` (or the whole
 * trimmed value without them), lower case; undefined when empty, too long or containing white space.
 */
export function messageKey(v: string | undefined): string | undefined {
  if (!v) return undefined;
  const s = v.slice(0, MAX_MESSAGE_ID + 200);
  const m = /<([^<>]*)>/.exec(s);
  const id = (m ? m[1] : s).trim().toLowerCase();
  if (!id || id.length > MAX_MESSAGE_ID || /[\s\0]/.test(id)) return undefined;
  return id;
}

/** The UTC day of `ms` as yyyymmdd. */
export function dayOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10).replace(/-/g, '');
}

/** The days a lookup reads, newest first: today and the `ttlDays` before it. */
export function lookupDays(now: number, ttlDays: number): string[] {
  const out: string[] = [];
  for (let i = 0; i <= ttlDays; i++) out.push(dayOf(now - i * DAY_MS));
  return out;
}

/** Whether the day folder `day` (yyyymmdd) is older than what a lookup reads: to be removed. */
export function expired(day: string, now: number, ttlDays: number): boolean {
  if (!/^[0-9]{8}$/.test(day)) return false;
  return day < dayOf(now - ttlDays * DAY_MS);
}

/** The bucket of a key within its day: the first byte of its SHA-256, two hex digits. */
export function bucketOf(key: string): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 2);
}

export function encodeEntry(e: SentEntry): Buffer {
  const json = Buffer.from(
    JSON.stringify({ m: e.messageId, t: e.tenant, q: e.queueId, r: e.recipients, n: e.count }),
  );
  const crc = (crc32(json) >>> 0).toString(16).padStart(8, '0');
  return Buffer.concat([Buffer.from(`${crc} `), json, Buffer.from('\n')]);
}

/** One line (without its newline) back into an entry; undefined when torn, damaged or not an entry. */
export function decodeEntry(line: string, day: string): SentEntry | undefined {
  if (line.length < 10 || line.length > MAX_LINE || line[8] !== ' ') return undefined;
  const json = Buffer.from(line.slice(9));
  if ((crc32(json) >>> 0).toString(16).padStart(8, '0') !== line.slice(0, 8)) return undefined;
  try {
    const o = JSON.parse(json.toString()) as {
      m?: unknown;
      t?: unknown;
      q?: unknown;
      r?: unknown;
      n?: unknown;
    };
    if (typeof o.m !== 'string' || typeof o.t !== 'string' || typeof o.q !== 'string') return undefined;
    if (!Array.isArray(o.r) || !o.r.every((x) => typeof x === 'string')) return undefined;
    const recipients = (o.r as string[]).slice(0, MAX_RECIPIENTS);
    const count = typeof o.n === 'number' && o.n >= recipients.length ? o.n : recipients.length;
    return { messageId: o.m, tenant: o.t, queueId: o.q, recipients, count, day };
  } catch {
    return undefined;
  }
}

/** An entry for a message accepted at `now`, or undefined when its Message-ID cannot be a key. */
export function entryOf(
  m: { messageId?: string; tenant: string; queueId: string; recipients: string[] },
  now: number,
): SentEntry | undefined {
  const messageId = messageKey(m.messageId);
  if (!messageId) return undefined;
  return {
    messageId,
    tenant: m.tenant,
    queueId: m.queueId,
    recipients: m.recipients.slice(0, MAX_RECIPIENTS).map((r) => r.toLowerCase()),
    count: m.recipients.length,
    day: dayOf(now),
  };
}
