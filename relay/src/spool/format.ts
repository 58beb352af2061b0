/**
 * The queue file formats. A queue file is written once, front to back, while the message arrives, and never
 * changed after its rename into queue/:
 *
 *   v2 (written now):  <raw message> <envelope JSON> "\nCSPOOL2 <bodyLen> <jsonLen> <crc32 hex>\n"
 *   v1 (read only):    "CSPOOL1 <jsonLen>\n" <envelope JSON> "\n" <raw message>
 *
 * v2 puts the envelope after the body because the envelope (size, 8-bit, checksum) is only known once the
 * last byte arrived, and a streamed body cannot be held back. The trailer makes a half-written file
 * recognisable: it is the last thing written, and its lengths must add up to the file's size exactly.
 */
import type { Envelope } from './types.js';

export const V1_MAGIC = 'CSPOOL1 ';
export const V2_MAGIC = 'CSPOOL2 ';
/** Longest possible v2 trailer: "\nCSPOOL2 " + two 16-digit lengths + 8 hex digits + separators. */
export const MAX_TRAILER = 64;

export function encodeTrailer(bodyLen: number, jsonLen: number, crc: number): Buffer {
  return Buffer.from(`\n${V2_MAGIC}${bodyLen} ${jsonLen} ${(crc >>> 0).toString(16).padStart(8, '0')}\n`);
}

export interface Layout {
  version: 1 | 2;
  bodyOffset: number;
  bodyLen: number;
  jsonOffset: number;
  jsonLen: number;
  crc?: number;
}

/**
 * Where the parts of a v2 file lie, from its size and its last bytes (`tail`, up to MAX_TRAILER). Returns a
 * reason string when the file is not a complete v2 file.
 */
export function parseTrailer(fileSize: number, tail: Buffer): Layout | string {
  if (tail.length < 2 || tail[tail.length - 1] !== 0x0a) return 'no trailer (truncated or not a queue file)';
  const start = tail.lastIndexOf(0x0a, tail.length - 2);
  if (start < 0) return 'no trailer (truncated or not a queue file)';
  const line = tail.subarray(start + 1, tail.length - 1).toString('latin1');
  const m = /^CSPOOL2 (\d{1,15}) (\d{1,15}) ([0-9a-f]{8})$/.exec(line);
  if (!m) return 'no trailer (truncated or not a queue file)';
  const bodyLen = Number(m[1]);
  const jsonLen = Number(m[2]);
  const trailerLen = tail.length - start;
  if (bodyLen + jsonLen + trailerLen !== fileSize)
    return `lengths in the trailer (${bodyLen} + ${jsonLen}) do not add up to the file size ${fileSize}`;
  if (jsonLen < 2) return 'empty envelope';
  return { version: 2, bodyOffset: 0, bodyLen, jsonOffset: bodyLen, jsonLen, crc: parseInt(m[3], 16) };
}

/** Where the parts of a v1 file lie, from its first bytes. */
export function parseV1Header(fileSize: number, head: Buffer): Layout | string {
  const nl = head.indexOf(0x0a);
  if (nl < 0) return 'bad header';
  const line = head.subarray(0, nl).toString('latin1');
  if (!line.startsWith(V1_MAGIC)) return 'bad header';
  const len = Number(line.slice(V1_MAGIC.length));
  if (!Number.isSafeInteger(len) || len <= 0) return 'bad envelope length';
  const bodyOffset = nl + 1 + len + 1;
  if (bodyOffset > fileSize) return 'truncated envelope';
  return { version: 1, bodyOffset, bodyLen: fileSize - bodyOffset, jsonOffset: nl + 1, jsonLen: len };
}

/** Parses and checks an envelope against the file it came from. */
export function parseEnvelope(json: Buffer, id: string, layout: Layout): Envelope | string {
  let env: Envelope;
  try {
    env = JSON.parse(json.toString('utf8')) as Envelope;
  } catch (e) {
    return `unparseable envelope: ${(e as Error).message}`;
  }
  if (!env || typeof env !== 'object') return 'unparseable envelope';
  if (env.v !== 1) return `unsupported envelope version ${String(env.v)}`;
  if (env.id !== id) return `envelope id ${String(env.id)} does not match the file name`;
  if (!Array.isArray(env.rcpts) || !env.rcpts.length || typeof env.tenant !== 'string')
    return 'envelope without recipients or tenant';
  if (env.size !== layout.bodyLen) return `body is ${layout.bodyLen} bytes, the envelope says ${env.size}`;
  return env;
}
