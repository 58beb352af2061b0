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
import type { SpaceAccountant } from '../spool/space.js';
import type { EventsResponse } from '../contract/admin-api.js';

/** The endpoints of every tenant in `cfg`. */
export function endpointsOf(cfg: RelayConfig): WebhookEndpointConfig[] {
  return [...cfg.tenants.values()].flatMap((t) => (t.webhooks ?? []).map((w) => ({ tenant: t.name, ...w })));
}

export class EventsRuntime implements EventSink {
  readonly outbox: Outbox;
  readonly dispatcher: WebhookDispatcher;
  readonly metrics: EventMetrics;
  private wanted = new Set<string>();

  constructor(
    private cfg: RelayConfig,
    registry: Registry,
    log: Logger,
    now: () => number,
    space?: SpaceAccountant,
  ) {
    const dir = path.join(cfg.spoolDir, 'events');
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
      ...(space
        ? {
            space: {
              room: (n: number) => space.available() - n >= 0,
              wrote: (n: number) => void (space.writtenSinceStat += n),
            },
          }
        : {}),
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
    // one reconfiguration at a time: a second reload waits for the first
    const next = this.configuring
      .catch(() => undefined)
      .then(() => this.dispatcher.configure(endpointsOf(this.cfg), this.cfg.events.concurrency));
    this.configuring = next;
    await next;
  }

  /** GET /events. */
  view(): EventsResponse {
    return {
      outboxBytes: this.outbox.bytes(),
      segments: this.outbox.segments().length,
      buffered: this.outbox.buffered,
      endpoints: this.dispatcher.view(),
    };
  }

  /** Every event written and acknowledged by its endpoints (the drain waits for it). */
  caughtUp(): boolean {
    return this.dispatcher.caughtUp();
  }

  async stop(): Promise<void> {
    await this.outbox.close();
    await this.dispatcher.stop();
  }
}
