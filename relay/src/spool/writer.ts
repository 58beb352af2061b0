/**
 * Writes one queue file as the message arrives: chunks are coalesced up to WRITE_CHUNK and written at known
 * offsets, every write's byte count is checked (a short write is retried for the rest; no progress is an
 * error), and the file only enters queue/ complete: trailer written, fdatasync, rename, directory fsync.
 * Any failure removes the partial file; nothing partial is ever renamed.
 */
import { promises as fsp } from 'node:fs';
import { crc32 } from 'node:zlib';
import { SpoolBackpressureError, SpoolUnhealthyError, type SmtpReplyError } from '../errors.js';
import { encodeTrailer } from './format.js';
import type { Reservation } from './space.js';
import type { Envelope } from './types.js';

export const WRITE_CHUNK = 64 * 1024;

/** Writes all of `buf` at `pos`, or throws. */
export async function writeAllAt(fh: fsp.FileHandle, buf: Buffer, pos: number): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, pos + off);
    if (bytesWritten <= 0) {
      const e = new Error(`write made no progress at offset ${pos + off}`) as NodeJS.ErrnoException;
      e.code = 'ENOSPC';
      throw e;
    }
    off += bytesWritten;
  }
}

/** The SMTP reply for a failed spool write: 452 4.3.1 when the disk is full, else 451 4.3.0. */
export function spoolWriteError(e: unknown): SmtpReplyError {
  if (e instanceof SpoolBackpressureError || e instanceof SpoolUnhealthyError) return e;
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT')
    return new SpoolBackpressureError('Insufficient system storage, try again later');
  return new SpoolUnhealthyError('Local error in processing, try again later', e);
}

export interface WriterHooks {
  /** Renames the finished temp file into queue/ and syncs the directory (shared group commit). */
  publish(tmp: string, id: string): Promise<void>;
  /** Removes whatever is left of the message after a failure. */
  cleanup(tmp: string, id: string): Promise<void>;
  /** Called once the message is durable. */
  committed(env: Envelope): void;
}

export class SpoolWriter {
  private pos = 0;
  private crc = 0;
  private buf: Buffer[] = [];
  private bufLen = 0;
  private done = false;
  /** The first failure; every later call rethrows it. */
  failure?: SmtpReplyError;

  constructor(
    readonly id: string,
    private readonly tmp: string,
    private fh: fsp.FileHandle | undefined,
    private readonly reservation: Reservation,
    private readonly hooks: WriterHooks,
    private readonly onWriteError: (e: unknown) => void,
  ) {}

  /** Body bytes taken so far (buffered or written). */
  get bodyBytes(): number {
    return this.pos + this.bufLen;
  }

  /** Adds body bytes; resolves once they are written or buffered. Throws the reply to give on failure. */
  async append(chunk: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.done) throw new Error('writer already finished');
    this.crc = crc32(chunk, this.crc);
    this.buf.push(chunk);
    this.bufLen += chunk.length;
    if (this.bufLen >= WRITE_CHUNK) await this.flush();
  }

  private async flush(): Promise<void> {
    if (!this.bufLen) return;
    const data = this.buf.length === 1 ? this.buf[0] : Buffer.concat(this.buf, this.bufLen);
    this.buf = [];
    this.bufLen = 0;
    await this.writeRaw(data);
  }

  private async writeRaw(data: Buffer): Promise<void> {
    try {
      if (!this.reservation.wrote(data.length))
        throw new SpoolBackpressureError('Insufficient system storage, try again later');
      await writeAllAt(this.fh!, data, this.pos);
      this.pos += data.length;
    } catch (e) {
      await this.fail(e);
      throw this.failure;
    }
  }

  private async fail(e: unknown): Promise<void> {
    if (!this.failure) {
      this.failure = spoolWriteError(e);
      this.onWriteError(e);
    }
    await this.abort();
  }

  /**
   * Writes the envelope and trailer, syncs and publishes the file. Resolves when the message will survive a
   * crash; `env.size` must equal the body bytes appended.
   */
  async commit(env: Envelope): Promise<{ bodyOffset: number; crc32: number }> {
    if (this.failure) throw this.failure;
    if (env.size !== this.bodyBytes)
      throw new Error(`envelope size ${env.size} differs from the ${this.bodyBytes} bytes written`);
    const bodyLen = this.bodyBytes;
    const json = Buffer.from(JSON.stringify(env));
    // what is still buffered, the envelope and the trailer go in one write (a small message is one write)
    const trailer = encodeTrailer(bodyLen, json.length, this.crc);
    this.buf.push(json, trailer);
    this.bufLen += json.length + trailer.length;
    await this.flush();
    try {
      await this.fh!.datasync();
      const fh = this.fh!;
      this.fh = undefined;
      await fh.close();
      await this.hooks.publish(this.tmp, this.id);
    } catch (e) {
      await this.fail(e);
      throw this.failure;
    }
    this.done = true;
    this.reservation.release();
    this.hooks.committed(env);
    return { bodyOffset: 0, crc32: this.crc >>> 0 };
  }

  /** Gives up: closes and removes the partial file, releases the reservation. Idempotent. */
  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    this.buf = [];
    this.bufLen = 0;
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close().catch(() => undefined);
    await this.hooks.cleanup(this.tmp, this.id).catch(() => undefined);
    this.reservation.release();
  }
}
