/**
 * The sent-message index on the spool volume (docs/adr/020-sent-message-index.md): for each accepted
 * message of a tenant with a feedback address, its normalized Message-ID -> tenant, queue id, recipients,
 * so a report sent to the feedback address without a return-path token can be traced to the message.
 *
 * Files: `<spoolDir>/feedback/sent/<yyyymmdd>/<2 hex>.log`, the bucket the first byte of the key's SHA-256;
 * a lookup reads one bucket per day (today and feedback.tokenTtl days back), newest day first. Entries are
 * appended (sent-entry.ts line format, a CRC per line) from a bounded buffer, one append per bucket per
 * flush (group commit, no fsync: this is best-effort, not acknowledged data); beyond the buffer's cap an
 * entry is dropped and counted. A torn last line (kill -9 in a write) fails its check and is skipped, and
 * the next append to that file starts on a new line. Day folders older than the TTL are removed at start
 * and hourly. Lookups: at most MAX_CONCURRENT at once, MAX_WAITING waiting (more: `busy`), each reading at
 * most MAX_LOOKUP_BYTES. Nothing grows in memory with the volume of mail.
 */
import { appendFile, mkdir, open, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import {
  bucketOf,
  decodeEntry,
  encodeEntry,
  entryOf,
  expired,
  lookupDays,
  MAX_LINE,
  type SentEntry,
} from './sent-entry.js';

export const BUFFER_CAP = 10_000;
export const FLUSH_DELAY_MS = 20;
export const MAX_CONCURRENT = 4;
export const MAX_WAITING = 64;
export const MAX_LOOKUP_BYTES = 64 * 1024 * 1024;
const CHUNK = 64 * 1024;
const EXPIRE_EVERY_MS = 3_600_000;
/** Files whose tail was checked in this process (at most this many remembered). */
const CLEAN_CAP = 4096;

export type LookupResult =
  | { result: 'hit'; entry: SentEntry }
  | { result: 'miss' | 'busy' | 'truncated' }
  | { result: 'error'; error: string };

export class SentIndexMetrics {
  readonly written: Counter;
  readonly dropped: Counter<'reason'>;
  readonly lookups: Counter<'result'>;
  pending: () => number = () => 0;

  constructor(r: Registry) {
    this.written = new Counter({
      name: 'cartero_feedback_sent_index_written_total',
      help: 'Accepted messages recorded in the sent-message index (tenants with a feedback address).',
      registers: [r],
    });
    this.dropped = new Counter({
      name: 'cartero_feedback_sent_index_dropped_total',
      help: `Entries of the sent-message index not written: full (more than ${BUFFER_CAP} waiting), disk-full (the spool volume keeps its room for mail), error (the append failed). Reports about those messages end unmatched.`,
      labelNames: ['reason'],
      registers: [r],
    });
    this.lookups = new Counter({
      name: 'cartero_feedback_sent_lookups_total',
      help: 'Lookups in the local sent-message index: hit, miss, busy (too many at once), truncated (read budget spent), error.',
      labelNames: ['result'],
      registers: [r],
    });
    const pending = () => this.pending();
    new Gauge({
      name: 'cartero_feedback_sent_index_pending',
      help: `Entries waiting to be appended to the sent-message index (at most ${BUFFER_CAP}).`,
      registers: [r],
      collect() {
        this.set(pending());
      },
    });
  }
}

export interface SentIndexOptions {
  /** The index's folder: `<spoolDir>/feedback/sent`. */
  dir: string;
  ttlDays: () => number;
  metrics: SentIndexMetrics;
  log: Logger;
  now: () => number;
  bufferCap?: number;
  maxLookupBytes?: number;
  /**
   * The spool's free-space accounting (spool/space.ts), as the event outbox uses it: whether `bytes` more
   * fit without eating into what mail needs (queue.minFreeBytes and the reservations of transactions in
   * flight), and a report of bytes written. Absent: nothing but the TTL bounds the index.
   */
  space?: { room(bytes: number): boolean; wrote(bytes: number): void };
}

export class SentIndex {
  private pending: SentEntry[] = [];
  private timer?: NodeJS.Timeout;
  private flushing?: Promise<void>;
  private expiry?: NodeJS.Timeout;
  private readonly clean = new Set<string>();
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly o: SentIndexOptions) {
    o.metrics.pending = () => this.pending.length;
  }

  /** Removes expired days now and every hour. */
  start(): void {
    void this.expire();
    this.expiry = setInterval(() => void this.expire(), EXPIRE_EVERY_MS);
    this.expiry.unref();
  }

  /** Writes what is buffered and stops the timers. */
  async stop(): Promise<void> {
    clearInterval(this.expiry);
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  /** Records an accepted message (never throws, never waits: the buffer is written in the background). */
  record(m: { messageId?: string; tenant: string; queueId: string; recipients: string[] }): void {
    const e = entryOf(m, this.o.now());
    if (!e) return;
    if (this.pending.length >= (this.o.bufferCap ?? BUFFER_CAP)) {
      this.o.metrics.dropped.inc({ reason: 'full' });
      return;
    }
    this.pending.push(e);
    if (!this.timer && !this.flushing) {
      this.timer = setTimeout(() => void this.flush(), FLUSH_DELAY_MS);
      this.timer.unref();
    }
  }

  /** Appends everything buffered (one append per bucket file); resolves once it is written. */
  async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.flushing) await this.flushing;
    if (!this.pending.length) return;
    this.flushing = this.write(this.pending.splice(0)).finally(() => {
      this.flushing = undefined;
      if (this.pending.length && !this.timer) {
        this.timer = setTimeout(() => void this.flush(), FLUSH_DELAY_MS);
        this.timer.unref();
      }
    });
    await this.flushing;
  }

  private async write(batch: SentEntry[]): Promise<void> {
    const files = new Map<string, SentEntry[]>();
    for (const e of batch) {
      const f = path.join(this.o.dir, e.day, `${bucketOf(e.messageId)}.log`);
      const list = files.get(f);
      if (list) list.push(e);
      else files.set(f, [e]);
    }
    for (const [file, entries] of files) {
      try {
        const lines = entries.map(encodeEntry);
        if (!(await this.endsClean(file))) lines.unshift(Buffer.from('\n'));
        const data = Buffer.concat(lines);
        // best-effort data never takes the room acknowledged mail needs
        if (this.o.space && !this.o.space.room(data.length)) {
          this.o.metrics.dropped.inc({ reason: 'disk-full' }, entries.length);
          continue;
        }
        await appendFile(file, data);
        this.o.space?.wrote(data.length);
        if (this.clean.size >= CLEAN_CAP) this.clean.clear();
        this.clean.add(file);
        this.o.metrics.written.inc(entries.length);
      } catch (e) {
        // a failed append (ENOSPC) may have left a part of its line: the next one checks the tail again
        this.clean.delete(file);
        this.o.metrics.dropped.inc({ reason: 'error' }, entries.length);
        this.o.log.warn(
          { event: 'feedback.sent-index.failed', file, entries: entries.length, err: (e as Error).message },
          'could not append to the sent-message index',
        );
      }
    }
  }

  /** Whether `file` is missing, empty or ends with a newline (creating its day folder if needed). */
  private async endsClean(file: string): Promise<boolean> {
    if (this.clean.has(file)) return true;
    await mkdir(path.dirname(file), { recursive: true });
    const fh = await open(file, 'r').catch(() => undefined);
    if (!fh) return true;
    try {
      const { size } = await fh.stat();
      if (size === 0) return true;
      const b = Buffer.alloc(1);
      await fh.read(b, 0, 1, size - 1);
      return b[0] === 0x0a;
    } finally {
      await fh.close();
    }
  }

  /**
   * The newest entry for `key` (a messageKey), preferring one of `tenant`: an entry of another tenant is
   * returned only when there is none of `tenant` (the caller tells the two apart).
   */
  async lookup(key: string, tenant?: string): Promise<LookupResult> {
    if (this.pending.length || this.flushing) await this.flush(); // a message accepted a moment ago
    const r = await this.limited(() => this.scan(key, tenant));
    this.o.metrics.lookups.inc({ result: r.result });
    return r;
  }

  private async limited(fn: () => Promise<LookupResult>): Promise<LookupResult> {
    if (this.running >= MAX_CONCURRENT) {
      if (this.waiting.length >= MAX_WAITING) return { result: 'busy' };
      await new Promise<void>((r) => this.waiting.push(r));
    }
    this.running++;
    try {
      return await fn();
    } catch (e) {
      return { result: 'error', error: (e as Error).message };
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }

  private async scan(key: string, tenant: string | undefined): Promise<LookupResult> {
    const bucket = `${bucketOf(key)}.log`;
    const needle = `"m":${JSON.stringify(key)},`;
    let budget = this.o.maxLookupBytes ?? MAX_LOOKUP_BYTES;
    let other: SentEntry | undefined;
    for (const day of lookupDays(this.o.now(), this.o.ttlDays())) {
      const fh = await open(path.join(this.o.dir, day, bucket), 'r').catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT') return undefined;
        throw e;
      });
      if (!fh) continue;
      let mine: SentEntry | undefined;
      try {
        let carry = '';
        let skipping = false;
        const buf = Buffer.alloc(CHUNK);
        // a character split between two reads is kept whole (recipients may be non-ASCII: SMTPUTF8)
        const utf8 = new StringDecoder('utf8');
        for (;;) {
          if (budget <= 0) return mine ? { result: 'hit', entry: mine } : { result: 'truncated' };
          const { bytesRead } = await fh.read(buf, 0, Math.min(CHUNK, budget), null);
          if (bytesRead === 0) break;
          budget -= bytesRead;
          const lines = (carry + utf8.write(buf.subarray(0, bytesRead))).split('\n');
          carry = lines.pop()!;
          for (const line of lines) {
            if (skipping) {
              skipping = false; // the rest of an over-long line
              continue;
            }
            if (!line.includes(needle)) continue;
            const e = decodeEntry(line, day);
            if (!e || e.messageId !== key) continue;
            if (tenant === undefined || e.tenant === tenant) mine = e;
            else other ??= e;
          }
          if (carry.length > MAX_LINE) {
            carry = '';
            skipping = true;
          }
        }
        // a last line without its newline is a torn write: not taken
      } finally {
        await fh.close();
      }
      if (mine) return { result: 'hit', entry: mine };
    }
    return other ? { result: 'hit', entry: other } : { result: 'miss' };
  }

  /** Removes the day folders older than the TTL. */
  async expire(): Promise<void> {
    const days = await readdir(this.o.dir).catch(() => [] as string[]);
    for (const d of days)
      if (expired(d, this.o.now(), this.o.ttlDays()))
        await rm(path.join(this.o.dir, d), { recursive: true, force: true }).catch((e: Error) =>
          this.o.log.warn(
            { event: 'feedback.sent-index.expire-failed', day: d, err: e.message },
            'could not remove an expired day of the sent-message index',
          ),
        );
  }
}
