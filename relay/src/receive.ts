/**
 * One DATA body, streamed into the spool as it arrives. The header section is held (up to MAX_HEAD bytes)
 * until its end is seen, because three decisions need it before the first byte can be written: the loop
 * check (Received count), the hand-off header (believed from a peer, stripped from anyone), and our own
 * Received line in front. After that every chunk goes straight to the spool writer, which writes at most
 * WRITE_CHUNK at a time; `for await` holds the socket while a write is pending, so memory per connection
 * stays bounded whatever the message size. The size limit is enforced as bytes arrive: past it nothing more
 * is written and the partial file is gone before the client hears 552.
 */
import type { Readable } from 'node:stream';
import { SmtpReplyError, reply } from './errors.js';
import type { Reservation, Spool, SpoolWriter } from './spool/disk.js';

/**
 * Longest header section held in memory; beyond it the message is treated as having no more header (the
 * loop check and the hand-off header look at this much). Bounds memory per connection in DATA.
 */
export const MAX_HEAD = 256 * 1024;
/** Bodies up to this size are kept in memory after acceptance for a fast first delivery attempt. */
export const MAX_CACHED_BODY = 128 * 1024;

/** Index just past the blank line ending the header section (CRLF CRLF or LF LF), or -1. */
export function findHeaderEnd(buf: Buffer, from = 0): number {
  for (let i = Math.max(0, from); i < buf.length - 1; i++) {
    if (buf[i] !== 0x0a) continue;
    if (buf[i + 1] === 0x0a) return i + 2;
    if (buf[i + 1] === 0x0d && buf[i + 2] === 0x0a) return i + 3;
  }
  return -1;
}

function hasEightBit(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] > 0x7f) return true;
  return false;
}

export interface ReceiveHooks {
  /**
   * Called once with the header section (up to and including its blank line, or all of it when the
   * message has none): returns the bytes to write in its place (our Received line, the header without any
   * hand-off field), or throws the reply to give.
   */
  head(head: Buffer): Buffer;
}

export interface Received {
  writer: SpoolWriter;
  /** Bytes that will be stored (what was written: prefix + rest). */
  size: number;
  eightBit: boolean;
  /** The stored message, when small enough to keep for the first attempt. */
  body?: Buffer;
}

/**
 * Reads `stream` to its end (always: the SMTP dialogue needs it consumed) and writes it into a new queue file
 * for `id`. Resolves with the unfinished writer (the caller builds the envelope and commits), or rejects
 * with the reply to give; the partial file is removed in that case and the reservation released.
 */
export async function receiveInto(
  stream: Readable & { sizeExceeded?: boolean },
  spool: Spool,
  id: string,
  reservation: Reservation,
  maxSize: number,
  hooks: ReceiveHooks,
): Promise<Received> {
  let failure: Error | undefined;
  let writer: SpoolWriter | undefined;
  let head: Buffer[] | undefined = [];
  let headLen = 0;
  /** The last 2 bytes of the header section so far (a blank line can straddle chunks). */
  let carry: Buffer = Buffer.alloc(0);
  let received = 0;
  let eightBit = false;
  let cache: Buffer[] | undefined = [];
  let cached = 0;
  const keep = (b: Buffer) => {
    if (!cache) return;
    cached += b.length;
    if (cached > MAX_CACHED_BODY) cache = undefined;
    else cache.push(b);
  };
  const write = async (b: Buffer) => {
    if (!b.length) return;
    if (!eightBit) eightBit = hasEightBit(b);
    keep(b);
    await writer!.append(b);
  };
  const startBody = async (all: Buffer, end: number) => {
    head = undefined;
    const prefix = hooks.head(all.subarray(0, end));
    writer = await spool.begin(id, reservation);
    await write(prefix);
    await write(all.subarray(end));
  };
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      if (failure) continue; // read on to the end of DATA, writing nothing
      received += chunk.length;
      try {
        if (received > maxSize || stream.sizeExceeded) throw reply.tooBig(maxSize);
        if (head) {
          // look for the blank line in the new bytes, with the last 2 of the old ones in front (one copy
          // of the chunk, not of everything held so far)
          const probe = carry.length ? Buffer.concat([carry, chunk]) : chunk;
          const at = findHeaderEnd(probe);
          const before = headLen - carry.length;
          carry = probe.subarray(-2);
          head.push(chunk);
          headLen += chunk.length;
          if (at >= 0 || headLen >= MAX_HEAD) {
            const all = Buffer.concat(head, headLen);
            await startBody(all, at >= 0 ? before + at : all.length);
          }
        } else await write(chunk);
      } catch (e) {
        failure = e as Error;
        head = undefined;
        cache = undefined;
      }
    }
  } catch (e) {
    // the stream itself failed: the client went away in the middle of DATA (smtp-server destroys it)
    failure ??= e as Error;
  }
  try {
    if (!failure && stream.sizeExceeded) failure = reply.tooBig(maxSize);
    if (!failure && head) {
      const all = Buffer.concat(head, headLen);
      await startBody(all, all.length);
    }
  } catch (e) {
    failure = e as Error;
  }
  if (failure || !writer) {
    if (writer) await writer.abort();
    else reservation.release();
    if (failure instanceof SmtpReplyError) throw failure;
    const e = new SmtpReplyError('ERR_LOCAL', 451, '4.3.0', 'Local error in processing, try again later');
    (e as { cause?: unknown }).cause = failure;
    throw e;
  }
  return {
    writer,
    size: writer.bodyBytes,
    eightBit,
    ...(cache ? { body: Buffer.concat(cache, cached) } : {}),
  };
}
