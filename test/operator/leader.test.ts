import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { KubeConfig } from '@kubernetes/client-node';
import {
  startLeaderElection,
  type LeaderElection,
  type LeaderElectionOptions,
} from '../../operator/src/runtime/leader.js';
import { waitFor } from '../helpers/poll.js';
import { startApiServer, type ApiServer } from '@cartero/k8s-testbed/apiserver/server.js';
import { kubeConfig, startProxy, storeOf, type TestProxy } from './support.js';

const MICROTIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;
const NS = 'kube-system';
const TIMING = { leaseDurationSeconds: 2, renewDeadlineSeconds: 1.5, retryPeriodSeconds: 0.25 };
const NAMES = ['alpha', 'bravo', 'charlie', 'delta'];

interface Candidate {
  id: string;
  elector: LeaderElection;
  started: number[];
  stopped: number[];
}

interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

describe('leader election', () => {
  let api: ApiServer;
  let proxy: TestProxy;
  const all: Candidate[] = [];
  const tokens = Object.fromEntries(NAMES.map((n) => [`token-${n}`, n]));

  before(async () => {
    api = await startApiServer({ tokens });
    proxy = await startProxy(api.url);
  });
  after(async () => {
    for (const c of all) await c.elector.stop();
    await proxy.stop();
    await api.stop();
  });

  const leases = () => storeOf(api, 'coordination.k8s.io', 'v1', 'leases');
  const spec = (name: string) => leases().get(NS, name).spec as LeaseSpec;

  function candidate(
    id: string,
    lease: string,
    extra: Partial<LeaderElectionOptions> & { kc?: KubeConfig } = {},
  ): Candidate {
    const c: Candidate = { id, started: [], stopped: [], elector: undefined as unknown as LeaderElection };
    c.elector = startLeaderElection({
      kc: kubeConfig(api.url, `token-${id}`),
      namespace: NS,
      name: lease,
      identity: id,
      ...TIMING,
      onStartedLeading: () => c.started.push(performance.now()),
      onStoppedLeading: () => c.stopped.push(performance.now()),
      ...extra,
    });
    all.push(c);
    return c;
  }

  const leaders = (cs: Candidate[]) => cs.filter((c) => c.elector.isLeader());

  it('elects exactly one of several candidates; while idle only the leader writes, only the Lease is touched', async () => {
    const cs = NAMES.map((n) => candidate(n, 'one'));
    const leader = await waitFor(() => leaders(cs)[0], { what: 'a leader' });
    const followers = cs.filter((c) => c !== leader);
    // Idle from when every follower has seen the lease held (their first attempts may create or race).
    const heldSeen = (id: string) => {
      for (let i = api.requests.length - 1; i >= 0; i--) {
        const r = api.requests[i];
        if (r.user === id && r.name === 'one' && r.verb === 'get' && r.code === 200) return i;
      }
      return -1;
    };
    await waitFor(() => followers.every((f) => heldSeen(f.id) >= 0), {
      what: 'followers see the lease held',
    });
    const mark = Math.max(...followers.map((f) => heldSeen(f.id))) + 1;
    await waitFor(
      () => {
        assert.equal(leaders(cs).length, 1, 'never two leaders');
        assert.equal(leaders(cs)[0], leader);
        return api.requests.slice(mark).filter((r) => r.user === leader.id).length >= 6;
      },
      { what: 'six renewals', timeoutMs: 5_000 },
    );
    const idle = api.requests.slice(mark);
    for (const r of idle) {
      assert.equal(r.resource, 'leases', r.path);
      assert.equal(r.group, 'coordination.k8s.io');
      assert.equal(r.name, 'one');
      assert.equal(r.namespace, NS);
    }
    const byLeader = idle.filter((r) => r.user === leader.id);
    assert.deepEqual(new Set(byLeader.map((r) => `${r.verb} ${r.code}`)), new Set(['update 200']));
    for (const f of followers) {
      const theirs = idle.filter((r) => r.user === f.id);
      assert.ok(theirs.length >= 1, `${f.id} keeps watching the lease`);
      assert.deepEqual(new Set(theirs.map((r) => r.verb)), new Set(['get']), `${f.id} only reads`);
    }
    assert.deepEqual(leader.started.length, 1);
    assert.deepEqual(
      followers.map((f) => f.started.length + f.stopped.length),
      [0, 0, 0],
    );
    const s = spec('one');
    assert.equal(s.holderIdentity, leader.id);
    assert.equal(s.leaseDurationSeconds, 2);
    assert.equal(s.leaseTransitions, 0);
    assert.match(String(s.acquireTime), MICROTIME);
    assert.match(String(s.renewTime), MICROTIME);
    assert.ok(Date.parse(String(s.renewTime)) > Date.parse(String(s.acquireTime)), 'renewed since acquired');
    for (const c of cs) await c.elector.stop();
    assert.equal(leader.stopped.length, 1, 'stop() ends leadership locally');
  });

  it('release() hands the lease over at once (within a retry period, long before it would expire)', async () => {
    const a = candidate('alpha', 'two');
    const first = await waitFor(() => a.elector.isLeader(), { what: 'alpha leads' });
    assert.ok(first);
    const b = candidate('bravo', 'two');
    await waitFor(() => api.requests.some((r) => r.user === 'bravo' && r.name === 'two'));
    const t0 = performance.now();
    await a.elector.release();
    assert.equal(a.elector.isLeader(), false);
    const last = api.requests.filter((r) => r.user === 'alpha').at(-1);
    assert.deepEqual([last?.verb, last?.code], ['update', 200], 'the release is a preconditioned update');
    assert.equal(a.stopped.length, 1);
    await waitFor(() => b.elector.isLeader(), { what: 'bravo takes over', timeoutMs: 3_000 });
    const took = performance.now() - t0;
    assert.ok(took < 1_000, `took over after ${Math.round(took)} ms (lease duration 2000 ms)`);
    assert.ok(a.stopped[0] <= b.started[0], 'the old leader stopped before the new one started');
    const s = spec('two');
    assert.equal(s.holderIdentity, 'bravo');
    assert.equal(s.leaseTransitions, 1, 'one holder change: alpha to bravo (the release keeps the count)');
    const afterRelease = api.requests.length;
    await waitFor(() => api.requests.slice(afterRelease).filter((r) => r.user === 'bravo').length >= 4);
    assert.equal(
      api.requests.slice(afterRelease).filter((r) => r.user === 'alpha' && r.name === 'two').length,
      0,
      'a released elector stays quiet',
    );
    await b.elector.stop();
  });

  it('after a leader stops renewing (stop without release) another takes over once the lease has expired', async () => {
    const a = candidate('alpha', 'three');
    await waitFor(() => a.elector.isLeader(), { what: 'alpha leads' });
    const b = candidate('bravo', 'three');
    await waitFor(() => api.requests.some((r) => r.user === 'bravo' && r.name === 'three'));
    await a.elector.stop();
    const lastRenew = Date.parse(String(spec('three').renewTime));
    await waitFor(() => b.elector.isLeader(), { what: 'bravo takes over', timeoutMs: 6_000 });
    const s = spec('three');
    assert.equal(s.holderIdentity, 'bravo');
    assert.equal(s.leaseTransitions, 1);
    const gap = Date.parse(String(s.acquireTime)) - lastRenew;
    assert.ok(gap >= 2_000, `acquired ${gap} ms after the last renewal (lease duration 2000 ms)`);
    assert.ok(gap < 3_500, `…and promptly after expiry (${gap} ms)`);
    await b.elector.stop();
  });

  it('a leader cut off from the API server steps down within renewDeadline, before anyone else takes over', async () => {
    const a = candidate('alpha', 'four', { kc: kubeConfig(proxy.url, 'token-alpha') });
    await waitFor(() => a.elector.isLeader(), { what: 'alpha leads' });
    const b = candidate('bravo', 'four');
    await waitFor(() => api.requests.some((r) => r.user === 'bravo' && r.name === 'four'));
    proxy.mode = 'blackhole';
    const cut = performance.now();
    try {
      await waitFor(() => !a.elector.isLeader(), { what: 'alpha steps down', timeoutMs: 4_000 });
      const down = a.stopped[0] - cut;
      assert.ok(
        down <= 1_500 + 500,
        `stepped down ${Math.round(down)} ms after the cut (renewDeadline 1500 ms)`,
      );
      await waitFor(() => b.elector.isLeader(), { what: 'bravo takes over', timeoutMs: 6_000 });
      assert.ok(a.stopped[0] < b.started[0], 'no overlap');
      assert.equal(spec('four').holderIdentity, 'bravo');
    } finally {
      proxy.mode = 'pass';
    }
    await a.elector.stop();
    await b.elector.stop();
  });

  it('a write by someone else (409 on renewal) makes the leader re-read and step down; never two leaders', async () => {
    const cs = [candidate('alpha', 'five'), candidate('bravo', 'five')];
    const leader = await waitFor(() => leaders(cs)[0], { what: 'a leader' });
    const cur = leases().get(NS, 'five');
    const now = new Date().toISOString().replace('Z', '000Z');
    leases().update(NS, 'five', {
      ...cur,
      spec: { ...(cur.spec as object), holderIdentity: 'intruder', renewTime: now, acquireTime: now },
    });
    await waitFor(() => !leader.elector.isLeader(), { what: 'the leader steps down' });
    const conflicts = api.requests.filter((r) => r.user === leader.id && r.name === 'five' && r.code === 409);
    assert.ok(conflicts.length >= 1, 'its renewal met a conflict');
    await waitFor(
      () => {
        assert.ok(leaders(cs).length <= 1, 'never two leaders');
        return leaders(cs).length === 1;
      },
      { what: 'a new leader after the intruder’s lease expires', timeoutMs: 6_000 },
    );
    const s = spec('five');
    assert.equal(s.leaseTransitions, 1, 'intruder wrote transitions unchanged; the takeover added one');
    assert.notEqual(s.holderIdentity, 'intruder');
    for (const c of cs) await c.elector.stop();
  });

  it('takes an expired lease at once and judges expiry by the given clock', async () => {
    const hourAgo = new Date(Date.now() - 3_600_000).toISOString().replace('Z', '000Z');
    leases().create(NS, {
      metadata: { name: 'six' },
      spec: { holderIdentity: 'ghost', leaseDurationSeconds: 15, renewTime: hourAgo, leaseTransitions: 4 },
    });
    const a = candidate('alpha', 'six');
    await waitFor(() => a.elector.isLeader(), { what: 'alpha takes the expired lease', timeoutMs: 1_000 });
    assert.equal(spec('six').leaseTransitions, 5);
    assert.equal(spec('six').leaseDurationSeconds, 2);
    await a.elector.stop();

    const fresh = new Date().toISOString().replace('Z', '000Z');
    leases().create(NS, {
      metadata: { name: 'seven' },
      spec: { holderIdentity: 'ghost', leaseDurationSeconds: 15, renewTime: fresh },
    });
    const late = candidate('bravo', 'seven', { now: () => new Date(Date.now() + 60_000) });
    await waitFor(() => late.elector.isLeader(), { what: 'a clock a minute ahead sees the lease expired' });
    assert.ok(Date.parse(String(spec('seven').renewTime)) > Date.now() + 50_000, 'renewTime from that clock');
    await late.elector.stop();
  });

  it('rejects inconsistent timings', () => {
    const base = {
      kc: kubeConfig(api.url, 'x'),
      namespace: NS,
      name: 'x',
      identity: 'x',
      onStartedLeading() {},
      onStoppedLeading() {},
    };
    assert.throws(() => startLeaderElection({ ...base, leaseDurationSeconds: 10, renewDeadlineSeconds: 10 }));
    assert.throws(() => startLeaderElection({ ...base, renewDeadlineSeconds: 2, retryPeriodSeconds: 2 }));
    assert.throws(() => startLeaderElection({ ...base, identity: '' }));
  });
});
