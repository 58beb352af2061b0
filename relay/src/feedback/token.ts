/**
 * The return-path token (VERP, docs/adr/016-feedback-loop.md): what the envelope sender of a tenant with
 * `returnPath` carries, `<prefix>+<token>@<bounce domain>`, so that a later DSN sent to it names the
 * tenant, the message and the recipient, whichever pod of the fleet receives it (nothing is stored).
 *
 * Token v1, 30 bytes, written in lower-case RFC 4648 base32 without padding (48 characters):
 *   version (1) | day (2, days since 1970 mod 2^16) | queue id (13, its base-36 value) |
 *   recipient tag (4) | tenant tag (2) | MAC (8)
 * recipient tag = HMAC-SHA256(key, "r\0" + lower-case recipient)[0..4): the DSN names the recipient, and
 * only the recipient the token was made for is taken (a recipient can report itself only).
 * tenant tag = SHA-256(tenant name)[0..2): picks the candidate tenants; the MAC decides.
 * MAC = HMAC-SHA256(key, "t\0" + tenant + "\0" + bytes 0..20)[0..8).
 * Pure: no I/O, the clock is a parameter.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

export const TOKEN_VERSION = 1;
const QID_BYTES = 13;
const BODY = 1 + 2 + QID_BYTES + 4 + 2; // 22
const MAC_BYTES = 8;
export const TOKEN_BYTES = BODY + MAC_BYTES; // 30
/** Characters of a token in base32 (no padding). */
export const TOKEN_CHARS = Math.ceil((TOKEN_BYTES * 8) / 5); // 48
/** RFC 5321 4.5.3.1.1: a local part is at most 64 octets. */
export const MAX_LOCAL_PART = 64;
/** The longest prefix that leaves room for `+` and a token. */
export const MAX_PREFIX = MAX_LOCAL_PART - 1 - TOKEN_CHARS; // 15
const DAY_MS = 86_400_000;
const QUEUE_ID_RE = /^[0-9A-Z]{20}$/;

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';

export function base32(b: Uint8Array): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of b) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    value &= (1 << bits) - 1;
  }
  if (bits > 0) out += ALPHABET[(value << (5 - bits)) & 31];
  return out;
}

/** Decodes unpadded base32 (any case); undefined for a character outside the alphabet or stray bits. */
export function unbase32(s: string): Buffer | undefined {
  const out: number[] = [];
  let bits = 0;
  let value = 0;
  for (const ch of s.toLowerCase()) {
    const v = ALPHABET.indexOf(ch);
    if (v < 0) return undefined;
    value = (value << 5) | v;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 255);
      bits -= 8;
    }
    value &= (1 << bits) - 1;
  }
  if (value !== 0) return undefined; // non-canonical trailing bits
  return Buffer.from(out);
}

function qidBytes(qid: string): Buffer {
  let n = BigInt(0);
  for (const ch of qid) n = n * BigInt(36) + BigInt(parseInt(ch, 36));
  const b = Buffer.alloc(QID_BYTES);
  for (let i = QID_BYTES - 1; i >= 0; i--) {
    b[i] = Number(n & BigInt(255));
    n >>= BigInt(8);
  }
  return b;
}

function qidString(b: Buffer): string | undefined {
  let n = BigInt(0);
  for (const byte of b) n = (n << BigInt(8)) | BigInt(byte);
  const s = n.toString(36).toUpperCase();
  return s.length <= 20 ? s.padStart(20, '0') : undefined;
}

export const tenantTag = (tenant: string): Buffer =>
  createHash('sha256').update(tenant).digest().subarray(0, 2);

export const recipientTag = (key: Buffer, rcpt: string): Buffer =>
  createHmac('sha256', key).update('r\0').update(rcpt.toLowerCase()).digest().subarray(0, 4);

function mac(key: Buffer, tenant: string, body: Buffer): Buffer {
  return createHmac('sha256', key)
    .update('t\0')
    .update(tenant)
    .update('\0')
    .update(body)
    .digest()
    .subarray(0, MAC_BYTES);
}

export interface TokenInput {
  tenant: string;
  queueId: string;
  recipient: string;
}

/** The token for one recipient of one message (throws for a queue id not made by newQueueId). */
export function makeToken(key: Buffer, t: TokenInput, now: number): string {
  if (!QUEUE_ID_RE.test(t.queueId)) throw new Error(`not a queue id: ${t.queueId}`);
  const body = Buffer.alloc(BODY);
  body[0] = TOKEN_VERSION;
  body.writeUInt16BE(Math.floor(now / DAY_MS) & 0xffff, 1);
  qidBytes(t.queueId).copy(body, 3);
  recipientTag(key, t.recipient).copy(body, 3 + QID_BYTES);
  tenantTag(t.tenant).copy(body, 3 + QID_BYTES + 4);
  return base32(Buffer.concat([body, mac(key, t.tenant, body)]));
}

/** The envelope sender carrying the token: `<prefix>+<token>@<domain>`. */
export function returnPathAddress(
  key: Buffer,
  rp: { domain: string; prefix: string },
  t: TokenInput,
  now: number,
): string {
  return `${rp.prefix}+${makeToken(key, t, now)}@${rp.domain}`;
}

export type ParsedToken =
  | { ok: true; tenant: string; queueId: string; recipientTag: Buffer; issuedDay: number }
  | { ok: false; reason: 'malformed' | 'version' | 'forged' | 'expired' };

/**
 * Checks a token: its form, its MAC against each candidate tenant (those whose tag matches), and its age:
 * issued at most `ttlDays` days before today (and not after tomorrow: clocks differ a little).
 */
export function parseToken(
  key: Buffer,
  token: string,
  tenants: Iterable<string>,
  now: number,
  ttlDays: number,
): ParsedToken {
  if (token.length !== TOKEN_CHARS) return { ok: false, reason: 'malformed' };
  const raw = unbase32(token);
  if (!raw || raw.length !== TOKEN_BYTES) return { ok: false, reason: 'malformed' };
  if (raw[0] !== TOKEN_VERSION) return { ok: false, reason: 'version' };
  const body = raw.subarray(0, BODY);
  const given = raw.subarray(BODY);
  const tag = body.subarray(3 + QID_BYTES + 4, BODY);
  let tenant: string | undefined;
  for (const t of tenants) {
    if (!tenantTag(t).equals(tag)) continue;
    if (timingSafeEqual(mac(key, t, body), given)) {
      tenant = t;
      break;
    }
  }
  if (tenant === undefined) return { ok: false, reason: 'forged' };
  const issuedDay = body.readUInt16BE(1);
  // age in days, modulo 2^16 so the wrap in 2149 does not matter; a token from the future is negative
  const age = (((Math.floor(now / DAY_MS) - issuedDay) % 0x10000) + 0x10000) % 0x10000;
  const signedAge = age > 0x8000 ? age - 0x10000 : age;
  if (signedAge > ttlDays || signedAge < -1) return { ok: false, reason: 'expired' };
  const queueId = qidString(body.subarray(3, 3 + QID_BYTES));
  if (!queueId) return { ok: false, reason: 'malformed' };
  return {
    ok: true,
    tenant,
    queueId,
    recipientTag: Buffer.from(body.subarray(3 + QID_BYTES, 3 + QID_BYTES + 4)),
    issuedDay,
  };
}

/** Whether `rcpt` is the recipient the token was made for. */
export function tokenRecipient(key: Buffer, tag: Buffer, rcpt: string): boolean {
  return timingSafeEqual(recipientTag(key, rcpt), tag);
}

/** Splits `<prefix>+<token>` (case-insensitive prefix); undefined when the local part is not of that form. */
export function splitLocalPart(local: string, prefix: string): string | undefined {
  const p = `${prefix.toLowerCase()}+`;
  if (!local.toLowerCase().startsWith(p)) return undefined;
  return local.slice(p.length);
}
