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
 *
 * This file is the directory I/O. Reading one queue file (envelope, body with its CRC-32 check) is in
 * reader.ts, writing one in writer.ts, the file format in format.ts; the start-up scan's worker in
 * scan-worker.ts.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import type { Readable } from 'node:stream';
import type { ScanWorkerData, ScanWorkerMessage } from './scan-worker.js';
import { SpoolBackpressureError } from '../errors.js';
import {
  initialState,
  type DeliveryState,
  type Envelope,
  type Quarantined,
  type QueuedEntry,
  type SpooledMessage,
  type SpoolStore,
} from './types.js';
import { DirSyncer } from './dir-sync.js';
import { readBody, readEnvelope, readHead } from './reader.js';
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

  /** The queue file of message `id`. */
  private msgFile(id: string): string {
    return path.join(this.queueDir, `${id}.msg`);
  }

  async load(id: string): Promise<SpooledMessage> {
    const { env, bodyOffset, crc32 } = await readEnvelope(this.msgFile(id), id);
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

  /** The body, its length and checksum checked (reader.ts): a Buffer when small, else a stream. */
  readBody(msg: SpooledMessage): Promise<Buffer | Readable> {
    return readBody(this.msgFile(msg.env.id), msg);
  }

  readHead(msg: SpooledMessage, maxBytes: number): Promise<Buffer> {
    return readHead(this.msgFile(msg.env.id), msg, maxBytes);
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
