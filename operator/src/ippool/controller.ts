/**
 * The IpPool controller: observe (the pool, the relays sending from it, their StatefulSets and pods, and
 * the DNS checks a Ready relay pod runs for it), decide (allocate.ts, status.ts, verify.ts), apply
 * (status and events). Allocations and DNS results live in the pool's status.
 */
import type { Logger } from 'pino';
import { Gauge, type Registry } from 'prom-client';
import type { IpPool, SmtpRelay } from '../api/types.js';
import type { ApiWriter } from '../api-writer.js';
import { names } from '../constants.js';
import { isReady, podsOf, poolsOf, type Caches } from '../cache.js';
import { errorText } from '../errors.js';
import type { EventRecorder } from '../events.js';
import { RelayAdmin } from '../relay/admin-client.js';
import { secretKeys } from '../relay/config-render.js';
import type { DnsChecksResponse, FcrdnsCheck } from '../../../relay/src/contract/index.js';
import { allocate } from './allocate.js';
import { poolStatus, poolWants, type RelayPods } from './status.js';
import { addressEntries, allocatable, checkDueIn, checkSignature, dnsStatus } from './verify.js';

/** Default time between two DNS checks of a pool at rest. */
export const DEFAULT_DNS_CHECK_INTERVAL_MS = 10 * 60_000;
/** After a failed check (the relay did not answer), the next try. */
const RETRY_MS = 30_000;
/** A check of up to 256 addresses through the relay's resolvers may take a while. */
const CHECK_TIMEOUT_MS = 60_000;
/** Pods asked before a check counts as failed (each may take CHECK_TIMEOUT_MS). */
const MAX_PODS_TRIED = 3;

export interface IpPoolControllerOptions {
  caches: Caches;
  writer: ApiWriter;
  events: EventRecorder;
  now: () => Date;
  log: Logger;
  /** How often a pool's addresses are checked at rest (also at once when they change). */
  dnsCheckIntervalMs?: number;
  metrics?: Registry;
}

export class IpPoolController {
  /** Per pool `ns/name`: the addresses last checked and when (a successful or failed check). */
  private readonly checked = new Map<string, { sig: string; at: number; error?: string }>();
  private readonly verifiedGauge?: Gauge<'namespace' | 'pool' | 'ip'>;
  /** Per pool: the addresses with a series in verifiedGauge (removed with the pool or the address). */
  private readonly series = new Map<string, Set<string>>();
  private readonly intervalMs: number;

  constructor(private readonly o: IpPoolControllerOptions) {
    this.intervalMs = o.dnsCheckIntervalMs ?? DEFAULT_DNS_CHECK_INTERVAL_MS;
    if (o.metrics)
      this.verifiedGauge = new Gauge({
        name: 'cartero_ippool_address_verified',
        help: 'IpPool address with forward-confirmed reverse DNS for its EHLO name (1) or not (0), as last checked through a relay pod.',
        labelNames: ['namespace', 'pool', 'ip'],
        registers: [o.metrics],
      });
  }

  async reconcile(ns: string, name: string): Promise<{ requeueAfterMs?: number } | void> {
    const { caches, writer, events } = this.o;
    const pool = caches.pools.get(ns, name);
    if (!pool || pool.metadata.deletionTimestamp) {
      this.forget(ns, name);
      return;
    }
    const pods = caches.pods.list().filter((p) => p.metadata.namespace === ns);
    const users = caches.relays
      .list()
      .filter((r) => r.metadata.namespace === ns && poolsOf(r).includes(name))
      .sort((a, b) => a.metadata.name!.localeCompare(b.metadata.name!));
    const relays: RelayPods[] = users.map((relay) => ({
      relay,
      stsReplicas: caches.statefulsets.get(ns, names(relay.metadata.name!).statefulSet)?.spec?.replicas ?? 0,
      nodes: new Map(
        pods.filter((p) => p.spec.nodeName).map((p) => [p.metadata.name as string, p.spec.nodeName!]),
      ),
    }));

    // --- DNS: check through a Ready relay pod when due
    const now = this.o.now();
    const key = `${ns}/${name}`;
    const sig = checkSignature(pool);
    let dueIn = checkDueIn(this.checked.get(key), sig, this.intervalMs, now.getTime());
    let checks: FcrdnsCheck[] | undefined;
    let noResolver = false;
    let checkError = this.checked.get(key)?.sig === sig ? this.checked.get(key)?.error : undefined;
    if (dueIn === 0) {
      const r = await this.check(pool, users);
      noResolver = r.noResolver;
      checkError = r.error;
      checks = r.checks;
      if (!noResolver) {
        this.checked.set(key, { sig, at: now.getTime(), ...(r.error ? { error: r.error } : {}) });
        dueIn = r.error ? RETRY_MS : this.intervalMs;
      }
    }
    const entries = addressEntries(pool, checks, now);
    this.showMetrics(ns, name, entries);

    const result = allocate(pool, poolWants(pool, relays), allocatable(pool, entries));
    const { status, events: intents } = poolStatus(pool, result, now);
    const full = dnsStatus(pool, status, { entries, noResolver, ...(checkError ? { checkError } : {}) }, now);
    await writer.writeStatus(pool, 'ippools', full);
    events.emitAll(pool, intents);
    // no Ready pod yet: a pod turning Ready enqueues the pool (controller.ts), no timer needed
    return noResolver ? undefined : { requeueAfterMs: Math.max(1000, dueIn) };
  }

  /** FCrDNS of every address, asked of the first Ready pod (of the relays by name) that answers (at most MAX_PODS_TRIED asked). */
  private async check(
    pool: IpPool,
    users: SmtpRelay[],
  ): Promise<{ checks?: FcrdnsCheck[]; noResolver: boolean; error?: string }> {
    const ns = pool.metadata.namespace!;
    let error: string | undefined;
    let tried = 0;
    for (const relay of users) {
      if (relay.metadata.deletionTimestamp) continue;
      const secret = this.o.caches.secrets.get(ns, names(relay.metadata.name!).secret);
      const raw = secret?.data?.[secretKeys.admin];
      if (typeof raw !== 'string') continue;
      const token = Buffer.from(raw, 'base64').toString('utf8');
      for (const pod of podsOf(this.o.caches, ns, relay.metadata.name!)) {
        if (!isReady(pod) || !pod.status?.podIP) continue;
        if (tried++ === MAX_PODS_TRIED) return { noResolver: false, error };
        try {
          const res = await new RelayAdmin(`http://${pod.status.podIP}:9025`, token).call<DnsChecksResponse>(
            'POST',
            '/dns/checks',
            { fcrdns: pool.spec.addresses.map((a) => ({ ip: a.ip, ehlo: a.ehlo })) },
            CHECK_TIMEOUT_MS,
          );
          return { checks: res.fcrdns, noResolver: false };
        } catch (e) {
          error = `${pod.metadata.name}: ${errorText(e)}`;
          this.o.log.warn(
            { ippool: `${ns}/${pool.metadata.name}`, pod: pod.metadata.name, err: errorText(e) },
            'ippool.dns-check.failed',
          );
        }
      }
    }
    return tried ? { noResolver: false, error } : { noResolver: true };
  }

  private showMetrics(ns: string, pool: string, entries: { ip: string; result: string }[]): void {
    if (!this.verifiedGauge) return;
    const key = `${ns}/${pool}`;
    const had = this.series.get(key) ?? new Set<string>();
    const now = new Set(entries.map((e) => e.ip));
    for (const ip of had) if (!now.has(ip)) this.verifiedGauge.remove({ namespace: ns, pool, ip });
    for (const e of entries)
      this.verifiedGauge.set({ namespace: ns, pool, ip: e.ip }, e.result === 'Verified' ? 1 : 0);
    this.series.set(key, now);
  }

  /** Forgets a pool that is gone. */
  private forget(ns: string, name: string): void {
    const key = `${ns}/${name}`;
    this.checked.delete(key);
    for (const ip of this.series.get(key) ?? [])
      this.verifiedGauge?.remove({ namespace: ns, pool: name, ip });
    this.series.delete(key);
  }
}
