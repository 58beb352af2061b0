/**
 * The pure parts of DKIM signing (RFC 6376, RFC 8463 for Ed25519): which keys sign a message (by its From
 * domain), which header fields are signed, and the DKIM-Signature field itself. No I/O; the body hash comes
 * from canon.ts, fed while the body streams to disk.
 */
import { createHash, sign as cryptoSign } from 'node:crypto';
import { relaxedHeader } from './canon.js';
import type { DkimKey } from '../contract/config-types.js';

export type { DkimKey };

/**
 * Header fields signed when present, in this order. Fields that are usually added or rewritten on the way
 * (Received, Return-Path, DKIM-Signature, X-*) are left out, so that the signature survives the relays.
 */
export const SIGNED_HEADERS = [
  'from',
  'sender',
  'reply-to',
  'subject',
  'date',
  'message-id',
  'to',
  'cc',
  'in-reply-to',
  'references',
  'mime-version',
  'content-type',
  'content-transfer-encoding',
  'content-id',
  'content-description',
  'resent-date',
  'resent-from',
  'resent-sender',
  'resent-to',
  'resent-cc',
  'resent-message-id',
  'list-id',
  'list-help',
  'list-unsubscribe',
  'list-unsubscribe-post',
  'list-subscribe',
  'list-post',
  'list-owner',
  'list-archive',
  'feedback-id',
];

/**
 * Header fields signed once more than they occur ("oversigned"): a copy added on the way, e.g. a second
 * From or a Subject where there was none, breaks the signature instead of being shown to the reader.
 */
export const OVERSIGNED = new Set([
  'from',
  'reply-to',
  'subject',
  'date',
  'message-id',
  'to',
  'cc',
  'list-unsubscribe',
  'list-unsubscribe-post',
]);

/** A header field as received: its name in lower case and its raw text (without its final line end). */
export interface HeaderField {
  name: string;
  raw: string;
}

/**
 * The fields of a header section (its bytes up to and including the empty line), in order. latin1 keeps
 * every byte as it came (8-bit header values are signed as received).
 */
export function parseHeaderFields(head: Buffer): HeaderField[] {
  const lines = head.toString('latin1').split(/\r?\n/);
  const fields: HeaderField[] = [];
  for (const line of lines) {
    if (line === '') break;
    if ((line[0] === ' ' || line[0] === '\t') && fields.length) {
      fields[fields.length - 1].raw += `\r\n${line}`;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    fields.push({ name: line.slice(0, colon).trim().toLowerCase(), raw: line });
  }
  return fields;
}

/** The header section ends with its empty line (a message that is all header, or has none, is not signed). */
export function headerComplete(head: Buffer): boolean {
  const n = head.length;
  return (
    (n >= 2 && head[n - 1] === 0x0a && head[n - 2] === 0x0a) ||
    (n >= 4 && head.subarray(n - 4).toString('latin1') === '\r\n\r\n') ||
    head.toString('latin1') === '\r\n'
  );
}

/**
 * The h= list for these fields: each signed name as often as it occurs, once more when oversigned (a name
 * that does not occur is listed only if oversigned).
 */
export function headerList(fields: HeaderField[]): string[] {
  const count = new Map<string, number>();
  for (const f of fields) count.set(f.name, (count.get(f.name) ?? 0) + 1);
  const out: string[] = [];
  for (const name of SIGNED_HEADERS) {
    const n = (count.get(name) ?? 0) + (OVERSIGNED.has(name) ? 1 : 0);
    for (let i = 0; i < n; i++) out.push(name);
  }
  return out;
}

/**
 * What the h= list signs, canonicalized: for each name, the next occurrence from the bottom of the header
 * (RFC 6376 5.4.2); a name listed more often than it occurs contributes nothing.
 */
export function canonicalHeaders(fields: HeaderField[], h: string[]): string {
  const used = new Map<string, number>();
  let out = '';
  for (const name of h) {
    const skip = used.get(name) ?? 0;
    used.set(name, skip + 1);
    let seen = 0;
    for (let i = fields.length - 1; i >= 0; i--) {
      if (fields[i].name !== name) continue;
      if (seen++ === skip) {
        out += relaxedHeader(fields[i].raw);
        break;
      }
    }
  }
  return out;
}

/**
 * The domain of the From field's address, lower case: undefined when there is no From field, more than one,
 * or addresses of more than one domain (DMARC cannot align such a message with one signing domain).
 */
export function fromDomain(fields: HeaderField[]): string | undefined {
  const froms = fields.filter((f) => f.name === 'from');
  if (froms.length !== 1) return undefined;
  const value = froms[0].raw
    .slice(froms[0].raw.indexOf(':') + 1)
    .replace(/\r?\n/g, '')
    .replace(/"(?:[^"\\]|\\.)*"/g, '""') // display names may hold '@' and ','
    .replace(/\((?:[^()\\]|\\.)*\)/g, ' '); // comments (not nested: rare enough)
  const domains = new Set<string>();
  for (const m of value.matchAll(/@([^\s<>()",;:@[\]]+)/g))
    domains.add(m[1].toLowerCase().replace(/\.$/, ''));
  return domains.size === 1 ? [...domains][0] : undefined;
}

/**
 * The keys that sign mail from `domain`: every key of the nearest domain that has keys, the domain itself
 * or a parent (DMARC relaxed alignment: mail from news.example.com aligns with d=example.com). All keys of
 * that domain sign: two algorithms is dual signing, two selectors is a rotation in progress.
 */
export function keysFor<K extends { domain: string }>(keys: K[], domain: string | undefined): K[] {
  if (!domain) return [];
  for (let d = domain; ;) {
    const mine = keys.filter((k) => k.domain === d);
    if (mine.length) return mine;
    const dot = d.indexOf('.');
    if (dot < 0) return [];
    d = d.slice(dot + 1);
    if (!d.includes('.')) return []; // never sign for a bare TLD
  }
}

/**
 * Parts joined into lines of at most `width` characters, continuation lines starting with a tab. A part
 * marked `glued` follows the previous one without a space (the names of h=, folded only at their colons).
 */
function fold(parts: { text: string; glued?: boolean }[], start: number, width = 76): string {
  let out = '';
  let line = start;
  let first = true;
  for (const { text, glued } of parts) {
    const sep = !first && !glued ? 1 : 0;
    first = false;
    if (out && line + sep + text.length > width) {
      out += '\r\n\t';
      line = 1;
    } else if (sep) {
      out += ' ';
      line++;
    }
    out += text;
    line += text.length;
  }
  return out;
}

export interface SignInput {
  key: DkimKey;
  fields: HeaderField[];
  /** Base64 relaxed body hash (canon.ts). */
  bodyHash: string;
  /** Signature time, seconds since the epoch (t=). */
  time: number;
  /** Expiry, seconds since the epoch (x=). */
  expires?: number;
}

/** The DKIM-Signature field for one key, folded, ending in CRLF: ready to be put in front of the message. */
export function dkimSignature(s: SignInput): string {
  const h = headerList(s.fields);
  const tags = [
    'v=1;',
    `a=${s.key.algorithm};`,
    'c=relaxed/relaxed;',
    `d=${s.key.domain};`,
    `s=${s.key.selector};`,
    `t=${s.time};`,
    ...(s.expires !== undefined ? [`x=${s.expires};`] : []),
  ].map((text): { text: string; glued?: boolean } => ({ text }));
  // FWS is allowed between tags and around h='s colons (RFC 6376 3.5), so that is where it folds
  h.forEach((n, i) =>
    tags.push({ text: (i ? '' : 'h=') + n + (i === h.length - 1 ? ';' : ':'), glued: i > 0 }),
  );
  tags.push({ text: `bh=${s.bodyHash};` });
  const unsigned = `DKIM-Signature: ${fold(tags, 16)}\r\n\tb=`;
  const data = canonicalHeaders(s.fields, h) + relaxedHeader(unsigned).slice(0, -2);
  const signature =
    s.key.algorithm === 'rsa-sha256'
      ? cryptoSign('sha256', Buffer.from(data, 'latin1'), s.key.privateKey)
      : cryptoSign(null, createHash('sha256').update(Buffer.from(data, 'latin1')).digest(), s.key.privateKey);
  const b64 = signature.toString('base64');
  const chunks: string[] = [];
  for (let i = 0; i < b64.length; i += 64) chunks.push(b64.slice(i, i + 64));
  return `${unsigned}${chunks.join('\r\n\t')}\r\n`;
}
