/**
 * The relay's delivery events (issue 14, docs/events.md): the outbox (the EventSink the relay's parts
 * emit to) and the webhook dispatcher, built from the config and reconfigured on reload.
 */
import path from 'node:path';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { RelayConfig } from '../config.js';
import type { EventSink, NewEvent } from './sink.js';
import { Outbox } from './outbox.js';
import { EventMetrics } from './metrics.js';
import { WebhookDispatcher, type WebhookEndpointConfig } from './webhooks.js';
import { besideMail, type SpaceAccountant } from '../spool/space.js';
import type { EventsResponse } from '../contract/admin-api.js';
import type { DeliveryEvent } from '../contract/events.js';
import type { Hop } from '../outbound.js';
import { EventShipper } from './handoff.js';

/** The longest a drain waits for the first pass of the event hand-off before it hands off mail too. */
export const FIRST_PASS_MAX_MS = 60_000;

/** The endpoints of every tenant in `cfg`. */
export function endpointsOf(cfg: RelayConfig): WebhookEndpointConfig[] {
  return [...cfg.tenants.values()].flatMap((t) => (t.webhooks ?? []).map((w) => ({ tenant: t.name, ...w })));
}

export class EventsRuntime implements EventSink {
  readonly outbox: Outbox;
  readonly dispatcher: WebhookDispatcher;
  readonly metrics: EventMetrics;
  private wanted = new Set<string>();
  /** While a drain hands events to peers: the shipper (the webhook loops are stopped meanwhile). */
  private shipper?: EventShipper;
  private readonly dir: string;

  constructor(
    private cfg: RelayConfig,
    registry: Registry,
    private readonly log: Logger,
    private readonly now: () => number,
    space?: SpaceAccountant,
  ) {
    const dir = (this.dir = path.join(cfg.spoolDir, 'events'));
    this.metrics = new EventMetrics(registry, () => this.outbox.bytes());
    this.outbox = new Outbox({
      dir,
      maxBytes: cfg.events.maxBytes,
      flushIntervalMs: cfg.events.flushIntervalMs,
      maxBuffered: cfg.events.maxBuffered,
      wanted: (e) => this.wanted.has(`${e.tenant}\0${e.type}`),
      metrics: this.metrics,
      log,
      now,
      ...(space ? { space: besideMail(space) } : {}),
    });
    this.dispatcher = new WebhookDispatcher({
      dir,
      outbox: this.outbox,
      metrics: this.metrics,
      log,
      now,
      concurrency: cfg.events.concurrency,
    });
    this.setWanted(cfg);
  }

  private setWanted(cfg: RelayConfig): void {
    this.wanted = new Set(endpointsOf(cfg).flatMap((w) => w.events.map((t) => `${w.tenant}\0${t}`)));
  }

  emit(e: NewEvent): void {
    this.outbox.emit(e);
  }

  async start(): Promise<void> {
    await this.outbox.open();
    await this.dispatcher.configure(endpointsOf(this.cfg), this.cfg.events.concurrency);
  }

  private configuring: Promise<void> = Promise.resolve();

  async reload(cfg: RelayConfig): Promise<void> {
    this.cfg = cfg;
    this.setWanted(cfg);
    this.outbox.setOptions({
      maxBytes: cfg.events.maxBytes,
      flushIntervalMs: cfg.events.flushIntervalMs,
      maxBuffered: cfg.events.maxBuffered,
    });
    // one reconfiguration at a time: a second reload waits for the first. While events are handed off,
    // the shipper reads the endpoints in force at each pass and the webhook loops stay stopped.
    await this.serialise(async () => {
      if (!this.shipper) await this.dispatcher.configure(endpointsOf(this.cfg), this.cfg.events.concurrency);
    });
  }

  private serialise(f: () => Promise<void>): Promise<void> {
    const next = this.configuring.catch(() => undefined).then(f);
    this.configuring = next;
    return next;
  }

  /**
   * Drain with peers: stops the webhook loops and hands the undelivered events to `peers` (ADR 019);
   * resolves once a first pass sent everything there was, failed once, or FIRST_PASS_MAX_MS passed (the
   * drain hands off mail after it, so that a message's events reach the peer before the message).
   * Without peers: the webhook loops send what is left (a drain asked again without peers).
   */
  async handOff(
    peers: Hop[],
    session: () => { ehloName: string; connectTimeoutMs: number; commandTimeoutMs: number },
  ): Promise<void> {
    let shipper: EventShipper | undefined;
    await this.serialise(async () => {
      if (!peers.length) {
        if (!this.shipper) return;
        await this.shipper.stop();
        this.shipper = undefined;
        await this.dispatcher.configure(endpointsOf(this.cfg), this.cfg.events.concurrency);
        return;
      }
      if (this.shipper) {
        this.shipper.setPeers(peers);
        return;
      }
      await this.dispatcher.stop();
      shipper = this.shipper = new EventShipper({
        dir: this.dir,
        outbox: this.outbox,
        endpoints: () => endpointsOf(this.cfg),
        peers,
        session,
        maxMessageSize: () => this.cfg.limits.maxMessageSize,
        metrics: this.metrics,
        log: this.log,
        now: this.now,
      });
      shipper.start();
    });
    if (!shipper) return;
    let t: NodeJS.Timeout | undefined;
    await Promise.race([shipper.firstPass, new Promise<void>((r) => (t = setTimeout(r, FIRST_PASS_MAX_MS)))]);
    clearTimeout(t);
  }

  /** Events handed to peers by this process. */
  get handedOff(): number {
    return this.shipper?.sent ?? 0;
  }

  /**
   * Events a peer relay handed to this one (accept.ts): those some endpoint of this relay wants are
   * appended with their ids and times, durably, before it resolves; throws when they could not be stored.
   */
  async receiveHandoff(events: DeliveryEvent[]): Promise<number> {
    const mine = events.filter(
      (e) => typeof e.tenant === 'string' && this.wanted.has(`${e.tenant}\0${e.type}`),
    );
    await this.outbox.appendDurable(mine);
    this.metrics.handedOff.inc({ result: 'received' }, mine.length);
    return mine.length;
  }

  /** GET /events. */
  view(): EventsResponse {
    return {
      outboxBytes: this.outbox.bytes(),
      segments: this.outbox.segments().length,
      buffered: this.outbox.buffered,
      endpoints: this.dispatcher.view(),
      ...(this.shipper
        ? {
            handoff: {
              sent: this.shipper.sent,
              failures: this.shipper.failures,
              ...(this.shipper.lastError ? { lastError: this.shipper.lastError } : {}),
            },
          }
        : {}),
    };
  }

  /**
   * Every event written and acknowledged by its endpoints, or while a drain hands them off, taken by a
   * peer (the drain waits for it).
   */
  caughtUp(): boolean {
    return this.shipper ? !this.shipper.pending() : this.dispatcher.caughtUp();
  }

  async stop(): Promise<void> {
    await this.shipper?.stop();
    await this.outbox.close();
    await this.dispatcher.stop();
  }
}
