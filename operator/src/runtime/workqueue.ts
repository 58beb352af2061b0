/**
 * A rate-limited work queue of object keys, with the semantics of client-go's workqueue as
 * controller-runtime uses it:
 *
 * - de-duplicating: a key waits in the queue at most once, however often it is added;
 * - per-key serialisation: a key added while its handler runs is run again after that run ends,
 *   never concurrently with it;
 * - a handler that throws is retried after a per-key exponential back-off (`baseDelayMs` × 2^n for
 *   the n-th consecutive failure counted from 0, capped at `maxDelayMs`); a success resets it;
 * - a handler that returns `{ requeueAfterMs }` is run again after that delay;
 * - `add` of a key that waits for a delayed run (back-off or requeueAfter) runs it now.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { errorField, silentLogger, type RuntimeLogger } from './log.js';

/** What a handler may return: nothing (done) or a delay after which to run the key again. */
export type ReconcileResult = { requeueAfterMs?: number } | void;

export type ReconcileHandler = (key: string) => Promise<ReconcileResult>;

export interface WorkQueueOptions {
  /** Names the queue in metrics and logs (default `controller`). */
  controller?: string;
  /** Keys handled at once, each key by at most one handler (default 1). */
  concurrency?: number;
  /** Back-off after the first failure of a key (default 100 ms). */
  baseDelayMs?: number;
  /** Longest back-off (default 300 000 ms). */
  maxDelayMs?: number;
  /** Registers the controller-runtime metrics here (shared by queues of different controllers). */
  metrics?: Registry;
  log?: RuntimeLogger;
}

type Outcome = 'success' | 'error' | 'requeue_after';

interface QueueMetrics {
  reconciles: Counter<'controller' | 'result'>;
  errors: Counter<'controller'>;
  duration: Histogram<'controller'>;
  depth: Gauge<'name'>;
}

/** The metric of that name in the registry, or a new one registered there. */
function metric<T>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

function queueMetrics(registry: Registry): QueueMetrics {
  const registers = [registry];
  return {
    reconciles: metric(
      registry,
      'controller_runtime_reconcile_total',
      () =>
        new Counter({
          name: 'controller_runtime_reconcile_total',
          help: 'Total number of reconciliations per controller and result (success, error, requeue_after).',
          labelNames: ['controller', 'result'],
          registers,
        }),
    ),
    errors: metric(
      registry,
      'controller_runtime_reconcile_errors_total',
      () =>
        new Counter({
          name: 'controller_runtime_reconcile_errors_total',
          help: 'Total number of reconciliation errors per controller.',
          labelNames: ['controller'],
          registers,
        }),
    ),
    duration: metric(
      registry,
      'controller_runtime_reconcile_time_seconds',
      () =>
        new Histogram({
          name: 'controller_runtime_reconcile_time_seconds',
          help: 'Length of time per reconciliation per controller.',
          labelNames: ['controller'],
          buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
          registers,
        }),
    ),
    depth: metric(
      registry,
      'workqueue_depth',
      () =>
        new Gauge({
          name: 'workqueue_depth',
          help: 'Current depth of the workqueue (keys waiting to be handled, not counting delayed ones).',
          labelNames: ['name'],
          registers,
        }),
    ),
  };
}

export class WorkQueue {
  private readonly name: string;
  private readonly concurrency: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly log: RuntimeLogger;
  private readonly metrics?: QueueMetrics;
  /** Keys waiting to run, in the order they were added (a Set keeps insertion order). */
  private readonly ready = new Set<string>();
  /** Keys whose handler is running. */
  private readonly processing = new Set<string>();
  /** Keys added while their handler was running: run again as soon as it ends. */
  private readonly dirty = new Set<string>();
  /** Keys waiting for a delayed run (back-off or requeueAfter), with when it is due. */
  private readonly delayed = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  /** Consecutive failures per key. */
  private readonly failures = new Map<string, number>();
  private readonly running = new Set<Promise<void>>();
  private started = false;
  private stopped = false;

  constructor(
    private readonly handler: ReconcileHandler,
    opts: WorkQueueOptions = {},
  ) {
    this.name = opts.controller ?? 'controller';
    this.concurrency = Math.max(1, Math.floor(opts.concurrency ?? 1));
    this.baseDelayMs = opts.baseDelayMs ?? 100;
    this.maxDelayMs = opts.maxDelayMs ?? 300_000;
    this.log = opts.log ?? silentLogger;
    if (opts.metrics) this.metrics = queueMetrics(opts.metrics);
    this.updateDepth();
  }

  /** Keys waiting to run now (delayed keys and running handlers not counted). */
  get depth(): number {
    return this.ready.size;
  }

  /** Queues a key to run now (de-duplicated; after its running handler, if one runs). */
  add(key: string): void {
    if (this.stopped) return;
    this.cancelDelayed(key);
    if (this.processing.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.ready.has(key)) return;
    this.ready.add(key);
    this.updateDepth();
    this.pump();
  }

  /** Queues a key to run after `ms` (an earlier pending run wins; a key already waiting runs sooner anyway). */
  addAfter(key: string, ms: number): void {
    if (this.stopped) return;
    if (!(ms > 0)) {
      this.add(key);
      return;
    }
    if (this.ready.has(key) || this.dirty.has(key)) return;
    const at = Date.now() + ms;
    const pending = this.delayed.get(key);
    if (pending) {
      if (pending.at <= at) return;
      clearTimeout(pending.timer);
    }
    const timer = setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, ms);
    this.delayed.set(key, { at, timer });
  }

  /** Starts running handlers (keys added before are kept). */
  start(): void {
    if (this.stopped || this.started) return;
    this.started = true;
    this.pump();
  }

  /** Stops: no new runs, delayed runs dropped; resolves when the running handlers have ended. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const { timer } of this.delayed.values()) clearTimeout(timer);
    this.delayed.clear();
    this.ready.clear();
    this.dirty.clear();
    this.updateDepth();
    while (this.running.size) await Promise.allSettled([...this.running]);
  }

  private cancelDelayed(key: string): void {
    const pending = this.delayed.get(key);
    if (!pending) return;
    clearTimeout(pending.timer);
    this.delayed.delete(key);
  }

  private updateDepth(): void {
    this.metrics?.depth.set({ name: this.name }, this.ready.size);
  }

  private pump(): void {
    while (this.started && !this.stopped && this.running.size < this.concurrency && this.ready.size) {
      const key = this.ready.values().next().value as string;
      this.ready.delete(key);
      this.updateDepth();
      this.processing.add(key);
      const run = this.run(key).finally(() => {
        this.running.delete(run);
        this.pump();
      });
      this.running.add(run);
    }
  }

  /** The back-off before the next run of a key that has failed `failures` times in a row (≥ 1). */
  private backoff(failures: number): number {
    const exp = Math.min(failures - 1, 52);
    return Math.min(this.baseDelayMs * 2 ** exp, this.maxDelayMs);
  }

  private async run(key: string): Promise<void> {
    const start = performance.now();
    let outcome: Outcome = 'success';
    let again: number | undefined;
    try {
      const result = await Promise.resolve().then(() => this.handler(key));
      this.failures.delete(key);
      const after = result ? result.requeueAfterMs : undefined;
      if (after !== undefined && after >= 0) {
        outcome = 'requeue_after';
        again = after;
      }
    } catch (err) {
      outcome = 'error';
      const failures = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, failures);
      again = this.backoff(failures);
      this.log.error(
        { controller: this.name, key, failures, retryInMs: again, err: errorField(err) },
        'reconcile failed; retrying after back-off',
      );
    }
    const seconds = (performance.now() - start) / 1000;
    if (this.metrics) {
      this.metrics.reconciles.inc({ controller: this.name, result: outcome });
      this.metrics.duration.observe({ controller: this.name }, seconds);
      if (outcome === 'error') this.metrics.errors.inc({ controller: this.name });
    }
    this.processing.delete(key);
    if (this.stopped) return;
    if (this.dirty.delete(key)) this.add(key);
    else if (again !== undefined) this.addAfter(key, again);
  }
}
