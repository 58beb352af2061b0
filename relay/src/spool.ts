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
import { randomBytes } from 'node:crypto';
import { SpoolBackpressureError, SpoolUnhealthyError } from './errors.js';

export const SPOOL_FORMAT = 1;
const MAGIC = 'CSPOOL1 ';

/** One recipient as received: address and its RFC 3461 parameters. */
export interface SpoolRecipient {
  address: string;
  notify?: string[];
  orcpt?: string;
}

/** The immutable envelope, written once with the message. Versioned by `v`. */
export interface Envelope {
  v: 1;
  id: string;
  /** Tenant the message belongs to (from the AUTH account or the trusted network). */
  tenant: string;
  /** IP pool the message must leave from; null = the default (unbound) egress. */
  pool: string | null;
  arrivedAt: number;
  /** Envelope sender; '' is the null sender `<>`. */
  from: string;
  rcpts: SpoolRecipient[];
  dsn: { ret?: 'FULL' | 'HDRS'; envid?: string };
  size: number;
  eightBit: boolean;
  smtpUtf8: boolean;
  /** What generated this message: client submission, or our own DSN. */
  origin: 'smtp' | 'dsn';
  client: { address: string; helo: string; user?: string; listener: string };
}

export type RcptStatus = 'pending' | 'delivered' | 'bounced' | 'expired';
export interface RcptState {
  status: RcptStatus;
  attempts: number;
  lastAttemptAt?: number;
  /** Last remote reply or local reason, one line. */
  lastReply?: string;
  /** RFC 3463 status of the last outcome. */
  lastStatus?: string;
  remoteMta?: string;
}

/** The mutable state of a message, rewritten (temp + rename) after each delivery attempt. */
export interface DeliveryState {
  v: 1;
  attempts: number;
  nextAttemptAt: number;
  delayWarned: boolean;
  rcpts: RcptState[];
}

export interface SpooledMessage {
  env: Envelope;
  state: DeliveryState;
  /** Byte offset of the raw message in its queue file. */
  bodyOffset: number;
}

export interface SpoolOptions {
  dir: string;
  maxMessages: number;
  minFreeBytes: number;
  now?: () => number;
}

export function initialState(env: Envelope, now: number): DeliveryState {
  return {
    v: 1,
    attempts: 0,
    nextAttemptAt: now,
    delayWarned: false,
    rcpts: env.rcpts.map(() => ({ status: 'pending', attempts: 0 })),
  };
}

/** Queue ids: time-ordered, 20 characters of [0-9A-Z], unique without coordination. */
export function newQueueId(now = Date.now()): string {
  return (
    now.toString(36).padStart(9, '0') +
    randomBytes(8).readBigUInt64BE(0).toString(36).slice(0, 11).padStart(11, '0')
  ).toUpperCase();
}

const ID_RE = /^[0-9A-Z]{20}$/;

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

export class Spool {
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
  readonly quarantined: { file: string; reason: string; movedTo?: string }[] = [];

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

  /** Creates the layout, drops unacknowledged temp files, and returns every queued message. */
  async open(): Promise<SpooledMessage[]> {
    for (const d of [this.dir, this.tmpDir, this.queueDir, this.stateDir])
      await fsp.mkdir(d, { recursive: true });
    for (const f of await fsp.readdir(this.tmpDir)) await fsp.rm(path.join(this.tmpDir, f), { force: true });
    this.quarantined.length = 0;
    const out: SpooledMessage[] = [];
    const ids = new Set<string>();
    for (const f of await fsp.readdir(this.queueDir)) {
      if (!f.endsWith('.msg')) continue;
      const id = f.slice(0, -4);
      if (!ID_RE.test(id)) continue;
      try {
        const { env, bodyOffset } = await this.readEnvelope(id);
        const state = (await this.readState(id)) ?? initialState(env, this.now());
        out.push({ env, state, bodyOffset });
        ids.add(id);
        this.count++;
        this.bytes += env.size;
      } catch (e) {
        // A queue file is only ever renamed into place complete, so this is corruption from outside. One bad
        // file must not keep the relay (and every other queued message) down: keep it for a human under
        // corrupt/, out of the way of the scheduler, and go on. The caller logs `quarantined`.
        const reason = (e as Error).message;
        const aside = path.join(this.dir, 'corrupt', f);
        await fsp.mkdir(path.dirname(aside), { recursive: true }).catch(() => undefined);
        const moved = await fsp.rename(path.join(this.queueDir, f), aside).then(
          () => true,
          () => false,
        );
        this.quarantined.push({ file: f, reason, movedTo: moved ? aside : undefined });
      }
    }
    for (const f of await fsp.readdir(this.stateDir)) {
      const id = f.replace(/\.json(\.tmp)?$/, '');
      if (!ids.has(id) || f.endsWith('.tmp')) await fsp.rm(path.join(this.stateDir, f), { force: true });
    }
    await this.refreshFree(true);
    return out.sort((a, b) => a.env.arrivedAt - b.env.arrivedAt);
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

  /** Reads the raw message (as it will be delivered). */
  async readBody(id: string, bodyOffset: number): Promise<Buffer> {
    const fh = await fsp.open(path.join(this.queueDir, `${id}.msg`), 'r');
    try {
      const { size } = await fh.stat();
      const buf = Buffer.alloc(size - bodyOffset);
      let off = 0;
      while (off < buf.length) {
        const { bytesRead } = await fh.read(buf, off, buf.length - off, bodyOffset + off);
        if (bytesRead === 0) break;
        off += bytesRead;
      }
      return buf;
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
