// The IpPool controller's decisions as pure functions: which pods want an address, and the pool's status
// and events once allocate() gave them addresses.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { IpPool, SmtpRelay } from '../../operator/src/api/types.js';
import { findCondition } from '../../operator/src/conditions.js';
import { allocate } from '../../operator/src/ippool/allocate.js';
import { poolStatus, poolWants } from '../../operator/src/ippool/status.js';

const NOW = new Date('2026-12-05T07:00:00.000Z');
const pool = (
  mode: 'PodNetwork' | 'HostNetwork',
  addresses: { ip: string }[],
  status?: IpPool['status'],
): IpPool =>
  ({
    apiVersion: 'cartero.io/v1alpha1',
    kind: 'IpPool',
    metadata: { name: 'warm', namespace: 'ns', generation: 2 },
    spec: { mode, addresses: addresses.map((a) => ({ ehlo: `mx.${a.ip}.example`, ...a })) },
    ...(status ? { status } : {}),
  }) as IpPool;
const relay = (name: string, replicas: number, deleting = false): SmtpRelay =>
  ({
    apiVersion: 'cartero.io/v1alpha1',
    kind: 'SmtpRelay',
    metadata: { name, namespace: 'ns', ...(deleting ? { deletionTimestamp: NOW } : {}) },
    spec: { replicas, tenants: [{ name: 't', ipPool: 'warm' }] },
  }) as SmtpRelay;

describe('IpPool wants', () => {
  it('counts the larger of spec and StatefulSet (draining pods keep their address); skips relays being deleted', () => {
    const wants = poolWants(pool('PodNetwork', []), [
      { relay: relay('a', 1), stsReplicas: 2, nodes: new Map() },
      { relay: relay('b', 1), stsReplicas: 0, nodes: new Map([['b-0', 'n1']]) },
      { relay: relay('c', 3, true), stsReplicas: 3, nodes: new Map() },
    ]);
    assert.deepEqual(wants, [
      { relay: 'a', pod: 'a-0' },
      { relay: 'a', pod: 'a-1' },
      { relay: 'b', pod: 'b-0', node: 'n1' },
    ]);
  });

  it('HostNetwork: only scheduled pods want an address', () => {
    const wants = poolWants(pool('HostNetwork', []), [
      { relay: relay('a', 2), stsReplicas: 2, nodes: new Map([['a-1', 'n2']]) },
    ]);
    assert.deepEqual(wants, [{ relay: 'a', pod: 'a-1', node: 'n2' }]);
  });
});

describe('IpPool status', () => {
  const addresses = [{ ip: '192.0.2.1' }, { ip: '192.0.2.2' }];

  it('Ready Allocated with the counts; no events', () => {
    const p = pool('PodNetwork', addresses);
    const r = poolStatus(p, allocate(p, [{ relay: 'a', pod: 'a-0' }]), NOW);
    assert.deepEqual([r.status.size, r.status.allocated, r.status.free], [2, 1, 1]);
    const ready = findCondition(r.status.conditions, 'Ready')!;
    assert.deepEqual(
      [ready.status, ready.reason, ready.message],
      ['True', 'Allocated', '1 of 2 addresses allocated'],
    );
    assert.equal(findCondition(r.status.conditions, 'Degraded')!.status, 'False');
    assert.equal(r.status.observedGeneration, 2);
    assert.deepEqual(r.events, []);
  });

  it('PoolExhausted: Ready False, Degraded, and a Warning event naming the pods without an address', () => {
    const p = pool('PodNetwork', addresses.slice(0, 1));
    const r = poolStatus(
      p,
      allocate(p, [
        { relay: 'a', pod: 'a-0' },
        { relay: 'a', pod: 'a-1' },
      ]),
      NOW,
    );
    const ready = findCondition(r.status.conditions, 'Ready')!;
    assert.deepEqual([ready.status, ready.reason], ['False', 'PoolExhausted']);
    assert.deepEqual(r.events, [
      { type: 'Warning', reason: 'PoolExhausted', message: 'no free address for a-1 (1 addresses)' },
    ]);
  });

  it('AllocationConflict: an old allocation of an address no longer in the spec is Degraded, still Ready', () => {
    const p = pool('PodNetwork', addresses, {
      allocations: [{ relay: 'a', pod: 'a-0', ip: '198.51.100.9' }],
    } as IpPool['status']);
    const result = allocate(p, [{ relay: 'a', pod: 'a-0' }]);
    assert.ok(result.conflicts.length, 'allocate reports the conflict');
    const r = poolStatus(p, result, NOW);
    assert.equal(findCondition(r.status.conditions, 'Degraded')!.reason, 'AllocationConflict');
    assert.equal(findCondition(r.status.conditions, 'Ready')!.status, 'True');
    assert.deepEqual(
      r.events.map((e) => e.reason),
      ['AllocationConflict'],
    );
  });
});
