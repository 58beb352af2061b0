/**
 * Decide: which relay pods want an address of an IpPool, and the pool's status once `allocate` gave them
 * addresses. Pure functions; the events they call for are returned, not written.
 */
import type { IpPool, IpPoolStatus, SmtpRelay } from '../api/types.js';
import { podNames } from '../constants.js';
import { setCondition } from '../conditions.js';
import type { EventIntent } from '../events.js';
import { warmupToday, type AllocationResult, type PodWant } from './allocate.js';

export interface RelayPods {
  relay: SmtpRelay;
  /** The relay's StatefulSet replicas (0 when it has none). */
  stsReplicas: number;
  /** Node of each of its pods that is scheduled. */
  nodes: Map<string, string>;
}

/**
 * The pods that exist or will, of every relay sending from the pool: the larger of the spec and the
 * StatefulSet (draining pods keep their address). HostNetwork pools allocate once a pod is scheduled.
 */
export function poolWants(pool: IpPool, relays: RelayPods[]): PodWant[] {
  const wants: PodWant[] = [];
  for (const { relay, stsReplicas, nodes } of relays) {
    if (relay.metadata.deletionTimestamp) continue;
    const count = Math.max(relay.spec.replicas ?? 0, stsReplicas);
    for (const pod of podNames(relay.metadata.name!, count)) {
      const node = nodes.get(pod);
      if (pool.spec.mode === 'HostNetwork' && !node) continue;
      wants.push({ relay: relay.metadata.name!, pod, ...(node ? { node } : {}) });
    }
  }
  return wants;
}

export function poolStatus(
  pool: IpPool,
  result: AllocationResult,
  now: Date,
): { status: IpPoolStatus; events: EventIntent[] } {
  const events: EventIntent[] = [];
  const today = warmupToday(pool, now);
  const gen = pool.metadata.generation;
  const size = pool.spec.addresses.length;
  let conditions = pool.status?.conditions;
  const set = (type: string, ok: boolean, reason: string, message: string) => {
    conditions = setCondition(conditions, { type, status: ok ? 'True' : 'False', reason, message }, gen, now);
  };
  if (result.conflicts.length)
    events.push({ type: 'Warning', reason: 'AllocationConflict', message: result.conflicts.join('; ') });
  if (result.unallocated.length) {
    const unverified = result.skipped.length
      ? `; not allocated while their reverse DNS is not verified (requireFcrdns): ${result.skipped.join(', ')}`
      : '';
    const msg = `no free address for ${result.unallocated.map((w) => w.pod).join(', ')} (${size} addresses${unverified})`;
    set('Degraded', true, 'PoolExhausted', msg);
    set('Ready', false, 'PoolExhausted', msg);
    events.push({ type: 'Warning', reason: 'PoolExhausted', message: msg });
  } else if (result.conflicts.length) {
    set('Degraded', true, 'AllocationConflict', result.conflicts.join('; '));
    set('Ready', true, 'Allocated', 'every pod has an address');
  } else {
    set('Degraded', false, 'AsExpected', '');
    set('Ready', true, 'Allocated', `${result.allocations.length} of ${size} addresses allocated`);
  }
  const status: IpPoolStatus = {
    observedGeneration: gen,
    size,
    allocated: result.allocations.length,
    free: size - result.allocations.length,
    ...(today.day ? { warmupDay: today.day } : {}),
    ...(today.cap ? { todayCap: today.cap } : {}),
    allocations: result.allocations,
    conditions,
  };
  return { status, events };
}
