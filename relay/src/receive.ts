/**
 * One DATA body, streamed into the spool as it arrives. The header section is held (up to MAX_HEAD bytes)
 * until its end is seen, because three decisions need it before the first byte can be written: the loop
 * check (Received count), the hand-off header (believed from a peer, stripped from anyone), and our own
 * Received line in front. After that every chunk goes straight to the spool writer, which writes at most
 * WRITE_CHUNK at a time; `for await` holds the socket while a write is pending, so memory per connection
 * stays bounded whatever the message size. The size limit is enforced as bytes arrive: past it nothing more
 * is written and the partial file is gone before the client hears 552.
 *
 * The header limits (limits.maxHeaderLine, limits.maxHeaderSize) are enforced the same way by a
 * HeaderScanner that sees every byte of the header section, also past MAX_HEAD: a header section larger
 * than what is held is counted while it streams to disk, never held.
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

export interface HeaderLimits {
  /** Longest header line in octets, its CRLF (or bare LF) not counted. */
  maxHeaderLine: number;
  /** Largest header section in octets: every header line with its line ending, not the blank line. */
  maxHeaderSize: number;
}

/** RFC 5322's line limit, and 1 MiB of header section (the config defaults). */
export const DEFAULT_HEADER_LIMITS: HeaderLimits = { maxHeaderLine: 998, maxHeaderSize: 1024 * 1024 };

const LF = 0x0a;
const CR = 0x0d;
const isWsp = (b: number) => b === 0x20 || b === 0x09;
/** A character of a header field name (RFC 5322 ftext: printable US-ASCII except the colon). */
const isFtext = (b: number) => b >= 33 && b <= 126 && b !== 0x3a;

/** Where the scanner is in the current line. */
const enum At {
  /** At the start of a line. */
  Start,
  /** After a CR at the start of a line: an empty line if LF follows. */
  StartCr,
  /** In what may be a field name (no colon yet). */
  Name,
  /** In white space after a field name, before its colon (obsolete syntax). */
  NameWsp,
  /** In a header field line (or a continuation line) after its colon: the limits apply. */
  Field,
}

/**
 * Follows the header section of a message fed to it chunk by chunk, holding nothing but counters. The
 * section ends after its empty line (CRLF or a bare LF), or, as in Postfix, at the start of the first line
 * that is neither a header field (`name:`) nor a continuation of one (leading white space): that line is
 * body. A header line or the section over its limit is refused with 552 5.6.0 as soon as the bytes show
 * it, without waiting for the line's end.
 */
export class HeaderScanner {
  /** Octets of the complete header lines so far, line endings included. */
  size = 0;
  /**
   * Offset from the start of the message where the header section ends, once known (past its empty line,
   * or at the start of the first line that is not part of it). The scanner ignores what follows.
   */
  end?: number;
  /** Octets pushed before the current chunk. */
  private seen = 0;
  /** Offset of the current line from the start of the message. */
  private lineStart = 0;
  /** Octets of the current line so far (a CR at its end included: it may be half of a CRLF). */
  private line = 0;
  /** The last octet seen was CR. */
  private cr = false;
  private at = At.Start;
  /** A header field has been seen (a line with leading white space continues it). */
  private fields = false;

  constructor(private readonly limits: HeaderLimits) {}

  get done(): boolean {
    return this.end !== undefined;
  }

  /** Scans the next bytes of the message. Throws the reply when a limit is exceeded. */
  push(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length && this.end === undefined) {
      if (this.at === At.Field) {
        const lf = chunk.indexOf(LF, i);
        const stop = lf < 0 ? chunk.length : lf;
        if (stop > i) this.cr = chunk[stop - 1] === CR;
        this.line += stop - i;
        this.check();
        if (lf < 0) break;
        this.size += this.line + 1;
        if (this.size > this.limits.maxHeaderSize) throw reply.headerTooBig(this.limits.maxHeaderSize);
        this.fields = true;
        this.newLine(this.seen + lf + 1);
        i = lf + 1;
        continue;
      }
      const b = chunk[i];
      switch (this.at) {
        case At.Start:
          if (b === LF) this.end = this.seen + i + 1;
          else if (b === CR) this.at = At.StartCr;
          else if (isWsp(b) && this.fields) this.at = At.Field;
          else if (isFtext(b)) this.at = At.Name;
          else this.end = this.lineStart;
          break;
        case At.StartCr:
          this.end = b === LF ? this.seen + i + 1 : this.lineStart;
          break;
        case At.Name:
          if (b === 0x3a) this.at = At.Field;
          else if (isWsp(b)) this.at = At.NameWsp;
          else if (!isFtext(b)) this.end = this.lineStart;
          break;
        case At.NameWsp:
          if (b === 0x3a) this.at = At.Field;
          else if (!isWsp(b)) this.end = this.lineStart;
          break;
      }
      if (this.end !== undefined) break;
      this.line++;
      i++;
      if (this.at === At.Field) this.check(); // a long field name counts once its colon shows it is one
    }
    this.seen += chunk.length;
  }

  private check(): void {
    const { maxHeaderLine, maxHeaderSize } = this.limits;
    const len = this.line - (this.cr ? 1 : 0);
    if (len > maxHeaderLine) throw reply.headerLineTooLong(maxHeaderLine);
    if (this.size + len > maxHeaderSize) throw reply.headerTooBig(maxHeaderSize);
  }

  private newLine(start: number): void {
    this.lineStart = start;
    this.line = 0;
    this.cr = false;
    this.at = At.Start;
  }
}

function hasEightBit(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] > 0x7f) return true;
  return false;
}

export interface ReceiveHooks {
  /**
   * Called once with the header section as HeaderScanner finds it (up to and including its empty line, or
   * up to the first line that is not a header field; all of the message when it is all header; its first
   * MAX_HEAD bytes when it is longer): returns the bytes to write in its place (our Received line, the
   * header without any hand-off field), or throws the reply to give.
   */
  head(head: Buffer): Buffer;
  /** Sees every byte after the header section, in order, as it is written (the DKIM body hash). */
  body?(chunk: Buffer): void;
  /** Limits on the header section (default DEFAULT_HEADER_LIMITS); a config's `limits` will do. */
  headerLimits?: HeaderLimits;
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
  const scanner = new HeaderScanner(hooks.headerLimits ?? DEFAULT_HEADER_LIMITS);
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
    hooks.body?.(all.subarray(end));
    await write(all.subarray(end));
  };
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      if (failure) continue; // read on to the end of DATA, writing nothing
      received += chunk.length;
      try {
        if (received > maxSize || stream.sizeExceeded) throw reply.tooBig(maxSize);
        // past MAX_HEAD the header section streams to disk like a body, still scanned for its limits
        if (!scanner.done) scanner.push(chunk);
        if (head) {
          head.push(chunk);
          headLen += chunk.length;
          if (scanner.end !== undefined || headLen >= MAX_HEAD) {
            const all = Buffer.concat(head, headLen);
            await startBody(all, scanner.end ?? all.length);
          }
        } else {
          hooks.body?.(chunk);
          await write(chunk);
        }
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
