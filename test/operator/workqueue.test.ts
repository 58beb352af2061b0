import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { pino } from 'pino';
import { WorkQueue, type ReconcileResult } from '../../operator/src/runtime/workqueue.js';
import type { RuntimeLogger } from '../../operator/src/runtime/log.js';
import { waitFor } from '../helpers/poll.js';

interface Gate {
  promise: Promise<void>;
  open(): void;
}

function gate(): Gate {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

function recordingLogger(): RuntimeLogger & {
  lines: { level: string; obj: Record<string, unknown>; msg?: string }[];
} {
  const lines: { level: string; obj: Record<string, unknown>; msg?: string }[] = [];
  const at = (level: string) => (obj: object, msg?: string) =>
    lines.push({ level, obj: obj as Record<string, unknown>, msg });
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

describe('WorkQueue', () => {
  it('de-duplicates waiting keys and runs them in the order first added', async () => {
    const calls: string[] = [];
    const q = new WorkQueue(async (key) => void calls.push(key));
    q.add('a');
    q.add('b');
    q.add('a');
    q.add('a');
    assert.equal(q.depth, 2);
    q.start();
    await waitFor(() => calls.length === 2, { what: 'both keys handled' });
    assert.deepEqual(calls, ['a', 'b']);
    assert.equal(q.depth, 0);
    await q.stop();
    assert.deepEqual(calls, ['a', 'b']);
  });

  it('never runs a key concurrently; a key added while it runs runs once more afterwards', async () => {
    const active = new Map<string, number>();
    let maxActive = 0;
    const runs: string[] = [];
    let block = gate();
    const q = new WorkQueue(
      async (key) => {
        const n = (active.get(key) ?? 0) + 1;
        active.set(key, n);
        maxActive = Math.max(maxActive, n);
        runs.push(key);
        if (key === 'a') await block.promise;
        active.set(key, n - 1);
      },
      { concurrency: 4 },
    );
    q.start();
    q.add('a');
    await waitFor(() => runs.length === 1);
    const first = block;
    block = gate();
    q.add('a');
    q.add('a');
    q.add('a');
    q.add('b');
    await waitFor(() => runs.includes('b'), { what: 'another key runs beside the busy one' });
    assert.equal(q.depth, 0, 'the busy key does not wait in the queue');
    first.open();
    await waitFor(() => runs.filter((k) => k === 'a').length === 2, { what: 'the second run of a' });
    block.open();
    await q.stop();
    assert.equal(maxActive, 1, 'at most one handler per key');
    assert.deepEqual(
      runs.filter((k) => k === 'a'),
      ['a', 'a'],
    );
  });

  it('runs up to `concurrency` different keys at once', async () => {
    let active = 0;
    let maxActive = 0;
    const block = gate();
    const done: string[] = [];
    const q = new WorkQueue(
      async (key) => {
        active++;
        maxActive = Math.max(maxActive, active);
        await block.promise;
        active--;
        done.push(key);
      },
      { concurrency: 3 },
    );
    for (const k of ['a', 'b', 'c', 'd', 'e', 'f']) q.add(k);
    q.start();
    await waitFor(() => active === 3, { what: 'three handlers running' });
    assert.equal(q.depth, 3);
    block.open();
    await waitFor(() => done.length === 6, { what: 'all keys handled' });
    assert.equal(maxActive, 3);
    await q.stop();
  });

  it('retries a failing key with exponential back-off, capped, and logs each failure; success resets it', async () => {
    const log = recordingLogger();
    const attempts: number[] = [];
    let failUntil = 4;
    const q = new WorkQueue(
      async () => {
        attempts.push(performance.now());
        if (attempts.length <= failUntil) throw new Error(`boom ${attempts.length}`);
      },
      { baseDelayMs: 40, maxDelayMs: 100, log, controller: 'test' },
    );
    q.start();
    q.add('x');
    await waitFor(() => attempts.length === 5, { what: 'four failures and a success', timeoutMs: 5_000 });
    const gaps = attempts.slice(1).map((t, i) => t - attempts[i]);
    const expected = [40, 80, 100, 100];
    gaps.forEach((gap, i) => assert.ok(gap >= expected[i] - 2, `gap ${i} ${gap} ms ≥ ${expected[i]} ms`));
    assert.ok(gaps[2] < 400 && gaps[3] < 400, `capped: ${gaps.join(', ')}`);
    const errors = log.lines.filter((l) => l.level === 'error');
    assert.deepEqual(
      errors.map((l) => [l.obj.key, l.obj.failures, l.obj.retryInMs, l.obj.controller]),
      [
        ['x', 1, 40, 'test'],
        ['x', 2, 80, 'test'],
        ['x', 3, 100, 'test'],
        ['x', 4, 100, 'test'],
      ],
    );
    assert.match(String((errors[0].obj.err as { message: string }).message), /boom 1/);
    // After the success the back-off starts again at the base delay.
    failUntil = 6;
    q.add('x');
    await waitFor(() => attempts.length === 7, { what: 'a new failure and its retry', timeoutMs: 5_000 });
    assert.deepEqual(
      log.lines.filter((l) => l.level === 'error').map((l) => l.obj.retryInMs),
      [40, 80, 100, 100, 40],
    );
    await q.stop();
  });

  it('handles a handler that throws synchronously like one that rejects', async () => {
    let calls = 0;
    const q = new WorkQueue(
      (() => {
        calls++;
        if (calls === 1) throw new Error('sync');
        return Promise.resolve();
      }) as (key: string) => Promise<ReconcileResult>,
      { baseDelayMs: 5 },
    );
    q.start();
    q.add('k');
    await waitFor(() => calls === 2, { what: 'the retry' });
    await q.stop();
  });

  it('requeueAfterMs runs the key again later; add() of a delayed key runs it now', async () => {
    const runs: { key: string; at: number }[] = [];
    const results: Record<string, ReconcileResult[]> = {
      r: [{ requeueAfterMs: 80 }, undefined],
      d: [{ requeueAfterMs: 300 }, undefined, { requeueAfterMs: 1 }],
    };
    const q = new WorkQueue(async (key) => {
      runs.push({ key, at: performance.now() });
      return results[key]?.shift();
    });
    q.start();
    q.add('r');
    await waitFor(() => runs.filter((r) => r.key === 'r').length === 2, { what: 'the requeued run' });
    const [r1, r2] = runs.filter((r) => r.key === 'r');
    assert.ok(r2.at - r1.at >= 78, `requeued after ${r2.at - r1.at} ms`);

    q.add('d'); // returns requeueAfterMs 300
    await waitFor(() => runs.some((r) => r.key === 'd'));
    const t0 = performance.now();
    q.add('d'); // runs now instead of in 300 ms, and the delayed run is cancelled
    await waitFor(() => runs.filter((r) => r.key === 'd').length === 2, { what: 'the early run' });
    assert.ok(performance.now() - t0 < 250, 'ran at once');
    // A sentinel due after the cancelled run would have been due: when it runs, d ran only twice.
    q.addAfter('sentinel', 450);
    await waitFor(() => runs.some((r) => r.key === 'sentinel'), { what: 'the sentinel' });
    assert.equal(runs.filter((r) => r.key === 'd').length, 2);
    await q.stop();
  });

  it('addAfter keeps the earliest pending run and does not delay a key already waiting', async () => {
    const runs: string[] = [];
    const q = new WorkQueue(async (key) => void runs.push(key));
    q.addAfter('a', 5_000);
    q.addAfter('a', 30);
    q.addAfter('a', 10_000);
    q.start();
    await waitFor(() => runs.length === 1, { what: 'the earliest delayed run' });
    q.add('b');
    q.addAfter('b', 5_000);
    await waitFor(() => runs.length === 2, { what: 'b at once' });
    assert.deepEqual(runs, ['a', 'b']);
    await q.stop();
  });

  it('stop() waits for running handlers and runs nothing after', async () => {
    const block = gate();
    let finished = false;
    const runs: string[] = [];
    const q = new WorkQueue(async (key) => {
      runs.push(key);
      if (key === 'slow') {
        await block.promise;
        finished = true;
        return { requeueAfterMs: 1 };
      }
    });
    q.start();
    q.add('slow');
    await waitFor(() => runs.length === 1);
    q.addAfter('later', 20);
    let stopped = false;
    const stopping = q.stop().then(() => (stopped = true));
    q.add('after-stop');
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(stopped, false, 'stop() waits for the running handler');
    block.open();
    await stopping;
    assert.equal(finished, true);
    assert.deepEqual(runs, ['slow']);
  });

  it('exports controller-runtime metrics; queues of different controllers share a registry', async () => {
    const registry = new Registry();
    const block = gate();
    let n = 0;
    const q = new WorkQueue(
      async (key) => {
        n++;
        if (key === 'bad' && n < 10) throw new Error('bad');
        if (key === 'again') return { requeueAfterMs: 60_000 };
        if (key === 'wait') await block.promise;
      },
      { controller: 'smtprelay', metrics: registry, baseDelayMs: 5_000 },
    );
    const other = new WorkQueue(async () => {}, { controller: 'ippool', metrics: registry });
    q.add('wait');
    q.add('ok');
    q.add('bad');
    q.add('again');
    other.add('x');
    const depth = async () =>
      (await registry.getSingleMetric('workqueue_depth')!.get()).values.map((v) => [v.labels.name, v.value]);
    assert.deepEqual(await depth(), [
      ['smtprelay', 4],
      ['ippool', 1],
    ]);
    q.start();
    await waitFor(async () => (await depth())[0][1] === 3, { what: 'the first key taken' });
    block.open();
    await waitFor(async () => (await depth())[0][1] === 0, { what: 'the queue drained' });
    const total = async () => {
      const m = await registry.getSingleMetric('controller_runtime_reconcile_total')!.get();
      return Object.fromEntries(m.values.map((v) => [`${v.labels.controller}/${v.labels.result}`, v.value]));
    };
    await waitFor(async () => Object.values(await total()).reduce((a, b) => a + b, 0) === 4, {
      what: 'four reconciles counted',
    });
    assert.deepEqual(await total(), {
      'smtprelay/success': 2,
      'smtprelay/error': 1,
      'smtprelay/requeue_after': 1,
    });
    const text = await registry.metrics();
    assert.match(text, /controller_runtime_reconcile_errors_total\{controller="smtprelay"\} 1/);
    assert.match(text, /controller_runtime_reconcile_time_seconds_count\{controller="smtprelay"\} 4/);
    other.start();
    await waitFor(async () => (await total())['ippool/success'] === 1);
    await q.stop();
    await other.stop();
  });

  it('accepts a pino logger', async () => {
    const chunks: string[] = [];
    const log = pino({ level: 'error' }, { write: (s: string) => void chunks.push(s) });
    let calls = 0;
    const q = new WorkQueue(
      async () => {
        if (++calls === 1) throw new Error('once');
      },
      { log, baseDelayMs: 1, controller: 'pino' },
    );
    q.start();
    q.add('k');
    await waitFor(() => calls === 2);
    await q.stop();
    const line = JSON.parse(chunks[0]) as { key: string; controller: string; msg: string };
    assert.equal(line.key, 'k');
    assert.equal(line.controller, 'pino');
    assert.match(line.msg, /reconcile failed/);
  });
});
