/**
 * The durable on-disk queue.
 *
 * Layout under the spool directory:
 *   tmp/<id>          being written; removed at start (never acknowledged)
 *   queue/<id>.msg    one immutable file per message (format.ts): raw message, envelope JSON, trailer
 *   state/<id>.json   mutable delivery state (per-recipient results, attempts, schedule); absent = nothing tried yet
 *   corrupt/<id>.msg  queue files found unreadable or damaged, set aside for a human (never delivered)
 *
 * A message is acknowledged (250) only after its file was written to tmp/ (every write checked), fdatasync'ed,
 * renamed into queue/, and the queue directory fsync'ed. Directory fsyncs are shared by every write that is
 * waiting for one (group commit), so concurrent sessions pay for one directory sync between them. Space for
 * messages still arriving is reserved (space.ts), so they cannot together fill the disk.
 */
import { promises as fsp, constants as fsc } from 'node:fs';
import path from 'node:path';
import { createReadStream } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import type { ScanWorkerData, ScanWorkerMessage } from './scan-worker.js';
import { Transform, type Readable } from 'node:stream';
import { crc32 } from 'node:zlib';
import { SpoolBackpressureError } from '../errors.js';
import {
  initialState,
  MAX_BUFFERED_BODY,
  SpoolCorruptError,
  type DeliveryState,
  type Envelope,
  type Quarantined,
  type QueuedEntry,
  type SpooledMessage,
  type SpoolStore,
} from './types.js';

import { MAX_TRAILER, parseEnvelope, parseTrailer, parseV1Header, V1_MAGIC, type Layout } from './format.js';
import { SpaceAccountant, type Reservation } from './space.js';
import { SpoolWriter, spoolWriteError } from './writer.js';

export * from './types.js';
export { SpoolWriter } from './writer.js';
export type { Reservation } from './space.js';

export const SPOOL_FORMAT = 2;
/** Batches (of up to 512 messages) each scan worker may read ahead of the consumer. */
const SCAN_BATCHES_AHEAD = 4;
/** Worker threads reading the spool at start, each its share of the files (the disk reads in parallel). */
const SCAN_WORKERS = 2;

export interface SpoolOptions {
  dir: string;
  maxMessages: number;
  minFreeBytes: number;
  now?: () => number;
}

/** Shares one fsync of a directory between every caller waiting for it. */
class DirSyncer {
  private waiting: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  private running = false;
  constructor(private readonly dir: string) {}
  sync(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      if (!this.running) void this.run();
    });
  }
  private async run(): Promise<void> {
    this.running = true;
    while (this.waiting.length) {
      const batch = this.waiting.splice(0);
      try {
        const fh = await fsp.open(this.dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
        try {
          await fh.sync();
        } finally {
          await fh.close();
        }
        for (const w of batch) w.resolve();
      } catch (e) {
        for (const w of batch) w.reject(e);
      }
    }
    this.running = false;
  }
}

export class Spool implements SpoolStore {
  readonly dir: string;
  private readonly tmpDir: string;
  private readonly queueDir: string;
  private readonly stateDir: string;
  private readonly queueSync: DirSyncer;
  private readonly stateSync: DirSyncer;
  private count = 0;
  private bytes = 0;
  readonly space: SpaceAccountant;
  /** Marks this run's temp state files, so the background cleanup leaves them alone. */
  private readonly runToken = randomBytes(4).toString('hex');
  /** Messages this run wrote while a scan runs (the scan may list them too; they are counted once). */
  private writtenDuringScan?: Set<string>;
  private readonly now: () => number;
  /** Queue files the last open() found unreadable, moved to `<dir>/corrupt/` (movedTo undefined if that failed). */
  readonly quarantined: Quarantined[] = [];

  constructor(private readonly opts: SpoolOptions) {
    this.dir = opts.dir;
    this.tmpDir = path.join(opts.dir, 'tmp');
    this.queueDir = path.join(opts.dir, 'queue');
    this.stateDir = path.join(opts.dir, 'state');
    this.queueSync = new DirSyncer(this.queueDir);
    this.stateSync = new DirSyncer(this.stateDir);
    this.now = opts.now ?? Date.now;
    this.space = new SpaceAccountant(opts.dir, opts.minFreeBytes);
  }

  /** Hot reload of the limits (queue.maxMessages, queue.minFreeBytes). */
  setLimits(maxMessages: number, minFreeBytes: number): void {
    this.opts.maxMessages = maxMessages;
    this.opts.minFreeBytes = minFreeBytes;
    this.space.minFreeBytes = minFreeBytes;
  }

  /** Transactions holding space (and a message slot) right now. */
  get reservations(): number {
    return this.space.live.size;
  }

  /** Messages currently in the spool. */
  get size(): number {
    return this.count;
  }
  get sizeBytes(): number {
    return this.bytes;
  }

  /**
   * Creates the layout and drops unacknowledged temp files. Cheap: no per-message work. Follow it with scan(),
   * which finds what is already queued.
   */
  async open(): Promise<void> {
    for (const d of [this.dir, this.tmpDir, this.queueDir, this.stateDir])
      await fsp.mkdir(d, { recursive: true });
    for (const f of await fsp.readdir(this.tmpDir)) await fsp.rm(path.join(this.tmpDir, f), { force: true });
    this.quarantined.length = 0;
    // from now until scan() ends, messages written are remembered so the scan counts them once
    this.writtenDuringScan = new Set();
    await this.space.refresh();
  }

  /**
   * Every queued message, read by a worker thread (scan-worker.ts) with synchronous calls and handed over in
   * batches, a few at a time, so the main thread stays free for SMTP and memory does not grow with the spool.
   * Also removes state files whose message is gone and temp state files of earlier runs.
   */
  async *scan(onCorrupt: (q: Quarantined) => void): AsyncIterable<QueuedEntry[]> {
    const inbox: { from: number; m: ScanWorkerMessage }[] = [];
    const unreadable: { file: string; reason: string }[] = [];
    let wake: (() => void) | undefined;
    let failed: Error | undefined;
    let running = SCAN_WORKERS;
    const workers = Array.from({ length: SCAN_WORKERS }, (_, share) => {
      const credits = new Int32Array(new SharedArrayBuffer(4));
      Atomics.store(credits, 0, SCAN_BATCHES_AHEAD);
      const worker = new Worker(new URL('./scan-worker.js', import.meta.url), {
        // a small young generation: the worker's garbage (parsed envelopes) is collected often, so its heap
        // stays small however large the spool
        resourceLimits: { maxYoungGenerationSizeMb: 4 },
        workerData: {
          share,
          workers: SCAN_WORKERS,
          dir: this.dir,
          runToken: this.runToken,
          credits,
        } satisfies ScanWorkerData,
      });
      worker.on('message', (m: ScanWorkerMessage) => {
        inbox.push({ from: share, m });
        wake?.();
      });
      worker.on('error', (e) => {
        failed ??= e;
        wake?.();
      });
      worker.on('exit', () => {
        running--;
        wake?.();
      });
      return { worker, credits, done: false };
    });
    try {
      for (;;) {
        while (!inbox.length && !failed && running > 0) await new Promise<void>((r) => (wake = r));
        wake = undefined;
        const next = inbox.shift();
        if (!next) {
          if (failed) throw failed;
          if (workers.every((w) => w.done)) break;
          throw new Error('the spool scan stopped early');
        }
        const { from, m } = next;
        if ('done' in m) {
          workers[from].done = true;
          if (workers.every((w) => w.done)) break;
          continue;
        }
        if ('error' in m) throw new Error(`spool scan: ${m.error}`);
        for (const u of m.unreadable) if (unreadable.length < 100) unreadable.push(u);
        for (const q of m.corrupt) {
          this.quarantined.push(q);
          if (this.quarantined.length > 1000) this.quarantined.shift();
          onCorrupt(q);
        }
        const out: QueuedEntry[] = [];
        for (let i = 0; i < m.ids.length; i++) {
          // written by this run since open(): counted (and known to the engine) already
          if (this.writtenDuringScan?.has(m.ids[i])) continue;
          this.count++;
          this.bytes += m.size[i];
          out.push({
            id: m.ids[i],
            nextAt: m.nextAt[i],
            arrivedAt: m.arrivedAt[i],
            size: m.size[i],
            attempts: m.attempts[i],
            tenant: m.tenants[i],
            domains: m.domains[i] ? m.domains[i].split(',') : [],
            dsn: m.dsn[i] === 1,
          });
        }
        if (out.length) yield out;
        Atomics.add(workers[from].credits, 0, 1);
        Atomics.notify(workers[from].credits, 0);
      }
      if (unreadable.length)
        throw new Error(
          `${unreadable.length} queue file(s) could not be read and were left in place (first: ${unreadable[0].file}: ${unreadable[0].reason})`,
        );
    } finally {
      this.writtenDuringScan = undefined;
      await Promise.all(workers.map((w) => w.worker.terminate()));
    }
  }

  async load(id: string): Promise<SpooledMessage> {
    const { env, bodyOffset, crc32 } = await this.readEnvelope(id);
    const state = (await this.readState(id)) ?? initialState(env, this.now());
    return { env, state, bodyOffset, ...(crc32 !== undefined ? { crc32 } : {}) };
  }

  /** A queue file that cannot be read: moved to corrupt/ for a human, out of the scheduler's way. */
  private async quarantine(f: string, reason: string): Promise<Quarantined> {
    const aside = path.join(this.dir, 'corrupt', f);
    await fsp.mkdir(path.dirname(aside), { recursive: true }).catch(() => undefined);
    const moved = await fsp.rename(path.join(this.queueDir, f), aside).then(
      () => true,
      () => false,
    );
    const q: Quarantined = { file: f, reason, movedTo: moved ? aside : undefined };
    this.quarantined.push(q);
    if (this.quarantined.length > 1000) this.quarantined.shift();
    return q;
  }

  async moveAside(id: string, size: number, reason: string): Promise<Quarantined> {
    const q = await this.quarantine(`${id}.msg`, reason);
    await fsp.rm(path.join(this.stateDir, `${id}.json`), { force: true });
    this.count--;
    this.bytes -= size;
    return q;
  }

  /** Throws a 452 when a message of `size` bytes could not be accepted now (no reservation is made). */
  async checkCapacity(size = 0): Promise<void> {
    await this.space.refresh(50);
    this.assertCapacity(size, false);
  }

  private assertCapacity(size: number, internal: boolean): void {
    if (!internal && this.count + this.space.live.size >= this.opts.maxMessages)
      throw new SpoolBackpressureError(`Queue full (${this.count} messages), try again later`);
    if (this.space.available() - size < 0)
      throw new SpoolBackpressureError('Insufficient system storage, try again later');
  }

  /**
   * Holds `bytes` of disk space and one message slot for a transaction (released by the writer, or by the
   * caller when no message follows). `internal` is for messages the relay generates (DSNs): they replace a
   * message about to leave the queue, so they are not held to maxMessages; free disk space still applies.
   */
  async reserve(bytes: number, opts: { internal?: boolean } = {}): Promise<Reservation> {
    await this.space.refresh(50);
    if (opts.internal) {
      const r = this.space.tryReserveInternal(bytes);
      if (!r) throw new SpoolBackpressureError('Insufficient system storage, try again later');
      return r;
    }
    this.assertCapacity(bytes, false);
    return this.space.tryReserve(bytes)!; // checked above, with no await in between
  }

  /** Starts a queue file for message `id` within `reservation`. */
  async begin(id: string, reservation: Reservation): Promise<SpoolWriter> {
    const tmp = path.join(this.tmpDir, id);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(tmp, 'wx');
    } catch (e) {
      reservation.release();
      this.onWriteError(e);
      throw spoolWriteError(e);
    }
    return new SpoolWriter(
      id,
      tmp,
      fh,
      reservation,
      {
        publish: async (t, i) => {
          // before the rename: from then on the scan may list it, and it must not count it again
          this.writtenDuringScan?.add(i);
          await fsp.rename(t, path.join(this.queueDir, `${i}.msg`));
          await this.queueSync.sync();
        },
        cleanup: async (t, i) => {
          await fsp.rm(t, { force: true }).catch(() => undefined);
          // If the rename happened but the directory sync failed, the file may or may not survive: remove it
          // so that a message the client was told to retry is not also delivered.
          await fsp.rm(path.join(this.queueDir, `${i}.msg`), { force: true }).catch(() => undefined);
        },
        committed: (env) => {
          this.count++;
          this.bytes += env.size;
        },
      },
      (e) => this.onWriteError(e),
    );
  }

  /** Write failures counted by errno code (metrics). */
  readonly writeErrors = new Map<string, number>();
  private onWriteError(e: unknown): void {
    const code = (e as NodeJS.ErrnoException).code ?? 'other';
    this.writeErrors.set(code, (this.writeErrors.get(code) ?? 0) + 1);
    if (code === 'ENOSPC' || code === 'EDQUOT') this.space.invalidate();
  }

  /**
   * Writes a whole message durably (DSNs, tests). Resolves only when the message will survive a crash.
   * `raw` is the message as it will be delivered.
   */
  async write(env: Envelope, raw: Buffer[], opts: { internal?: boolean } = {}): Promise<number> {
    const reservation = await this.reserve(env.size, opts);
    const w = await this.begin(env.id, reservation);
    try {
      for (const b of raw) await w.append(b);
      return (await w.commit(env)).bodyOffset;
    } finally {
      await w.abort();
    }
  }

  private async readEnvelope(id: string): Promise<{ env: Envelope; bodyOffset: number; crc32?: number }> {
    const fh = await fsp.open(path.join(this.queueDir, `${id}.msg`), 'r');
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

  private async readState(id: string): Promise<DeliveryState | undefined> {
    try {
      const s = JSON.parse(
        await fsp.readFile(path.join(this.stateDir, `${id}.json`), 'utf8'),
      ) as DeliveryState;
      return s.v === 1 ? s : undefined;
    } catch {
      return undefined;
    }
  }

  /** Checks that the stored body has exactly the envelope's length; returns the file handle. */
  private async openChecked(msg: SpooledMessage): Promise<fsp.FileHandle> {
    const id = msg.env.id;
    const fh = await fsp.open(path.join(this.queueDir, `${id}.msg`), 'r');
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

  async readBody(msg: SpooledMessage): Promise<Buffer | Readable> {
    const fh = await this.openChecked(msg);
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

  async readHead(msg: SpooledMessage, maxBytes: number): Promise<Buffer> {
    const fh = await this.openChecked(msg);
    try {
      return await readFully(fh, msg.bodyOffset, Math.min(maxBytes, msg.env.size), msg.env.id);
    } finally {
      await fh.close();
    }
  }

  /** Durably records delivery state (temp file, fsync, rename, directory fsync shared with other writers). */
  async saveState(id: string, state: DeliveryState): Promise<void> {
    const file = path.join(this.stateDir, `${id}.json`);
    const tmp = `${file}.${this.runToken}.tmp`;
    const fh = await fsp.open(tmp, 'w');
    try {
      await fh.writeFile(JSON.stringify(state));
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, file);
    await this.stateSync.sync();
  }

  /** Removes a message whose every recipient reached a final state. */
  async remove(id: string, size: number): Promise<void> {
    await fsp.rm(path.join(this.queueDir, `${id}.msg`), { force: true });
    await fsp.rm(path.join(this.stateDir, `${id}.json`), { force: true });
    this.count--;
    this.bytes -= size;
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
function crcChecked(id: string, size: number, expected: number): Transform {
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
