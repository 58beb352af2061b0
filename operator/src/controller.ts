/**
 * The operator: SmtpRelay and IpPool objects into relay fleets. It starts the informer caches, maps
 * their events to work-queue keys, and hands each key to its kind's controller (relay/controller.ts,
 * ippool/controller.ts). Level-based: every run re-reads the caches, computes the desired objects with
 * pure functions (relay/config-render.ts, relay/workload.ts) and decides with others, applies what
 * differs with server-side apply (one field manager) and writes status only when it changed, so a fleet
 * at rest costs no API writes.
 */
import { CoreV1Api, type KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { Gauge } from 'prom-client';
import type { SmtpRelay } from './api/types.js';
import { ApiWriter } from './api-writer.js';
import { poolsOf, secretsOf, startCaches, type CacheName, type Caches } from './cache.js';
import { findCondition } from './conditions.js';
import { EventRecorder } from './events.js';
import { IpPoolController } from './ippool/controller.js';
import { stableJson } from './objects.js';
import { RelayController } from './relay/controller.js';
import type { InformerEventType } from './runtime/informer.js';
import { WorkQueue } from './runtime/workqueue.js';

export { errorText } from './errors.js';

export interface OperatorOptions {
  kc: KubeConfig;
  log: Logger;
  /** Relay image for SmtpRelays that name none. */
  defaultImage: string;
  /** Watch these namespaces; all namespaces when unset or empty. */
  namespaces?: string[];
  metrics?: Registry;
  /** How often fleet figures are read from the relays (and pauses and suppressions copied). */
  statusIntervalMs?: number;
  /** Workers of the work queue. */
  concurrency?: number;
  /** How often IpPool addresses and DKIM records are checked in DNS through a relay pod (default 10 min). */
  dnsCheckIntervalMs?: number;
  now?: () => Date;
}

export class Operator {
  private readonly log: Logger;
  private readonly queue: WorkQueue;
  private caches?: Caches;
  private relayController?: RelayController;
  private poolController?: IpPoolController;
  private readonly now: () => Date;
  /** Per SmtpRelay: what a change must touch to be worth a reconcile (not our own status writes). */
  private readonly relaySigs = new Map<string, string>();
  private readonly gauges?: { relays: Gauge; ready: Gauge };
  private stopped = false;

  constructor(private readonly o: OperatorOptions) {
    this.log = o.log;
    this.now = o.now ?? (() => new Date());
    this.queue = new WorkQueue((key) => this.reconcile(key), {
      controller: 'smtprelay',
      concurrency: o.concurrency ?? 4,
      ...(o.metrics ? { metrics: o.metrics } : {}),
      log: o.log,
    });
    if (o.metrics) {
      this.gauges = {
        relays: new Gauge({
          name: 'cartero_operator_smtprelays',
          help: 'SmtpRelays watched',
          registers: [o.metrics],
        }),
        ready: new Gauge({
          name: 'cartero_operator_smtprelays_ready',
          help: 'SmtpRelays whose Ready condition is True',
          registers: [o.metrics],
        }),
      };
    }
  }

  async start(): Promise<void> {
    const caches = startCaches({
      kc: this.o.kc,
      ...(this.o.namespaces ? { namespaces: this.o.namespaces } : {}),
      log: this.log,
      onEvent: (cache, type, obj) => this.onEvent(cache, obj, type),
    });
    this.caches = caches;
    const writer = new ApiWriter(this.o.kc, () => caches);
    const events = new EventRecorder(this.o.kc.makeApiClient(CoreV1Api), this.log, this.now);
    this.relayController = new RelayController({
      caches,
      writer,
      events,
      log: this.log,
      now: this.now,
      defaultImage: this.o.defaultImage,
      statusIntervalMs: this.o.statusIntervalMs ?? 5000,
      ...(this.o.dnsCheckIntervalMs ? { dnsCheckIntervalMs: this.o.dnsCheckIntervalMs } : {}),
    });
    this.poolController = new IpPoolController({
      caches,
      writer,
      events,
      now: this.now,
      log: this.log,
      ...(this.o.dnsCheckIntervalMs ? { dnsCheckIntervalMs: this.o.dnsCheckIntervalMs } : {}),
      ...(this.o.metrics ? { metrics: this.o.metrics } : {}),
    });
    await Promise.all(Object.values(caches).map((i) => i.synced()));
    this.queue.start();
    for (const r of caches.relays.list()) this.queue.add(`relay/${r.metadata.namespace}/${r.metadata.name}`);
    for (const p of caches.pools.list()) this.queue.add(`pool/${p.metadata.namespace}/${p.metadata.name}`);
    this.log.info({ relays: caches.relays.list().length }, 'operator.started');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.queue.stop();
    for (const i of Object.values(this.caches ?? {})) i.stop();
  }

  /** Maps an informer event to the keys it concerns. */
  private onEvent(cache: CacheName, obj: KubernetesObject, type: InformerEventType): void {
    // events arrive only after start() set the caches
    if (this.stopped || !this.caches) return;
    const m = obj.metadata ?? {};
    const ns = m.namespace;
    const name = m.name;
    switch (cache) {
      case 'relays': {
        // A write of our own to status changes nothing we reconcile from: skip it (like controller-
        // runtime's GenerationChangedPredicate, but also watching finalizers, annotations, deletion).
        const key = `${ns}/${name}`;
        const sig = stableJson([m.uid, m.generation, m.finalizers, m.annotations, m.deletionTimestamp]);
        const seen = this.relaySigs.get(key);
        this.relaySigs.set(key, sig);
        if (type === 'DELETED') this.relaySigs.delete(key);
        else if (seen === sig) return;
        this.queue.add(`relay/${ns}/${name}`);
        // the relays informer reports SmtpRelays (the object itself: a deleted one is no longer cached)
        for (const p of poolsOf(obj as SmtpRelay)) this.queue.add(`pool/${ns}/${p}`);
        return;
      }
      case 'pools':
        this.queue.add(`pool/${ns}/${name}`);
        for (const r of this.caches.relays.list())
          if (r.metadata.namespace === ns && poolsOf(r).includes(name!))
            this.queue.add(`relay/${ns}/${r.metadata.name}`);
        return;
      case 'secrets':
        for (const r of this.caches.relays.list())
          if (r.metadata.namespace === ns && secretsOf(r).includes(name!))
            this.queue.add(`relay/${ns}/${r.metadata.name}`);
        return;
      default: {
        const relay = m.labels?.['app.kubernetes.io/instance'];
        if (cache === 'pods' && type === 'DELETED') this.relayController?.figures.forget(m.uid!);
        if (relay) this.queue.add(`relay/${ns}/${relay}`);
        if (cache === 'pods' && relay) {
          const r = this.caches.relays.get(ns, relay);
          if (r) for (const p of poolsOf(r)) this.queue.add(`pool/${ns}/${p}`);
        }
      }
    }
  }

  private async reconcile(key: string): Promise<{ requeueAfterMs?: number } | void> {
    const [kind, ns, name] = key.split('/');
    if (kind === 'pool') return this.poolController!.reconcile(ns, name);
    const result = await this.relayController!.reconcile(ns, name);
    this.updateGauges();
    return result;
  }

  private updateGauges(): void {
    if (!this.gauges || !this.caches) return;
    const relays = this.caches.relays.list();
    this.gauges.relays.set(relays.length);
    this.gauges.ready.set(
      relays.filter((r) => findCondition(r.status?.conditions, 'Ready')?.status === 'True').length,
    );
  }
}
