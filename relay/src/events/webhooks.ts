/**
 * Webhook delivery from the outbox (outbox.ts): one loop per endpoint, in order, at most one request in
 * flight per endpoint and at most `concurrency` across all of them. A loop reads its next batch from disk
 * (never from memory), POSTs it as a JSON array signed with the endpoint's secret (signature.ts), and
 * moves its cursor durably on a 2xx. A failure is retried with back-off (policy.ts) until `retryFor` has
 * passed since the batch's first try; then the batch is counted as dropped and the cursor moves on. Mail
 * delivery never waits for any of it.
 */
import { Nap } from './nap.js';
import type { Logger } from 'pino';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { DeliveryEvent, EventType } from '../contract/events.js';
import type { Outbox } from './outbox.js';
import type { EventMetrics } from './metrics.js';
import { SIGNATURE_HEADER, sign } from './signature.js';
import { afterFailure, readStatus, wants, type FailReason } from './policy.js';
import { before, endpointKey, loadCursor, readBatch, saveCursor, type Cursor } from './cursor.js';
import type { EventsEndpointView } from '../contract/admin-api.js';

export interface WebhookEndpointConfig {
  tenant: string;
  url: string;
  secret: Buffer;
  events: EventType[];
  batchSize: number;
  timeoutMs: number;
  retryForMs: number;
}

export interface DispatcherOptions {
  dir: string;
  outbox: Outbox;
  metrics: EventMetrics;
  log: Logger;
  now: () => number;
  concurrency: number;
  /** Injected for tests: random in [0, 1). */
  random?: () => number;
}

/** How long an idle loop waits for a commit before it looks again anyway. */
const IDLE_MS = 1000;

class Semaphore {
  private waiting: (() => void)[] = [];
  private used = 0;
  constructor(public limit: number) {}
  async acquire(): Promise<void> {
    if (this.used < this.limit) {
      this.used++;
      return;
    }
    await new Promise<void>((r) => this.waiting.push(r));
  }
  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.used--;
  }
}

class Endpoint {
  cursor: Cursor = { seq: 0, offset: 0 };
  private stopped = false;
  private readonly nap = new Nap();
  private done?: Promise<void>;
  /** True when the last read found nothing left to send. */
  idle = false;
  /** Failed requests in a row for the batch in hand, and the last failure's reason and time. */
  failures = 0;
  lastFailure?: { reason: FailReason; at: number };

  constructor(
    readonly key: string,
    readonly label: string,
    public cfg: WebhookEndpointConfig,
    private readonly d: DispatcherOptions,
    private readonly sem: Semaphore,
    private readonly acked: () => void,
  ) {}

  start(cursor: Cursor): void {
    this.cursor = cursor;
    const off = this.d.outbox.onCommit(() => this.poke());
    this.done = this.loop().finally(off);
  }

  poke(): void {
    this.nap.wakeUp();
  }

  private readonly abort = new AbortController();

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    this.poke();
    await this.done;
  }

  private sleep(ms: number): Promise<void> {
    return this.nap.sleep(ms, this.stopped);
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      let batch;
      try {
        batch = await readBatch(this.d.outbox, this.cursor, this.cfg.batchSize, (e) => wants(this.cfg, e));
      } catch (e) {
        this.d.log.error(
          { event: 'events.read-error', err: (e as Error).message },
          'event outbox read failed',
        );
        await this.sleep(IDLE_MS);
        continue;
      }
      if (batch.corrupt) this.d.metrics.dropped.inc({ reason: 'corrupt' }, batch.corrupt);
      if (!batch.events.length) {
        this.idle = true;
        this.d.metrics.lag.set({ endpoint: this.label }, 0);
        if (before(this.cursor, batch.next)) await this.advance(batch.next);
        else await this.sleep(IDLE_MS);
        continue;
      }
      this.idle = false;
      const ok = await this.deliver(batch.events);
      if (ok !== 'stopped' && !this.stopped) await this.advance(batch.next);
    }
  }

  private async advance(next: Cursor): Promise<void> {
    try {
      await saveCursor(this.d.dir, this.key, next);
      this.cursor = next;
      this.acked();
    } catch (e) {
      this.d.log.error({ event: 'events.cursor-error', err: (e as Error).message }, 'cursor not saved');
      await this.sleep(IDLE_MS);
    }
  }

  /** Sends one batch until acknowledged, dropped after retryFor, or the dispatcher stops. */
  private async deliver(events: DeliveryEvent[]): Promise<'sent' | 'dropped' | 'stopped'> {
    const body = JSON.stringify(events);
    const oldest = Date.parse(events[0].at);
    // retryFor counts from the oldest event of the batch: after a long outage, what is older than retryFor
    // is dropped at its next failure instead of each batch waiting retryFor anew
    const first = Math.min(this.d.now(), Number.isFinite(oldest) ? oldest : this.d.now());
    for (let failures = 1; !this.stopped; failures++) {
      this.d.metrics.lag.set({ endpoint: this.label }, Math.max(0, (this.d.now() - oldest) / 1000));
      const result = await this.post(body);
      if (result === 'ok') {
        this.d.metrics.sent.inc({ endpoint: this.label }, events.length);
        this.failures = 0;
        return 'sent';
      }
      this.failures = failures;
      this.lastFailure = { reason: result, at: this.d.now() };
      this.d.metrics.failed.inc({ endpoint: this.label, reason: result });
      const next = afterFailure(
        first,
        this.d.now(),
        failures,
        this.cfg.retryForMs,
        (this.d.random ?? Math.random)(),
      );
      if (next === 'drop') {
        this.failures = 0;
        this.d.metrics.dropped.inc({ reason: 'retry-expired' }, events.length);
        this.d.log.warn(
          { event: 'events.dropped', endpoint: this.label, count: events.length },
          'webhook batch dropped after retryFor',
        );
        return 'dropped';
      }
      this.d.log.info(
        {
          event: 'events.retry',
          endpoint: this.label,
          reason: result,
          retryAt: new Date(next.retryAt).toISOString(),
        },
        'webhook batch failed, will retry',
      );
      await this.sleep(Math.max(0, next.retryAt - this.d.now()));
    }
    return 'stopped';
  }

  private async post(body: string): Promise<'ok' | FailReason> {
    await this.sem.acquire();
    try {
      const t = Math.floor(this.d.now() / 1000);
      const res = await fetch(this.cfg.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'cartero-relay',
          [SIGNATURE_HEADER]: sign(this.cfg.secret, body, t),
        },
        body,
        redirect: 'manual',
        signal: AbortSignal.any([AbortSignal.timeout(this.cfg.timeoutMs), this.abort.signal]),
      });
      await res.body?.cancel().catch(() => undefined);
      return readStatus(res.status);
    } catch (e) {
      const name = (e as Error).name;
      return name === 'TimeoutError' || name === 'AbortError' ? 'timeout' : 'connect';
    } finally {
      this.sem.release();
    }
  }
}

/** The endpoints of every tenant, reconfigured on reload; cursors of removed endpoints are deleted. */
export class WebhookDispatcher {
  private endpoints = new Map<string, Endpoint>();
  private readonly sem: Semaphore;

  constructor(private readonly d: DispatcherOptions) {
    this.sem = new Semaphore(d.concurrency);
  }

  /** Starts, updates and stops endpoint loops to match `list`. */
  async configure(list: WebhookEndpointConfig[], concurrency: number): Promise<void> {
    this.sem.limit = concurrency;
    const want = new Map<string, { cfg: WebhookEndpointConfig; label: string }>();
    const perTenant = new Map<string, number>();
    for (const cfg of list) {
      const n = perTenant.get(cfg.tenant) ?? 0;
      perTenant.set(cfg.tenant, n + 1);
      want.set(endpointKey(cfg.tenant, cfg.url), { cfg, label: `${cfg.tenant}/${n}` });
    }
    for (const [key, ep] of this.endpoints) {
      if (want.has(key)) continue;
      await ep.stop();
      this.endpoints.delete(key);
    }
    for (const [key, { cfg, label }] of want) {
      const ep = this.endpoints.get(key);
      if (ep) {
        ep.cfg = cfg;
        continue;
      }
      const fresh = new Endpoint(key, label, cfg, this.d, this.sem, () => void this.collect());
      // a new endpoint starts at the events written from now on
      let start = await loadCursor(this.d.dir, key);
      if (!start) {
        start = {
          seq: this.d.outbox.activeSegment,
          offset: this.d.outbox.committed(this.d.outbox.activeSegment) ?? 0,
        };
        await saveCursor(this.d.dir, key, start);
      }
      this.endpoints.set(key, fresh);
      fresh.start(start);
    }
    await this.removeStaleCursors();
    await this.collect();
  }

  /** What GET /events shows of each endpoint (no URL: it may hold a token). */
  view(): EventsEndpointView[] {
    return [...this.endpoints.values()].map((e) => ({
      endpoint: e.label,
      tenant: e.cfg.tenant,
      caughtUp: e.idle,
      cursor: { ...e.cursor },
      failures: e.failures,
      ...(e.lastFailure
        ? { lastFailure: { reason: e.lastFailure.reason, at: new Date(e.lastFailure.at).toISOString() } }
        : {}),
    }));
  }

  /** True when every endpoint has sent everything written (the drain waits for it). */
  caughtUp(): boolean {
    if (this.d.outbox.buffered > 0) return false;
    for (const ep of this.endpoints.values()) {
      const end = {
        seq: this.d.outbox.activeSegment,
        offset: this.d.outbox.committed(this.d.outbox.activeSegment) ?? 0,
      };
      if (!ep.idle || before(ep.cursor, end)) return false;
    }
    return true;
  }

  /** Removes the segments every endpoint has passed. */
  private async collect(): Promise<void> {
    const cursors = [...this.endpoints.values()].map((e) => e.cursor.seq);
    const min = cursors.length ? Math.min(...cursors) : this.d.outbox.activeSegment;
    await this.d.outbox
      .removeBefore(min)
      .catch((e: Error) =>
        this.d.log.warn({ event: 'events.gc-error', err: e.message }, 'event segment not removed'),
      );
  }

  private async removeStaleCursors(): Promise<void> {
    const dir = path.join(this.d.dir, 'cursors');
    const names = await fsp.readdir(dir).catch(() => [] as string[]);
    for (const n of names) {
      if (!n.endsWith('.json') || this.endpoints.has(n.slice(0, -5))) continue;
      await fsp.rm(path.join(dir, n), { force: true });
    }
  }

  async stop(): Promise<void> {
    await Promise.all([...this.endpoints.values()].map((e) => e.stop()));
    this.endpoints.clear();
  }
}
