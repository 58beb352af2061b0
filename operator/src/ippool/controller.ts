/**
 * The IpPool controller: observe (the pool, the relays sending from it, their StatefulSets and pods),
 * decide (allocate.ts, status.ts), apply (status and events). Allocations live in the pool's status.
 */
import type { ApiWriter } from '../api-writer.js';
import { names } from '../constants.js';
import { poolsOf, type Caches } from '../cache.js';
import type { EventRecorder } from '../events.js';
import { allocate } from './allocate.js';
import { poolStatus, poolWants, type RelayPods } from './status.js';

export class IpPoolController {
  constructor(
    private readonly caches: Caches,
    private readonly writer: ApiWriter,
    private readonly events: EventRecorder,
    private readonly now: () => Date,
  ) {}

  async reconcile(ns: string, name: string): Promise<void> {
    const pool = this.caches.pools.get(ns, name);
    if (!pool || pool.metadata.deletionTimestamp) return;
    const pods = this.caches.pods.list().filter((p) => p.metadata.namespace === ns);
    const relays: RelayPods[] = this.caches.relays
      .list()
      .filter((r) => r.metadata.namespace === ns && poolsOf(r).includes(name))
      .map((relay) => ({
        relay,
        stsReplicas:
          this.caches.statefulsets.get(ns, names(relay.metadata.name!).statefulSet)?.spec?.replicas ?? 0,
        nodes: new Map(
          pods.filter((p) => p.spec.nodeName).map((p) => [p.metadata.name as string, p.spec.nodeName!]),
        ),
      }));
    const { status, events } = poolStatus(pool, allocate(pool, poolWants(pool, relays)), this.now());
    await this.writer.writeStatus(pool, 'ippools', status);
    this.events.emitAll(pool, events);
  }
}
