/**
 * Reading one queue file (format.ts): its envelope, found through the v2 trailer or the v1 header, and its
 * body, whose length and CRC-32 are checked before (buffered) or while (streamed) it is handed out. The
 * counterpart of writer.ts; the spool directory (disk.ts) calls these with the file's path.
 */
import { promises as fsp, createReadStream } from 'node:fs';
import { Transform, type Readable } from 'node:stream';
import { crc32 } from 'node:zlib';
import { MAX_TRAILER, parseEnvelope, parseTrailer, parseV1Header, V1_MAGIC, type Layout } from './format.js';
import { MAX_BUFFERED_BODY, SpoolCorruptError, type Envelope, type SpooledMessage } from './types.js';

/**
 * Reads the envelope of queue file `file` (message `id`): from the v2 trailer, or a v1 header, checked
 * against the file's size. Throws SpoolCorruptError when the file is not a complete queue file.
 */
export async function readEnvelope(
  file: string,
  id: string,
): Promise<{ env: Envelope; bodyOffset: number; crc32?: number }> {
  const fh = await fsp.open(file, 'r');
  try {
    const { size } = await fh.stat();
    if (size === 0) throw new SpoolCorruptError(id, 'empty file');
    const n = Math.min(size, MAX_TRAILER);
    const edge = Buffer.alloc(n);
    let layout: Layout | string = parseTrailer(size, await readExactly(fh, edge, size - n, id));
    if (typeof layout === 'string') {
      const head = await readExactly(fh, Buffer.alloc(n), 0, id);
      if (head.subarray(0, V1_MAGIC.length).toString('latin1') === V1_MAGIC)
        layout = parseV1Header(size, head);
    }
    if (typeof layout === 'string') throw new SpoolCorruptError(id, layout);
    const json = await readExactly(fh, Buffer.alloc(layout.jsonLen), layout.jsonOffset, id);
    const env = parseEnvelope(json, id, layout);
    if (typeof env === 'string') throw new SpoolCorruptError(id, env);
    return {
      env,
      bodyOffset: layout.bodyOffset,
      ...(layout.crc !== undefined ? { crc32: layout.crc } : {}),
    };
  } finally {
    await fh.close();
  }
}

/** Checks that the stored body has exactly the envelope's length; returns the file handle. */
async function openChecked(file: string, msg: SpooledMessage): Promise<fsp.FileHandle> {
  const id = msg.env.id;
  const fh = await fsp.open(file, 'r');
  try {
    const { size } = await fh.stat();
    if (size - msg.bodyOffset < msg.env.size)
      throw new SpoolCorruptError(
        id,
        `body is ${size - msg.bodyOffset} bytes, the envelope says ${msg.env.size}`,
      );
    return fh;
  } catch (e) {
    await fh.close();
    throw e;
  }
}

/**
 * The body of `msg` from its queue file `file`: a Buffer up to MAX_BUFFERED_BODY, else a stream. Its length
 * and (v2) CRC-32 are checked: a damaged body throws SpoolCorruptError, before any byte for a buffer or a
 * stream of a v2 file, at the end for a stream that changes while read.
 */
export async function readBody(file: string, msg: SpooledMessage): Promise<Buffer | Readable> {
  const fh = await openChecked(file, msg);
  if (msg.env.size > MAX_BUFFERED_BODY) {
    // Check the whole body before the first byte leaves: a damaged copy is then moved aside by the engine
    // instead of failing every attempt half-way (one extra sequential read, usually from the page cache).
    if (msg.crc32 !== undefined) {
      try {
        await verifyCrc(fh, msg);
      } catch (e) {
        await fh.close();
        throw e;
      }
    }
    const s = createReadStream('', {
      fd: fh,
      start: msg.bodyOffset,
      end: msg.bodyOffset + msg.env.size - 1,
      autoClose: true,
      highWaterMark: 64 * 1024,
    });
    if (msg.crc32 === undefined) return s;
    const checked = crcChecked(msg.env.id, msg.env.size, msg.crc32);
    s.on('error', (e) => checked.destroy(e));
    checked.on('close', () => s.destroy());
    return s.pipe(checked);
  }
  let buf: Buffer;
  try {
    buf = await readFully(fh, msg.bodyOffset, msg.env.size, msg.env.id);
  } finally {
    await fh.close();
  }
  if (msg.crc32 !== undefined && crc32(buf) >>> 0 !== msg.crc32)
    throw new SpoolCorruptError(msg.env.id, 'body checksum does not match (damaged on disk)');
  return buf;
}

/** The first `maxBytes` of the body of `msg` (its length checked, not its CRC). */
export async function readHead(file: string, msg: SpooledMessage, maxBytes: number): Promise<Buffer> {
  const fh = await openChecked(file, msg);
  try {
    return await readFully(fh, msg.bodyOffset, Math.min(maxBytes, msg.env.size), msg.env.id);
  } finally {
    await fh.close();
  }
}

async function readFully(fh: fsp.FileHandle, offset: number, len: number, id: string): Promise<Buffer> {
  const buf = Buffer.alloc(len);
  let off = 0;
  while (off < len) {
    const { bytesRead } = await fh.read(buf, off, len - off, offset + off);
    if (bytesRead === 0) throw new SpoolCorruptError(id, `body ended after ${off} of ${len} bytes`);
    off += bytesRead;
  }
  return buf;
}

async function readExactly(fh: fsp.FileHandle, buf: Buffer, pos: number, id: string): Promise<Buffer> {
  let off = 0;
  while (off < buf.length) {
    const { bytesRead } = await fh.read(buf, off, buf.length - off, pos + off);
    if (bytesRead === 0) throw new SpoolCorruptError(id, 'file shorter than it says');
    off += bytesRead;
  }
  return buf;
}

/**
 * Passes a streamed body through, holding back its last chunk until the checksum and length are known to
 * match: a damaged body errors the stream before its end, so the receiver never gets a complete message.
 */
export function crcChecked(id: string, size: number, expected: number): Transform {
  let crc = 0;
  let n = 0;
  let held: Buffer | undefined;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      crc = crc32(chunk, crc);
      n += chunk.length;
      const out = held;
      held = chunk;
      cb(null, out);
    },
    flush(cb) {
      if (n !== size || crc >>> 0 !== expected)
        return cb(
          new SpoolCorruptError(
            id,
            n !== size
              ? `body is ${n} bytes, the envelope says ${size}`
              : 'body checksum does not match (damaged on disk)',
          ),
        );
      cb(null, held);
    },
  });
}

/** Reads the body in 64 KiB steps and compares its CRC-32 with the stored one (bounded memory). */
async function verifyCrc(fh: fsp.FileHandle, msg: SpooledMessage): Promise<void> {
  const buf = Buffer.alloc(64 * 1024);
  let crc = 0;
  for (let off = 0; off < msg.env.size;) {
    const want = Math.min(buf.length, msg.env.size - off);
    const { bytesRead } = await fh.read(buf, 0, want, msg.bodyOffset + off);
    if (bytesRead === 0)
      throw new SpoolCorruptError(msg.env.id, `body ended after ${off} of ${msg.env.size} bytes`);
    crc = crc32(buf.subarray(0, bytesRead), crc);
    off += bytesRead;
  }
  if (crc >>> 0 !== msg.crc32)
    throw new SpoolCorruptError(msg.env.id, 'body checksum does not match (damaged on disk)');
}
