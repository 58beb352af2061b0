/** The slim queue index: slots, interning and the in-place schedule (heap with positions). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QueueIndex, SEVERAL, F_DSN } from '../../relay/src/delivery/queue-index.js';

const fields = (nextAt: number, domains: string[] = ['a.test'], tenant = 't1') => ({
  nextAt,
  arrivedAt: 1,
  size: 100,
  attempts: 0,
  tenant,
  domains,
  flags: 0,
});

/** Pops everything in schedule order. */
function drain(ix: QueueIndex): number[] {
  const out: number[] = [];
  for (let s = ix.peek(); s >= 0; s = ix.peek()) {
    out.push(ix.nextAt[s]);
    ix.unschedule(s);
  }
  return out;
}

test('the schedule pops in time order through inserts, reschedules, unschedules and removals', () => {
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 1e6;
  const ix = new QueueIndex();
  const want = new Map<string, number>();
  for (let i = 0; i < 3000; i++) {
    const id = `id${i}`;
    const at = Math.floor(rnd());
    ix.insert(id, fields(at));
    want.set(id, at);
  }
  for (let i = 0; i < 3000; i += 3) {
    const at = Math.floor(rnd());
    ix.schedule(ix.slot(`id${i}`)!, at);
    want.set(`id${i}`, at);
  }
  for (let i = 1; i < 3000; i += 7) {
    ix.remove(`id${i}`);
    want.delete(`id${i}`);
  }
  for (let i = 2; i < 3000; i += 11) {
    if (!want.has(`id${i}`)) continue;
    ix.unschedule(ix.slot(`id${i}`)!);
    want.delete(`id${i}`);
  }
  // freed slots are reused
  const before = ix.highWater;
  ix.insert('late', fields(5));
  want.set('late', 5);
  assert.equal(ix.highWater, before);
  assert.deepEqual(
    drain(ix),
    [...want.values()].sort((a, b) => a - b),
  );
});

test('tenants and domains are interned; several pending domains are kept exactly', () => {
  const ix = new QueueIndex();
  const a = ix.insert('A', fields(1, ['x.test']));
  const b = ix.insert('B', { ...fields(2, ['x.test', 'y.test'], 't2'), flags: F_DSN });
  assert.equal(ix.tenantOf(a), 't1');
  assert.equal(ix.tenantOf(b), 't2');
  assert.equal(ix.domain[a], ix.domainNames.find('x.test'));
  assert.equal(ix.domain[b], SEVERAL);
  assert.ok(ix.hasDomain(b, ix.domainNames.find('y.test')!));
  assert.ok(!ix.hasDomain(a, ix.domainNames.find('y.test')!));
  ix.update(b, { attempts: 3, domains: ['y.test'] });
  assert.equal(ix.domain[b], ix.domainNames.find('y.test'));
  assert.equal(ix.attempts[b], 3);
  assert.equal(ix.flags[b] & F_DSN, F_DSN);
  assert.equal(ix.count, 2);
  ix.remove('A');
  assert.equal(ix.count, 1);
  assert.equal(ix.slot('A'), undefined);
});
