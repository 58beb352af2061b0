/**
 * A small, bounded MIME reader for bounce and feedback reports (RFC 3464 multipart/report with
 * message/delivery-status, RFC 5965 message/feedback-report): headers (MAX_FIELDS fields of the first
 * MAX_HEADER_BYTES of a section), multipart bodies (nested to MAX_DEPTH, at most MAX_PARTS parts in all),
 * base64 and quoted-printable. The input is already bounded
 * by the listener's size limit; nothing here grows beyond the input. Pure.
 */

export const MAX_DEPTH = 4;
export const MAX_PARTS = 64;
/**
 * Header fields read per header section (or report fields block), and the bytes of it read: more than
 * Postfix lets through by default (100 KiB), so a returned message's Message-ID is not cut off.
 */
export const MAX_FIELDS = 2000;
export const MAX_HEADER_BYTES = 256 * 1024;

export interface MimePart {
  /** Header fields, names lower case, in order; unfolded. */
  headers: [string, string][];
  /** The media type, lower case (text/plain when absent). */
  type: string;
  params: Record<string, string>;
  /** The decoded body (for a multipart: the raw body). */
  body: Buffer;
  parts: MimePart[];
}

export function header(p: Pick<MimePart, 'headers'>, name: string): string | undefined {
  return p.headers.find(([n]) => n === name)?.[1];
}

/** Splits at the first empty line: header fields (unfolded) and the body. */
export function splitHeaders(raw: Buffer): { headers: [string, string][]; body: Buffer } {
  if (i0(raw)) return { headers: [], body: raw.subarray(raw[0] === 0x0d ? 2 : 1) };
  let end = -1;
  let bodyStart = raw.length;
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] !== 0x0a) continue;
    if (raw[i + 1] === 0x0a) {
      end = i + 1;
      bodyStart = i + 2;
      break;
    }
    if (raw[i + 1] === 0x0d && raw[i + 2] === 0x0a) {
      end = i + 1;
      bodyStart = i + 3;
      break;
    }
  }
  const text = raw.subarray(0, Math.min(end < 0 ? raw.length : end, MAX_HEADER_BYTES)).toString('latin1');
  return { headers: parseFields(text), body: end < 0 ? Buffer.alloc(0) : raw.subarray(bodyStart) };
}

/** A body that starts with an empty line has no header fields. */
const i0 = (raw: Buffer) => raw[0] === 0x0a || (raw[0] === 0x0d && raw[1] === 0x0a);

/**
 * `Name: value` lines with continuation lines unfolded; names lower case. Lines without a colon are skipped.
 * Only the first MAX_HEADER_BYTES of `text` and the first MAX_FIELDS fields are read.
 */
export function parseFields(text: string): [string, string][] {
  const out: [string, string][] = [];
  for (const line of text.slice(0, MAX_HEADER_BYTES).split(/\r?\n/)) {
    if (/^[ \t]/.test(line) && out.length) {
      out[out.length - 1][1] += ' ' + line.trim();
      continue;
    }
    const c = line.indexOf(':');
    if (c <= 0) continue;
    if (out.length >= MAX_FIELDS) break;
    out.push([line.slice(0, c).trim().toLowerCase(), line.slice(c + 1).trim()]);
  }
  return out;
}

function contentType(v: string | undefined): { type: string; params: Record<string, string> } {
  if (!v) return { type: 'text/plain', params: {} };
  const [t, ...rest] = v.split(';');
  const params: Record<string, string> = {};
  for (const p of rest) {
    const m = /^\s*([A-Za-z0-9_.*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;]*))/.exec(p);
    if (m) params[m[1].toLowerCase()] = (m[2] ?? m[3] ?? '').replace(/\\(.)/g, '$1');
  }
  return { type: t.trim().toLowerCase() || 'text/plain', params };
}

function decode(body: Buffer, cte: string | undefined): Buffer {
  switch ((cte ?? '').trim().toLowerCase()) {
    case 'base64':
      return Buffer.from(body.toString('latin1').replace(/[^A-Za-z0-9+/=]/g, ''), 'base64');
    case 'quoted-printable':
      return unQuote(body);
    default:
      return body;
  }
}

const hex = (c: number): number =>
  c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x41 && c <= 0x46 ? c - 55 : c >= 0x61 && c <= 0x66 ? c - 87 : -1;

/** Quoted-printable in one pass over the bytes: `=XX` and soft line breaks; a stray `=` is kept. */
function unQuote(body: Buffer): Buffer {
  const out = Buffer.alloc(body.length);
  let n = 0;
  for (let i = 0; i < body.length; i++) {
    const c = body[i];
    if (c === 0x3d) {
      if (body[i + 1] === 0x0a) {
        i += 1;
        continue;
      }
      if (body[i + 1] === 0x0d && body[i + 2] === 0x0a) {
        i += 2;
        continue;
      }
      const h = hex(body[i + 1]);
      const l = hex(body[i + 2]);
      if (h >= 0 && l >= 0 && i + 2 < body.length) {
        out[n++] = h * 16 + l;
        i += 2;
        continue;
      }
    }
    out[n++] = c;
  }
  return out.subarray(0, n);
}

/** Parses a message (or a body part) into its tree. Parts beyond the bounds are left out, not an error. */
export function parseMime(raw: Buffer): MimePart {
  const budget = { parts: MAX_PARTS };
  return parsePart(raw, 0, budget);
}

function parsePart(raw: Buffer, depth: number, budget: { parts: number }): MimePart {
  const { headers, body } = splitHeaders(raw);
  const { type, params } = contentType(headers.find(([n]) => n === 'content-type')?.[1]);
  const part: MimePart = { headers, type, params, body, parts: [] };
  if (type.startsWith('multipart/') && params.boundary && depth < MAX_DEPTH) {
    for (const chunk of splitMultipart(body, params.boundary, Math.max(0, budget.parts))) {
      if (budget.parts-- <= 0) break;
      part.parts.push(parsePart(chunk, depth + 1, budget));
    }
    return part;
  }
  part.body = decode(body, headers.find(([n]) => n === 'content-transfer-encoding')?.[1]);
  return part;
}

/** The first `max` body parts between `--boundary` lines (preamble and epilogue dropped). */
function splitMultipart(body: Buffer, boundary: string, max: number): Buffer[] {
  const text = body.toString('latin1');
  const delim = `--${boundary}`;
  const out: Buffer[] = [];
  let pos = text.startsWith(delim) ? 0 : text.indexOf(`\n${delim}`);
  if (pos < 0) return out;
  if (pos > 0) pos += 1;
  while (out.length < max) {
    const lineEnd = text.indexOf('\n', pos);
    if (lineEnd < 0) break;
    if (text.startsWith(`${delim}--`, pos)) break;
    const next = text.indexOf(`\n${delim}`, lineEnd);
    const end = next < 0 ? text.length : next;
    let chunk = text.slice(lineEnd + 1, end);
    if (chunk.endsWith('\r')) chunk = chunk.slice(0, -1);
    out.push(Buffer.from(chunk, 'latin1'));
    if (next < 0) break;
    pos = next + 1;
  }
  return out;
}

/** Every part, depth first (the message itself first). */
export function walk(p: MimePart): MimePart[] {
  return [p, ...p.parts.flatMap(walk)];
}
