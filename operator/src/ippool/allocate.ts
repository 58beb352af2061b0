/**
 * IpPool allocation, a pure function (Strimzi's node-ID model): an address is allocated to one relay
 * pod; existing allocations stay; new pods get the lowest free address (in spec order); pods that go
 * release theirs (the StatefulSet removes the highest ordinals first, so those are released first).
 * The record lives in the IpPool's status, so it survives operator restarts.
 */
import type { IpPool, IpPoolStatus } from '../api/types.js';

export interface PodWant {
  relay: string;
  pod: string;
  /** Node the pod runs on (mode HostNetwork allocates the address of that node). */
  node?: string;
}

export type AllocationRecord = NonNullable<IpPoolStatus['allocations']>[number];

export interface AllocationResult {
  allocations: AllocationRecord[];
  /** Pods that wanted an address and got none. */
  unallocated: PodWant[];
  /** Human-readable conflicts found in the old record (duplicates, addresses no longer in the spec). */
  conflicts: string[];
  /** Free addresses `allowed` refused to new pods (requireFcrdns: reverse DNS not verified). */
  skipped: string[];
}

const ordinal = (pod: string) => Number(/-(\d+)$/.exec(pod)?.[1] ?? 0);
const byPod = (a: { relay: string; pod: string }, b: { relay: string; pod: string }) =>
  a.relay.localeCompare(b.relay) || ordinal(a.pod) - ordinal(b.pod) || a.pod.localeCompare(b.pod);

/**
 * `allowed`: whether a free address may go to a new pod (ippool/verify.ts `allocatable` for
 * requireFcrdns); addresses already allocated stay whatever it says.
 */
export function allocate(
  pool: IpPool,
  wants: PodWant[],
  allowed: (ip: string) => boolean = () => true,
): AllocationResult {
  const mode = pool.spec.mode ?? 'PodNetwork';
  const addresses = pool.spec.addresses;
  const inSpec = new Map(addresses.map((a) => [a.ip, a]));
  const wanted = new Map(wants.map((w) => [`${w.relay}/${w.pod}`, w]));
  const conflicts: string[] = [];
  const taken = new Map<string, AllocationRecord>();
  const podHas = new Set<string>();
  for (const a of pool.status?.allocations ?? []) {
    const key = `${a.relay}/${a.pod}`;
    const w = wanted.get(key);
    if (!w) continue; // the pod is gone: released
    if (!inSpec.has(a.ip)) {
      conflicts.push(`${a.ip} (allocated to ${a.pod}) is no longer in the pool`);
      continue;
    }
    if (taken.has(a.ip)) {
      conflicts.push(
        `${a.ip} was allocated twice (${taken.get(a.ip)!.pod} and ${a.pod}); kept ${taken.get(a.ip)!.pod}`,
      );
      continue;
    }
    if (podHas.has(key)) {
      conflicts.push(`${a.pod} of ${a.relay} held two addresses; ${a.ip} released`);
      continue;
    }
    if (mode === 'HostNetwork' && w.node && inSpec.get(a.ip)!.node !== w.node) continue; // the pod moved
    taken.set(a.ip, a);
    podHas.add(key);
  }
  const unallocated: PodWant[] = [];
  for (const w of [...wants].sort(byPod)) {
    const key = `${w.relay}/${w.pod}`;
    if (podHas.has(key)) continue;
    const free = addresses.find(
      (a) =>
        !taken.has(a.ip) &&
        allowed(a.ip) &&
        (mode !== 'HostNetwork' || (w.node !== undefined && a.node === w.node)),
    );
    if (!free) {
      unallocated.push(w);
      continue;
    }
    const rec = { ip: free.ip, relay: w.relay, pod: w.pod };
    taken.set(free.ip, rec);
    podHas.add(key);
  }
  const allocations = [...taken.values()].sort(byPod);
  const skipped = addresses.filter((a) => !taken.has(a.ip) && !allowed(a.ip)).map((a) => a.ip);
  return { allocations, unallocated, conflicts, skipped };
}

/** Warm-up day (1 = start day) and today's cap per address, as the relay computes them. */
export function warmupToday(pool: IpPool, now: Date): { day?: number; cap?: number } {
  const w = pool.spec.warmup;
  const perDay = pool.spec.addresses.map((a) => a.perDay).filter((x): x is number => !!x);
  const dayCap = perDay.length ? Math.min(...perDay) : undefined;
  if (!w) return dayCap ? { cap: dayCap } : {};
  const start = Date.parse(`${w.start}T00:00:00Z`);
  const today = Math.floor(now.getTime() / 86_400_000) * 86_400_000;
  const day = Math.max(1, Math.floor((today - start) / 86_400_000) + 1);
  if (day > w.dailyCaps.length) return dayCap ? { cap: dayCap } : {};
  const cap = w.dailyCaps[day - 1];
  return { day, cap: dayCap ? Math.min(cap, dayCap) : cap };
}
