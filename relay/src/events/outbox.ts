/**
 * The durable event outbox on the spool volume (`<spoolDir>/events/`, docs/adr/017-delivery-events.md).
 * `emit` never blocks and never throws: an event goes into a bounded buffer (beyond `maxBuffered`, it is
 * dropped and counted); a group commit appends the buffer to the active segment file every
 * `flushIntervalMs` (or at once past FLUSH_COUNT events) and fdatasyncs it once per batch. A segment is
 * sealed at SEGMENT_BYTES and a new one opened (directory fsynced). Beyond `maxBytes` on disk, new events
 * are dropped and counted rather than taking the space the mail needs. Readers (webhooks.ts) read only
 * what a commit made durable, and segments are removed once every reader has passed them.
 */
import { promises as fsp, constants as fsc } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { DeliveryEvent } from '../contract/events.js';
import type { EventSink, NewEvent } from './sink.js';
import { eventId } from './event-id.js';
import { encodeRecord, segmentName, segmentSeq } from './record.js';
import type { EventMetrics } from './metrics.js';

export const SEGMENT_BYTES = 4 * 1024 * 1024;
/** A commit starts at once when this many events wait. */
export const FLUSH_COUNT = 512;
/** Free-text fields are cut to this many characters (a reply line, a recipient). */
const MAX_TEXT = 1000;

export interface OutboxOptions {
  dir: string;
  maxBytes: number;
  flushIntervalMs: number;
  maxBuffered: number;
  /** Whether any endpoint wants this event (others are not written at all). */
  wanted: (e: Pick<DeliveryEvent, 'tenant' | 'type'>) => boolean;
  metrics: EventMetrics;
  log: Logger;
  now: () => number;
  segmentBytes?: number;
  /**
   * The spool's free-space accounting (spool/space.ts): whether `bytes` more fit without eating into what
   * mail needs (queue.minFreeBytes and the reservations of transactions in flight), and a report of bytes
   * written. Absent: only maxBytes bounds the outbox.
   */
  space?: { room(bytes: number): boolean; wrote(bytes: number): void };
}

export class Outbox implements EventSink {
  private buf: DeliveryEvent[] = [];
  private timer?: NodeJS.Timeout;
  private writing: Promise<void> = Promise.resolve();
  private fh?: FileHandle;
  private active = 0;
  /** Durable bytes per segment (the active one: what the last commit made durable). */
  private sizes = new Map<number, number>();
  private readonly listeners = new Set<() => void>();
  private closed = false;
  /** Events taken from the buffer whose write has not finished. */
  private inFlight = 0;

  constructor(private o: OutboxOptions) {}

  /** Opens the folder: existing segments are sealed as they are (a torn tail is skipped by readers). */
  async open(): Promise<void> {
    await fsp.mkdir(this.o.dir, { recursive: true });
    for (const name of await fsp.readdir(this.o.dir)) {
      const seq = segmentSeq(name);
      if (seq === undefined) continue;
      this.sizes.set(seq, (await fsp.stat(path.join(this.o.dir, name))).size);
    }
    await this.roll(Math.max(0, ...this.sizes.keys()) + 1);
  }

  setOptions(o: Partial<Pick<OutboxOptions, 'maxBytes' | 'flushIntervalMs' | 'maxBuffered' | 'wanted'>>) {
    this.o = { ...this.o, ...o };
  }

  emit(e: NewEvent): void {
    if (this.closed || !this.o.wanted(e)) return;
    if (this.buf.length >= this.o.maxBuffered) {
      this.o.metrics.dropped.inc({ reason: 'buffer-full' });
      return;
    }
    const { at, key, ...rest } = e;
    const ev: DeliveryEvent = {
      id: eventId(key),
      ...rest,
      at: new Date(at ?? this.o.now()).toISOString(),
    };
    if (ev.reply) ev.reply = { ...ev.reply, text: ev.reply.text.slice(0, MAX_TEXT) };
    if (ev.recipient) ev.recipient = ev.recipient.slice(0, MAX_TEXT);
    if (ev.messageId) ev.messageId = ev.messageId.slice(0, MAX_TEXT);
    this.buf.push(ev);
    if (this.buf.length >= FLUSH_COUNT) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), this.o.flushIntervalMs);
  }

  /** Writes what is buffered (one append and one fdatasync); resolves once it is durable. */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.buf;
    this.buf = [];
    this.inFlight += batch.length;
    this.writing = this.writing
      .then(() => (batch.length ? this.write(batch) : undefined))
      .finally(() => (this.inFlight -= batch.length));
    return this.writing;
  }

  /** A group commit: what cannot be written is dropped and counted (emit never fails). */
  private async write(batch: DeliveryEvent[]): Promise<void> {
    const failed = await this.append(batch);
    if (!failed) {
      for (const e of batch) this.o.metrics.queued.inc({ tenant: e.tenant, type: e.type });
      return;
    }
    this.o.metrics.dropped.inc({ reason: failed.reason }, batch.length);
    if (failed.reason === 'write-error')
      this.o.log.error({ event: 'events.write-error', err: failed.message }, 'event outbox write failed');
    else this.o.log.warn({ event: `events.${failed.reason}`, dropped: batch.length }, 'event outbox full');
  }

  /**
   * Appends events that already have their id and time (a peer's hand-off, events/handoff.ts) after what
   * was emitted before, durably (fdatasync) before it resolves; throws when they could not be written
   * (outbox or disk full, write error), so that the sender keeps them and tries again.
   */
  appendDurable(events: DeliveryEvent[]): Promise<void> {
    if (this.closed) return Promise.reject(new Error('outbox closed'));
    if (this.buf.length) void this.flush();
    const done = this.writing.then(() => this.append(events));
    this.writing = done.then(() => undefined);
    return done.then((failed) => {
      if (failed) throw new Error(`event outbox: ${failed.message}`);
    });
  }

  /** One append and one fdatasync; the reason it did not happen, if so. Never throws. */
  private async append(
    batch: DeliveryEvent[],
  ): Promise<{ reason: 'outbox-full' | 'disk-full' | 'write-error'; message: string } | undefined> {
    if (!batch.length) return undefined;
    const data = Buffer.concat(batch.map(encodeRecord));
    if (this.bytes() + data.length > this.o.maxBytes)
      return { reason: 'outbox-full', message: 'outbox full' };
    if (this.o.space && !this.o.space.room(data.length)) return { reason: 'disk-full', message: 'disk full' };
    try {
      if (!this.fh) throw new Error('outbox closed');
      const cur = this.sizes.get(this.active) ?? 0;
      if (cur > 0 && cur + data.length > (this.o.segmentBytes ?? SEGMENT_BYTES))
        await this.roll(this.active + 1);
      const size = this.sizes.get(this.active) ?? 0;
      // a disk that fills in the middle takes a part of the batch without an error (a short write)
      const { bytesWritten } = await this.fh!.write(data, 0, data.length, size);
      if (bytesWritten !== data.length)
        throw new Error(`short write: ${bytesWritten} of ${data.length} bytes (disk full?)`);
      await this.fh!.datasync();
      this.sizes.set(this.active, size + data.length);
      this.o.space?.wrote(data.length);
    } catch (e) {
      // a partial write may have left a torn line: the next batch goes to a fresh segment
      if (!this.closed) await this.roll(this.active + 1).catch(() => undefined);
      return { reason: 'write-error', message: (e as Error).message };
    }
    for (const l of this.listeners) l();
    return undefined;
  }

  private async roll(seq: number): Promise<void> {
    const prev = this.fh;
    this.fh = undefined;
    await prev?.close();
    this.fh = await fsp.open(path.join(this.o.dir, segmentName(seq)), 'w');
    this.active = seq;
    this.sizes.set(seq, 0);
    const dh = await fsp.open(this.o.dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  }

  /** Called after each commit (readers wake up). */
  onCommit(l: () => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  /** The segments on disk, oldest first. */
  segments(): number[] {
    return [...this.sizes.keys()].sort((a, b) => a - b);
  }
  /** Durable bytes of segment `seq` (undefined when it is gone). */
  committed(seq: number): number | undefined {
    return this.sizes.get(seq);
  }
  get activeSegment(): number {
    return this.active;
  }
  bytes(): number {
    let n = 0;
    for (const s of this.sizes.values()) n += s;
    return n;
  }
  file(seq: number): string {
    return path.join(this.o.dir, segmentName(seq));
  }
  /** Events emitted and not yet durable (buffered, or in a write that has not finished). */
  get buffered(): number {
    return this.buf.length + this.inFlight;
  }

  /** Removes the sealed segments before `seq` (every reader has passed them). */
  async removeBefore(seq: number): Promise<void> {
    for (const s of this.segments()) {
      if (s >= seq || s >= this.active) break;
      this.sizes.delete(s);
      await fsp.rm(this.file(s), { force: true });
    }
  }

  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    await this.fh?.close();
    this.fh = undefined;
  }
}
