/**
 * The event shipper of a draining relay (docs/adr/019-event-handoff.md): instead of waiting for its
 * webhook endpoints, the relay hands its undelivered events to a peer relay over SMTP, as the peer
 * account, in chunks (handoff-wire.ts). One loop reads from the lowest endpoint cursor the events some
 * endpoint has not passed and still wants, sends them to the first peer that takes them (in order,
 * starting with the one that last did), and once a peer answered 250 moves every cursor behind the chunk
 * past it, durably, so that the outbox drops the segments passed. A chunk no peer took is tried again
 * after a back-off (1 s doubling to 30 s). It goes on until stopped: events emitted while the drain runs
 * are shipped too.
 */
import { Nap } from './nap.js';
import type { Logger } from 'pino';
import type { DeliveryEvent } from '../contract/events.js';
import { OutboundSession, type Hop } from '../outbound.js';
import type { Outbox } from './outbox.js';
import type { EventMetrics } from './metrics.js';
import type { WebhookEndpointConfig } from './webhooks.js';
import { before, endpointKey, loadCursor, readBatch, saveCursor, type Cursor } from './cursor.js';
import {
  CHUNK_MAX_EVENTS,
  EVENTS_RCPT,
  STORED_TEXT,
  chunkBytes,
  cursorsToAdvance,
  encodeEventsMessage,
  lowestCursor,
  shipBackoffMs,
  shipDecision,
  type ShipEndpoint,
} from './handoff-wire.js';

export interface ShipperOptions {
  /** The events folder (cursors live in `<dir>/cursors`). */
  dir: string;
  outbox: Outbox;
  /** The endpoints in force (read at every pass: a reload changes them). */
  endpoints: () => WebhookEndpointConfig[];
  peers: Hop[];
  session: () => { ehloName: string; connectTimeoutMs: number; commandTimeoutMs: number };
  /** The fleet's limits.maxMessageSize (the peer's size limit bounds a chunk). */
  maxMessageSize: () => number;
  metrics: EventMetrics;
  log: Logger;
  now: () => number;
  /** Injected for tests: random in [0, 1). */
  random?: () => number;
}

/** How long an idle shipper waits for a commit before it looks again anyway. */
const IDLE_MS = 1000;

export class EventShipper {
  /** Events a peer has taken (this process). */
  sent = 0;
  /** Passes in a row in which no peer took the chunk in hand, and why the last one failed. */
  failures = 0;
  lastError?: string;
  private peers: Hop[];
  private idle = false;
  private readonly cursors = new Map<string, Cursor>();
  private readonly endpoints = new Map<string, WebhookEndpointConfig>();
  private stopped = false;
  private readonly nap = new Nap();
  private done?: Promise<void>;
  private session?: OutboundSession;
  /** The peer that took the last chunk: the next one goes there first. */
  private good = 0;
  private firstPassDone!: () => void;
  /** Settles once a first pass has sent everything there was, or failed once. */
  readonly firstPass = new Promise<void>((r) => (this.firstPassDone = r));

  constructor(private readonly o: ShipperOptions) {
    this.peers = o.peers;
  }

  start(): void {
    const off = this.o.outbox.onCommit(() => this.nap.wakeUp());
    this.done = this.loop().finally(() => {
      off();
      this.firstPassDone();
      this.session?.quit();
      this.session = undefined;
    });
  }

  /** New peers (a drain asked again): tried at once, from the first. */
  setPeers(peers: Hop[]): void {
    this.peers = peers;
    this.good = 0;
    this.failures = 0;
    this.nap.wakeUp();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.nap.wakeUp();
    await this.done;
  }

  /** Whether some event is still to be handed off (written or about to be). */
  pending(): boolean {
    if (this.o.outbox.buffered > 0 || !this.idle) return true;
    const low = lowestCursor(this.cursors.values());
    return !!low && before(low, this.end());
  }

  private sleep(ms: number): Promise<void> {
    return this.nap.sleep(ms, this.stopped);
  }

  private end(): Cursor {
    return {
      seq: this.o.outbox.activeSegment,
      offset: this.o.outbox.committed(this.o.outbox.activeSegment) ?? 0,
    };
  }

  /** Follows the endpoints in force: a new one starts from its saved cursor, or from the end. */
  private async reconcile(): Promise<void> {
    const want = new Map(this.o.endpoints().map((c) => [endpointKey(c.tenant, c.url), c]));
    for (const k of [...this.cursors.keys()])
      if (!want.has(k)) {
        this.cursors.delete(k);
        this.endpoints.delete(k);
      }
    for (const [k, c] of want) {
      this.endpoints.set(k, c);
      if (this.cursors.has(k)) continue;
      const saved = await loadCursor(this.o.dir, k);
      this.cursors.set(k, saved ?? this.end());
    }
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      let batch;
      let expired = 0;
      try {
        await this.reconcile();
        const from = lowestCursor(this.cursors.values());
        if (!from) {
          await this.rest();
          continue;
        }
        const now = this.o.now();
        const eps: ShipEndpoint[] = [...this.cursors].map(([k, cursor]) => {
          const c = this.endpoints.get(k)!;
          return { tenant: c.tenant, events: c.events, retryForMs: c.retryForMs, cursor };
        });
        batch = await readBatch(
          this.o.outbox,
          from,
          CHUNK_MAX_EVENTS,
          (e, at) => {
            const d = shipDecision(eps, e, at, now);
            if (d === 'expired') expired++;
            return d === 'ship';
          },
          chunkBytes(this.o.maxMessageSize()),
        );
        if (!batch.events.length && !before(from, batch.next)) {
          await this.rest();
          continue;
        }
      } catch (e) {
        this.o.log.error(
          { event: 'events.read-error', err: (e as Error).message },
          'event outbox read failed',
        );
        await this.sleep(IDLE_MS);
        continue;
      }
      this.idle = false;
      if (batch.events.length && !(await this.ship(batch.events))) {
        this.failures++;
        this.firstPassDone();
        await this.sleep(shipBackoffMs(this.failures, (this.o.random ?? Math.random)()));
        continue;
      }
      this.failures = 0;
      if (batch.corrupt) this.o.metrics.dropped.inc({ reason: 'corrupt' }, batch.corrupt);
      if (expired) this.o.metrics.dropped.inc({ reason: 'retry-expired' }, expired);
      await this.advance(batch.next);
    }
  }

  /** Nothing left to send for now: the first pass is over, the session is closed until there is more. */
  private async rest(): Promise<void> {
    this.idle = true;
    this.firstPassDone();
    this.session?.quit();
    this.session = undefined;
    await this.sleep(IDLE_MS);
  }

  /** Moves every cursor behind `next` to it, durably, then lets the outbox drop the segments passed. */
  private async advance(next: Cursor): Promise<void> {
    try {
      for (const k of cursorsToAdvance(this.cursors, next)) {
        await saveCursor(this.o.dir, k, next);
        this.cursors.set(k, next);
      }
    } catch (e) {
      // the chunk is sent again from the cursors saved: the peer may get it twice (at least once)
      this.o.log.error({ event: 'events.cursor-error', err: (e as Error).message }, 'cursor not saved');
      await this.sleep(IDLE_MS);
      return;
    }
    const low = lowestCursor(this.cursors.values());
    await this.o.outbox
      .removeBefore(low?.seq ?? this.o.outbox.activeSegment)
      .catch((e: Error) =>
        this.o.log.warn({ event: 'events.gc-error', err: e.message }, 'event segment not removed'),
      );
  }

  /** Sends one chunk to the first peer that stores it; false when none did. */
  private async ship(events: DeliveryEvent[]): Promise<boolean> {
    const msg = encodeEventsMessage(events);
    const eightBit = msg.some((b) => b > 0x7f);
    const peers = this.peers; // a drain asked again may replace them meanwhile
    const n = peers.length;
    let why = 'no peer relay given';
    for (let i = 0; i < n && !this.stopped; i++) {
      const k = (this.good + i) % n;
      const hop = peers[k];
      try {
        if (!this.session?.usable || this.session.hop !== hop) {
          this.session?.close();
          this.session = undefined;
          this.session = await OutboundSession.open(hop, this.o.session());
        }
        const tx = await this.session.send({ from: '', to: [EVENTS_RCPT], size: msg.length, eightBit }, msg);
        const r = tx.rcpts[0];
        if (r.ok && r.reply.includes(STORED_TEXT)) {
          this.good = k;
          this.sent += events.length;
          this.o.metrics.handedOff.inc({ result: 'sent' }, events.length);
          this.o.log.info(
            { event: 'events.handed-off', peer: `${hop.host}:${hop.port}`, count: events.length },
            'delivery events handed to a peer relay',
          );
          return true;
        }
        why = r.ok ? `peer does not take delivery events (${r.reply})` : r.reply;
        this.session.close();
        this.session = undefined;
      } catch (e) {
        why = (e as Error).message;
        this.session?.close();
        this.session = undefined;
      }
      this.o.log.warn(
        { event: 'events.handoff-failed', peer: `${hop.host}:${hop.port}`, count: events.length, err: why },
        'delivery events not handed off to this peer',
      );
    }
    this.lastError = why;
    return false;
  }
}
