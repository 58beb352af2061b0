/**
 * The durable on-disk queue.
 *
 * Layout under the spool directory:
 *   tmp/<id>          being written; removed at start (never acknowledged)
 *   queue/<id>.msg    one immutable file per message: `CSPOOL1 <n>\n` + n bytes of JSON envelope + `\n` + raw message
 *   state/<id>.json   mutable delivery state (per-recipient results, attempts, schedule); absent = nothing tried yet
 *   corrupt/<id>.msg  queue files found unreadable at start, set aside for a human (never delivered)
 *
 * A message is acknowledged (250) only after its file was written to tmp/, fdatasync'ed, renamed into queue/,
 * and the queue directory fsync'ed. Directory fsyncs are shared by every write that is waiting for one
 * (group commit), so concurrent sessions pay for one directory sync between them.
 */
import { promises as fsp, constants as fsc } from 'node:fs';
import path from 'node:path';
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { SpoolBackpressureError, SpoolUnhealthyError } from '../errors.js';
import {
  initialState,
  MAX_BUFFERED_BODY,
  QUEUE_ID_RE,
  SpoolCorruptError,
  type DeliveryState,
  type Envelope,
  type Quarantined,
  type SpooledMessage,
  type SpoolStore,
} from './types.js';

export * from './types.js';

export const SPOOL_FORMAT = 1;
const MAGIC = 'CSPOOL1 ';

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
  private freeBytes = Number.POSITIVE_INFINITY;
  private freeCheckedAt = 0;
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
  }

  /** Hot reload of the limits (queue.maxMessages, queue.minFreeBytes). */
  setLimits(maxMessages: number, minFreeBytes: number): void {
    this.opts.maxMessages = maxMessages;
    this.opts.minFreeBytes = minFreeBytes;
  }

  /** Messages currently in the spool. */
  get size(): number {
    return this.count;
  }
  get sizeBytes(): number {
    return this.bytes;
  }

  /** Creates the layout and drops unacknowledged temp files. Cheap: no per-message work (see scan()). */
  async open(): Promise<void> {
    for (const d of [this.dir, this.tmpDir, this.queueDir, this.stateDir])
      await fsp.mkdir(d, { recursive: true });
    for (const f of await fsp.readdir(this.tmpDir)) await fsp.rm(path.join(this.tmpDir, f), { force: true });
    this.quarantined.length = 0;
    await this.refreshFree(true);
  }

  async *scan(onCorrupt: (q: Quarantined) => void): AsyncIterable<SpooledMessage> {
    const ids = new Set<string>();
    const dir = await fsp.opendir(this.queueDir);
    for await (const ent of dir) {
      const f = ent.name;
      if (!f.endsWith('.msg')) continue;
      const id = f.slice(0, -4);
      if (!QUEUE_ID_RE.test(id)) continue;
      let msg: SpooledMessage;
      try {
        msg = await this.load(id);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
        onCorrupt(await this.quarantine(f, (e as Error).message));
        continue;
      }
      ids.add(id);
      this.count++;
      this.bytes += msg.env.size;
      yield msg;
    }
    for (const f of await fsp.readdir(this.stateDir)) {
      const id = f.replace(/\.json(\.tmp)?$/, '');
      if (!ids.has(id) || f.endsWith('.tmp')) await fsp.rm(path.join(this.stateDir, f), { force: true });
    }
  }

  async load(id: string): Promise<SpooledMessage> {
    const { env, bodyOffset } = await this.readEnvelope(id);
    const state = (await this.readState(id)) ?? initialState(env, this.now());
    return { env, state, bodyOffset };
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

  private async refreshFree(force = false): Promise<void> {
    const now = Date.now();
    if (!force && now - this.freeCheckedAt < 1000) return;
    this.freeCheckedAt = now;
    try {
      const s = await fsp.statfs(this.dir);
      this.freeBytes = s.bavail * s.bsize;
    } catch {
      /* keep the last figure */
    }
  }

  /** Throws a 452 when a message of `size` bytes may not be accepted now. Cheap; call at MAIL/RCPT. */
  async checkCapacity(size = 0): Promise<void> {
    await this.refreshFree();
    this.assertCapacity(size);
  }

  /** Synchronous, so that write() can check and reserve a slot with no await in between. */
  private assertCapacity(size: number, internal = false): void {
    if (!internal && this.count >= this.opts.maxMessages)
      throw new SpoolBackpressureError(`Queue full (${this.count} messages), try again later`);
    if (this.freeBytes - size < this.opts.minFreeBytes)
      throw new SpoolBackpressureError('Insufficient system storage, try again later');
  }

  /**
   * Writes a new message durably. Resolves only when the message will survive a crash. `internal` is for
   * messages the relay generates (DSNs).
   * `raw` is the message as it will be delivered (our Received header already prepended).
   */
  async write(env: Envelope, raw: Buffer[], opts: { internal?: boolean } = {}): Promise<number> {
    await this.refreshFree();
    // The relay's own DSNs are not held to maxMessages: each replaces a message that is about to leave the
    // queue, and refusing it would keep that message (and its slot) forever. Free disk space still applies.
    this.assertCapacity(env.size, opts.internal);
    this.count++; // reserve the slot in the same synchronous step as the check, so concurrent writers see it
    const json = Buffer.from(JSON.stringify(env));
    const head = Buffer.from(`${MAGIC}${json.length}\n`);
    const tmp = path.join(this.tmpDir, env.id);
    const final = path.join(this.queueDir, `${env.id}.msg`);
    let fh: fsp.FileHandle | undefined;
    try {
      fh = await fsp.open(tmp, 'wx');
      await fh.writev([head, json, Buffer.from('\n'), ...raw]);
      await fh.datasync();
      await fh.close();
      fh = undefined;
      await fsp.rename(tmp, final);
      await this.queueSync.sync();
    } catch (e) {
      this.count--;
      await fh?.close().catch(() => undefined);
      await fsp.rm(tmp, { force: true }).catch(() => undefined);
      // If the rename happened but the directory sync failed, the file may or may not survive: remove it so
      // that a message the client was told to retry is not also delivered.
      await fsp.rm(final, { force: true }).catch(() => undefined);
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOSPC' || code === 'EDQUOT') {
        this.freeCheckedAt = 0;
        throw new SpoolBackpressureError('Insufficient system storage, try again later');
      }
      throw new SpoolUnhealthyError('Local error in processing, try again later', e);
    }
    this.bytes += env.size;
    return head.length + json.length + 1;
  }

  private async readEnvelope(id: string): Promise<{ env: Envelope; bodyOffset: number }> {
    const fh = await fsp.open(path.join(this.queueDir, `${id}.msg`), 'r');
    try {
      const first = Buffer.alloc(64);
      const { bytesRead } = await fh.read(first, 0, 64, 0);
      const nl = first.subarray(0, bytesRead).indexOf(0x0a);
      const line = first.subarray(0, nl).toString('latin1');
      if (nl < 0 || !line.startsWith(MAGIC)) throw new Error('bad header');
      const len = Number(line.slice(MAGIC.length));
      if (!Number.isSafeInteger(len) || len <= 0) throw new Error('bad envelope length');
      const json = Buffer.alloc(len);
      const r = await fh.read(json, 0, len, nl + 1);
      if (r.bytesRead !== len) throw new Error('truncated envelope');
      const env = JSON.parse(json.toString('utf8')) as Envelope;
      if (env.v !== 1) throw new Error(`unsupported envelope version ${String(env.v)}`);
      if (env.id !== id) throw new Error(`envelope id ${String(env.id)} does not match the file name`);
      return { env, bodyOffset: nl + 1 + len + 1 };
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
      if (size - msg.bodyOffset !== msg.env.size)
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
      return createReadStream('', {
        fd: fh,
        start: msg.bodyOffset,
        autoClose: true,
        highWaterMark: 64 * 1024,
      });
    }
    try {
      return await readFully(fh, msg.bodyOffset, msg.env.size, msg.env.id);
    } finally {
      await fh.close();
    }
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
    const tmp = `${file}.tmp`;
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
