/**
 * The durable per-tenant suppression list, with a change feed for fleet propagation.
 *
 * The journal's format (`suppressions.log` under `dir`: one JSON line per change, after a compaction a
 * header and the live entries) and its line-by-line replay are in suppression-journal.ts.
 *
 * A change is applied in memory, and shown to `isSuppressed`, `list` and `changesSince`, only once its line
 * is on disk: appended, then fdatasync'ed. Changes waiting while a sync runs are written and synced together
 * with the next one (group commit), so concurrent adds share an fsync. A batch that fails to write is cut
 * off the journal again (ftruncate) and its promises reject; its seqs are never reused while the process runs.
 *
 * At open the journal is replayed. A last line that is incomplete or unreadable (a crash in the middle of an
 * append) is ignored and cut off so later appends start on a clean line; an unreadable line in the middle is
 * skipped and counted in `corruptLines`. Expired entries are dropped. The journal is compacted (live entries
 * written to the temp file, fdatasync, rename over the journal, directory fsync) when it holds at least
 * `compactEvery` lines and more than twice as many lines as live entries, at open and after appends.
 *
 * The change feed keeps at least the last `keepChanges` changes in memory, including those replayed from
 * the journal since its last compaction. A reader whose cursor is older than that (or newer than this
 * store, e.g. after its directory was wiped) is told to `reset`: read everything with `list` and continue
 * from the returned `lastSeq`. Applying changes is idempotent (add sets the entry, remove deletes it), so a
 * reader may apply a change it already saw in the list. Expiry is not a change: every copy of an entry
 * carries its absolute `expiresAt`.
 */
import { promises as fsp, constants as fsc } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { CarteroError } from './errors.js';
import {
  changeLine,
  entryLine,
  headerLine,
  JOURNAL,
  keyOf,
  NEVER,
  oneLine,
  scanJournal,
  writeAll,
  type Change,
  type Suppression,
} from './suppression-journal.js';

export { JOURNAL, NEVER, type Change, type Suppression } from './suppression-journal.js';

export type SyncKind = 'journal' | 'compact' | 'dir';

export interface SuppressionOptions {
  dir: string;
  now: () => number;
  /** Compaction threshold in journal lines (see above). Default 10 000. */
  compactEvery?: number;
  /** Changes kept in memory for `changesSince`. Default 10 000. */
  keepChanges?: number;
  /** Replaces the fsyncs (for tests: count or fail them). Default: datasync for files, sync for the directory. */
  sync?: (fh: FileHandle, kind: SyncKind) => Promise<void>;
}

const WRITE_CHUNK = 1 << 20;

interface Held {
  s: Suppression;
  /** Seq of the change that added it (kept across compactions). */
  seq: number;
}

interface Pending {
  change: Change;
  line: string;
  resolve: (c: Change) => void;
  reject: (e: unknown) => void;
}

export class SuppressionError extends CarteroError {
  constructor(message: string, cause?: unknown) {
    super('ERR_SUPPRESSION', message, cause === undefined ? undefined : { cause });
    this.name = 'SuppressionError';
  }
}

export class SuppressionStore {
  readonly dir: string;
  private readonly file: string;
  private readonly tmp: string;
  private readonly now: () => number;
  private readonly compactEvery: number;
  private readonly keepChanges: number;
  private readonly doSync: (fh: FileHandle, kind: SyncKind) => Promise<void>;

  private readonly byTenant = new Map<string, Map<string, Held>>();
  private live = 0;
  /** Sorted `tenant\0address` keys for `list`, rebuilt when the set changed. */
  private sorted: string[] | undefined;
  private lastSweep = Number.NEGATIVE_INFINITY;

  private fh: FileHandle | undefined;
  /** Bytes of the journal that hold whole, written lines. */
  private offset = 0;
  /** Change lines in the journal (header not counted). */
  private lines = 0;
  /** After a failed compaction: journal lines to reach before trying again. */
  private compactRetryAt = 0;
  private nextSeq = 1;
  /** Highest seq whose append finished (written or failed): what the feed shows. */
  private visibleSeq = 0;
  /** Changes with seq > floor are all in `changes`. */
  private floor = 0;
  private changes: Change[] = [];

  private pending: Pending[] = [];
  /** Keys with an append queued or being written, so `remove` right after an unresolved `add` is not lost. */
  private readonly inflight = new Map<string, number>();
  /** Set when a failed append could not be cut off again: the journal may end in a partial line. */
  private broken: unknown;
  private running: Promise<void> | undefined;
  private closed = false;
  private opened = false;

  /** Unreadable journal lines skipped by the last open (not counting a torn last line). */
  corruptLines = 0;
  /** Whether the last open cut off a torn last line. */
  tornTail = false;
  /** The last compaction failure, if any (the old journal is kept and appends go on). */
  compactionError: unknown;
  /** Compactions done since this store was made (for tests and metrics). */
  compactions = 0;

  constructor(opts: SuppressionOptions) {
    this.dir = opts.dir;
    this.file = path.join(opts.dir, JOURNAL);
    this.tmp = `${this.file}.tmp`;
    this.now = opts.now;
    this.compactEvery = Math.max(1, opts.compactEvery ?? 10_000);
    this.keepChanges = Math.max(1, opts.keepChanges ?? 10_000);
    this.doSync = opts.sync ?? ((fh, kind) => (kind === 'dir' ? fh.sync() : fh.datasync()));
  }

  async open(): Promise<void> {
    if (this.opened) throw new SuppressionError('suppression store already opened');
    this.opened = true;
    await fsp.mkdir(this.dir, { recursive: true });
    await fsp.rm(this.tmp, { force: true });
    const existed = await fsp.stat(this.file).then(
      () => true,
      () => false,
    );
    const fh = await fsp.open(this.file, fsc.O_RDWR | fsc.O_CREAT | fsc.O_APPEND, 0o644);
    this.fh = fh;
    try {
      await this.replay(fh);
      if (!existed) await this.syncDir();
      this.sweep(this.now(), true);
      if (this.shouldCompact()) await this.compact();
    } catch (e) {
      this.fh = undefined;
      await fh.close().catch(() => undefined);
      throw e;
    }
  }

  /** The live suppression of this address for this tenant, if any. Address case does not matter. */
  isSuppressed(tenant: string, address: string): Suppression | undefined {
    const m = this.byTenant.get(tenant);
    if (!m) return undefined;
    const a = address.toLowerCase();
    const h = m.get(a);
    if (!h) return undefined;
    if (h.s.expiresAt <= this.now()) {
      this.drop(tenant, a, m);
      return undefined;
    }
    return h.s;
  }

  /**
   * Adds (or replaces, with a new TTL) a suppression. Resolves once it is on disk. A `ttlMs` that is not
   * finite means it never expires.
   */
  add(s: Omit<Suppression, 'createdAt' | 'expiresAt'> & { ttlMs: number }): Promise<Change> {
    if (!(s.ttlMs > 0)) return Promise.reject(new SuppressionError(`ttlMs must be positive, got ${s.ttlMs}`));
    const address = s.address.trim().toLowerCase();
    if (!s.tenant || s.tenant.includes('\u0000') || !address || address.includes('\u0000'))
      return Promise.reject(new SuppressionError('tenant and address must be non-empty, without NUL'));
    const now = this.now();
    const entry: Suppression = {
      tenant: s.tenant,
      address,
      reason: oneLine(s.reason),
      source: s.source,
      createdAt: now,
      expiresAt: Number.isFinite(s.ttlMs) ? Math.min(NEVER, now + s.ttlMs) : NEVER,
    };
    return this.append({ seq: 0, op: 'add', tenant: s.tenant, address, entry, at: now });
  }

  /** Removes a suppression; resolves once that is on disk, undefined if there was none (nothing written). */
  async remove(tenant: string, address: string, source?: string): Promise<Change | undefined> {
    const a = address.trim().toLowerCase();
    if (!this.isSuppressed(tenant, a) && !this.inflight.has(keyOf(tenant, a))) return undefined;
    const c: Change = { seq: 0, op: 'remove', tenant, address: a, at: this.now() };
    if (source !== undefined) c.source = source;
    return this.append(c);
  }

  /**
   * Live entries ordered by tenant, then address; `next` is the cursor for the following page (absent on
   * the last). The first call after a change sorts the keys again (O(n log n)); pages are O(log n + limit).
   */
  list(opts: { tenant?: string; after?: string; limit: number }): { items: Suppression[]; next?: string } {
    const now = this.now();
    this.sweep(now);
    const keys = (this.sorted ??= this.sortKeys());
    let from = opts.tenant === undefined ? '' : keyOf(opts.tenant, '');
    if (opts.after !== undefined) {
      const after = Buffer.from(opts.after, 'base64url').toString('utf8') + '\u0000';
      if (after > from) from = after; // strictly after the cursor's key
    }
    let i = lowerBound(keys, from);
    const items: Suppression[] = [];
    const limit = Math.max(1, Math.floor(opts.limit));
    const prefix = opts.tenant === undefined ? undefined : keyOf(opts.tenant, '');
    let lastKey: string | undefined;
    for (; i < keys.length; i++) {
      const k = keys[i];
      if (prefix !== undefined && !k.startsWith(prefix)) break;
      const h = this.held(k);
      if (!h || h.s.expiresAt <= now) continue;
      if (items.length === limit) return { items, next: Buffer.from(lastKey!, 'utf8').toString('base64url') };
      items.push(h.s);
      lastKey = k;
    }
    return { items };
  }

  /**
   * Changes after `seq`, oldest first, at most `limit`; pass the returned `lastSeq` next time. `reset` when
   * `seq` is older than the changes kept (or newer than this store): list everything, then continue from
   * `lastSeq`.
   */
  changesSince(seq: number, limit: number): { changes: Change[]; lastSeq: number; reset?: true } {
    if (seq < this.floor || seq > this.visibleSeq)
      return { changes: [], lastSeq: this.visibleSeq, reset: true };
    const start = upperBoundSeq(this.changes, seq);
    const changes = this.changes.slice(start, start + Math.max(1, Math.floor(limit)));
    const more = start + changes.length < this.changes.length;
    return { changes, lastSeq: more ? changes[changes.length - 1].seq : this.visibleSeq };
  }

  /** Entries held, at most a minute stale on expiries (expired entries are swept at most once a minute). */
  get size(): number {
    this.sweep(this.now());
    return this.live;
  }

  /** Waits for pending appends, then closes the journal. Later adds and removes reject. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.running) await this.running;
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close();
  }

  // --- writing -----------------------------------------------------------------------------------------

  private append(change: Change): Promise<Change> {
    if (this.closed || !this.fh)
      return Promise.reject(new SuppressionError(this.closed ? 'suppression store closed' : 'not open'));
    if (this.broken !== undefined)
      return Promise.reject(new SuppressionError(`${this.file} is unusable until reopened`, this.broken));
    change.seq = this.nextSeq++;
    const key = keyOf(change.tenant, change.address);
    this.inflight.set(key, (this.inflight.get(key) ?? 0) + 1);
    const line = changeLine(change);
    return new Promise<Change>((resolve, reject) => {
      this.pending.push({ change, line, resolve, reject });
      // Start on the next microtask, so every change queued in the same turn shares the first sync.
      this.running ??= Promise.resolve().then(() => this.run());
    });
  }

  /**
   * Writes batches until none is waiting. Clears `running` in the same synchronous step that finds nothing
   * waiting: an add made by code resuming from a resolved add must start a new run, not join a finished one.
   */
  private async run(): Promise<void> {
    for (;;) {
      if (!this.pending.length) {
        this.running = undefined;
        return;
      }
      await this.writeBatch(this.pending.splice(0));
    }
  }

  private async writeBatch(batch: Pending[]): Promise<void> {
    const fh = this.fh;
    const buf = Buffer.from(batch.map((p) => p.line).join(''), 'utf8');
    try {
      if (!fh) throw new SuppressionError('suppression store closed');
      if (this.broken !== undefined) throw this.broken;
      await writeAll(fh, buf);
      await this.doSync(fh, 'journal');
    } catch (e) {
      // Cut the batch off again so it neither shows up after a restart nor glues onto the next line.
      if (fh && this.broken === undefined) await fh.truncate(this.offset).catch((t) => (this.broken = t));
      this.settled(batch);
      this.visibleSeq = batch[batch.length - 1].change.seq;
      const err = new SuppressionError(`could not write ${this.file}: ${(e as Error).message}`, e);
      for (const p of batch) p.reject(err);
      return;
    }
    this.offset += buf.length;
    this.lines += batch.length;
    this.settled(batch);
    for (const p of batch) this.apply(p.change, true);
    this.visibleSeq = batch[batch.length - 1].change.seq;
    for (const p of batch) p.resolve(p.change);
    if (this.shouldCompact()) await this.compact();
  }

  private settled(batch: Pending[]): void {
    for (const p of batch) {
      const key = keyOf(p.change.tenant, p.change.address);
      const n = (this.inflight.get(key) ?? 1) - 1;
      if (n > 0) this.inflight.set(key, n);
      else this.inflight.delete(key);
    }
  }

  private shouldCompact(): boolean {
    return this.lines >= Math.max(this.compactEvery, this.compactRetryAt) && this.lines > 2 * this.live;
  }

  /** Rewrites the journal as a header and the live entries. Only runs between appends. */
  private async compact(): Promise<void> {
    const now = this.now();
    this.sweep(now, true);
    let out: FileHandle | undefined;
    let renamed = false;
    try {
      // Written through the handle that becomes the journal's once renamed: no reopen that could fail.
      out = await fsp.open(this.tmp, fsc.O_RDWR | fsc.O_CREAT | fsc.O_TRUNC | fsc.O_APPEND, 0o644);
      const parts: string[] = [headerLine(this.visibleSeq, now)];
      let size = parts[0].length;
      let bytes = 0;
      let lines = 0;
      for (const m of this.byTenant.values())
        for (const h of m.values()) {
          const line = entryLine(h.s, h.seq);
          parts.push(line);
          size += line.length;
          lines++;
          if (size >= WRITE_CHUNK) {
            bytes += await writeAll(out, Buffer.from(parts.splice(0).join(''), 'utf8'));
            size = 0;
          }
        }
      bytes += await writeAll(out, Buffer.from(parts.join(''), 'utf8'));
      await this.doSync(out, 'compact');
      await fsp.rename(this.tmp, this.file);
      renamed = true;
      // The old handle points at the replaced file from now on: switch before anything else can fail.
      const old = this.fh;
      this.fh = out;
      out = undefined;
      this.offset = bytes;
      this.lines = lines;
      this.compactions++;
      this.compactRetryAt = 0;
      this.compactionError = undefined;
      await old?.close().catch(() => undefined);
      await this.syncDir();
    } catch (e) {
      this.compactionError = e;
      this.compactRetryAt = this.lines + this.compactEvery; // do not rewrite everything after every batch
      if (!renamed) {
        await out?.close().catch(() => undefined);
        await fsp.rm(this.tmp, { force: true }).catch(() => undefined);
      }
    }
  }

  private async syncDir(): Promise<void> {
    const d = await fsp.open(this.dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
    try {
      await this.doSync(d, 'dir');
    } finally {
      await d.close();
    }
  }

  // --- reading -----------------------------------------------------------------------------------------

  private async replay(fh: FileHandle): Promise<void> {
    const replayed: Change[] = [];
    const r = await scanJournal(fh, (c, afterHeader) => {
      this.apply(c, false);
      if (afterHeader) replayed.push(c);
    });
    this.lines += r.lines;
    this.corruptLines += r.corruptLines;
    if (r.good < r.size) {
      // An incomplete or unreadable tail: a crash in the middle of an append. Cut it off.
      this.tornTail = true;
      await fh.truncate(r.good);
      await this.doSync(fh, 'journal');
    }
    this.offset = r.good;
    this.nextSeq = Math.max(r.maxSeq, r.header) + 1;
    this.visibleSeq = this.nextSeq - 1;
    this.floor = r.header;
    this.changes = replayed;
    this.trimChanges();
  }

  // --- memory ------------------------------------------------------------------------------------------

  /** Applies a change to the live set; `feed` also appends it to the change feed. */
  private apply(c: Change, feed: boolean): void {
    let m = this.byTenant.get(c.tenant);
    if (c.op === 'add' && c.entry) {
      if (!m) this.byTenant.set(c.tenant, (m = new Map()));
      if (!m.has(c.address)) {
        this.live++;
        this.sorted = undefined;
      }
      m.set(c.address, { s: c.entry, seq: c.seq });
    } else if (c.op === 'remove' && m) {
      this.drop(c.tenant, c.address, m);
    }
    if (feed) {
      this.changes.push(c);
      this.trimChanges();
    }
  }

  private drop(tenant: string, address: string, m: Map<string, Held>): void {
    if (!m.delete(address)) return;
    this.live--;
    this.sorted = undefined;
    if (m.size === 0) this.byTenant.delete(tenant);
  }

  /** Keeps between keepChanges and 1.5 x keepChanges changes (trimming in steps keeps appends O(1) amortised). */
  private trimChanges(): void {
    if (this.changes.length <= Math.floor(this.keepChanges * 1.5)) return;
    const cut = this.changes.splice(0, this.changes.length - this.keepChanges);
    this.floor = cut[cut.length - 1].seq;
  }

  /** Drops expired entries, at most once a minute unless forced. */
  private sweep(now: number, force = false): void {
    if (!force && now - this.lastSweep < 60_000) return;
    this.lastSweep = now;
    for (const [tenant, m] of this.byTenant)
      for (const [address, h] of m) if (h.s.expiresAt <= now) this.drop(tenant, address, m);
  }

  private sortKeys(): string[] {
    const keys: string[] = [];
    for (const [tenant, m] of this.byTenant)
      for (const address of m.keys()) keys.push(keyOf(tenant, address));
    return keys.sort();
  }

  private held(key: string): Held | undefined {
    const i = key.indexOf('\u0000');
    return this.byTenant.get(key.slice(0, i))?.get(key.slice(i + 1));
  }
}

/** First index whose key is >= `k`. */
function lowerBound(keys: string[], k: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (keys[mid] < k) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** First index whose change has seq > `seq`. */
function upperBoundSeq(changes: Change[], seq: number): number {
  let lo = 0;
  let hi = changes.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (changes[mid].seq <= seq) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
