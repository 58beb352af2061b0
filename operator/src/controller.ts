/**
 * The reconciler: SmtpRelay and IpPool objects into relay fleets. Level-based: every run re-reads the
 * informer caches, computes the desired objects with the pure builders, applies what differs with
 * server-side apply (one field manager) and writes status only when it changed, so a fleet at rest
 * costs no API writes.
 */
import { randomBytes } from 'node:crypto';
import {
  ApiException,
  CoreV1Api,
  CustomObjectsApi,
  KubernetesObjectApi,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type KubernetesObject,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { Gauge } from 'prom-client';
import type { Condition, IpPool, IpPoolStatus, SmtpRelay, SmtpRelayStatus } from './api/types.js';
import { checkConfigSchema } from '../../relay/src/config.js';
import { allocate, warmupToday, type PodWant } from './allocate.js';
import {
  ABANDON_ANNOTATION,
  API_VERSION,
  FIELD_MANAGER,
  FINALIZER,
  GROUP,
  VERSION,
  buildConfigMap,
  buildEgressPolicies,
  buildPdb,
  buildRelayConfig,
  buildSecret,
  buildServiceMonitor,
  buildServices,
  buildStatefulSet,
  containerPortOf,
  DEFAULT_LISTENERS,
  names,
  podNames,
  secretKeys,
  selectorString,
  type Allocation,
  type Credentials,
  type KObject,
  type Problem,
} from './builders.js';
import { findCondition, setCondition } from './conditions.js';
import { isSubset, mergePatchFor, stableJson } from './objects.js';
import {
  PURGE_ANNOTATION,
  lastPurgeOf,
  parsePurge,
  planPurge,
  recordPurge,
  type LastPurge,
  type PurgeState,
} from './purge.js';
import {
  RelayAdmin,
  drainFinished,
  drainPending,
  knownDepth,
  type QueueSuspension,
  type TenantState,
} from './relay-admin.js';
import {
  applyCall,
  decideSuspensions,
  describeSelector,
  suspendedStatus,
  suspensionKey,
  wantedSuspensions,
  type PodSuspensions,
  type SuspensionCall,
} from './suspend.js';
import { startInformer, type Informer, type InformerEventType } from './runtime/informer.js';
import { WorkQueue } from './runtime/workqueue.js';

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
  now?: () => Date;
}

const MANAGED = 'app.kubernetes.io/managed-by=cartero-operator';
/** How long a pod's last admin API figures stand in for failed reads before status reports the error. */
const FIGURES_GRACE_MS = 30_000;
const RELAY_PODS = 'app.kubernetes.io/name=cartero-relay';

type Pod = KObject & {
  spec: { nodeName?: string };
  status?: { podIP?: string; phase?: string; conditions?: { type: string; status: string }[] };
};

interface PodFigures {
  name: string;
  ready: boolean;
  ip?: string;
  revision?: string | null;
  queue?: number;
  byTenant?: Record<string, number>;
  tenants?: TenantState[];
  draining?: boolean;
  /** The relay still indexes its spool: its queue is not known yet. */
  recovering?: boolean;
  error?: string;
}

const isReady = (p: Pod) =>
  !p.metadata.deletionTimestamp &&
  !!p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');

export class Operator {
  private readonly log: Logger;
  private readonly objects: KubernetesObjectApi;
  private readonly custom: CustomObjectsApi;
  private readonly core: CoreV1Api;
  private readonly queue: WorkQueue;
  private readonly informers: Record<string, Informer<KObject>> = {};
  private readonly now: () => Date;
  private readonly statusIntervalMs: number;
  /** Per relay pod: the suppression feed position copied so far. */
  private readonly suppressionCursor = new Map<string, number>();
  /** Per relay: the last event reason emitted, so an event is written once per transition. */
  private readonly lastEvent = new Map<string, string>();
  /** Per pod uid: the last figures its admin API gave. */
  private readonly lastFigures = new Map<string, { at: number; f: PodFigures }>();
  /** Per relay pod (namespace/pod): its queue suspensions as last read, for a read that fails. */
  private readonly lastSuspensions = new Map<string, { at: number; list: QueueSuspension[] }>();
  /** Per relay pod and suspension: the messages it held when the operator suspended it. */
  private readonly heldCounts = new Map<string, number>();
  /**
   * Per SmtpRelay: the purge bookkeeping this process wrote last; it stands in for a status the
   * informer has not caught up with yet, so a pod never runs a purge twice.
   */
  private readonly purges = new Map<string, { state: PurgeState; last?: LastPurge }>();
  /** Per SmtpRelay: what a change must touch to be worth a reconcile (not our own status writes). */
  private readonly relaySigs = new Map<string, string>();
  /** Objects of kinds without an informer, as last applied by this process. */
  private readonly applied = new Map<string, string>();
  private optionalKinds = { serviceMonitor: false, ciliumEgress: false, checkedAt: 0 };
  private readonly gauges?: { relays: Gauge; ready: Gauge };
  private stopped = false;

  constructor(private readonly o: OperatorOptions) {
    this.log = o.log;
    this.now = o.now ?? (() => new Date());
    this.statusIntervalMs = o.statusIntervalMs ?? 5000;
    this.objects = KubernetesObjectApi.makeApiClient(o.kc);
    this.custom = o.kc.makeApiClient(CustomObjectsApi);
    this.core = o.kc.makeApiClient(CoreV1Api);
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

  private path(group: string, version: string, plural: string, namespace?: string): string {
    const base = group === '' ? `/api/${version}` : `/apis/${group}/${version}`;
    return namespace ? `${base}/namespaces/${namespace}/${plural}` : `${base}/${plural}`;
  }

  async start(): Promise<void> {
    const inf = (name: string, group: string, version: string, plural: string, labelSelector?: string) => {
      const namespaces = this.o.namespaces?.length ? this.o.namespaces : [undefined];
      const parts = namespaces.map((ns) =>
        startInformer<KObject>({
          kc: this.o.kc,
          path: this.path(group, version, plural, ns),
          ...(labelSelector ? { labelSelector } : {}),
          onEvent: (type, obj) => this.onEvent(name, obj, type),
          log: this.log.child({ informer: name, ...(ns ? { namespace: ns } : {}) }),
        }),
      );
      this.informers[name] = parts.length === 1 ? parts[0] : combine(parts);
    };
    inf('relays', GROUP, VERSION, 'smtprelays');
    inf('pools', GROUP, VERSION, 'ippools');
    inf('statefulsets', 'apps', 'v1', 'statefulsets', MANAGED);
    inf('configmaps', '', 'v1', 'configmaps', MANAGED);
    inf('services', '', 'v1', 'services', MANAGED);
    inf('pdbs', 'policy', 'v1', 'poddisruptionbudgets', MANAGED);
    inf('pods', '', 'v1', 'pods', RELAY_PODS);
    inf('secrets', '', 'v1', 'secrets');
    await Promise.all(Object.values(this.informers).map((i) => i.synced()));
    this.queue.start();
    for (const r of this.informers.relays.list())
      this.queue.add(`relay/${r.metadata.namespace}/${r.metadata.name}`);
    for (const p of this.informers.pools.list())
      this.queue.add(`pool/${p.metadata.namespace}/${p.metadata.name}`);
    this.log.info({ relays: this.informers.relays.list().length }, 'operator.started');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.queue.stop();
    for (const i of Object.values(this.informers)) i.stop();
  }

  private relays(): SmtpRelay[] {
    return this.informers.relays.list() as unknown as SmtpRelay[];
  }

  /** Maps an informer event to the keys it concerns. */
  private onEvent(informer: string, obj: KObject, type: InformerEventType): void {
    if (this.stopped) return;
    const ns = obj.metadata.namespace as string | undefined;
    const name = obj.metadata.name as string;
    switch (informer) {
      case 'relays': {
        // A write of our own to status changes nothing we reconcile from: skip it (like controller-
        // runtime's GenerationChangedPredicate, but also watching finalizers, annotations, deletion).
        const key = `${ns}/${name}`;
        const m = obj.metadata;
        const sig = stableJson([m.uid, m.generation, m.finalizers, m.annotations, m.deletionTimestamp]);
        const seen = this.relaySigs.get(key);
        this.relaySigs.set(key, sig);
        if (type === 'DELETED') this.relaySigs.delete(key);
        else if (seen === sig) return;
        this.queue.add(`relay/${ns}/${name}`);
        for (const p of this.poolsOf(obj as unknown as SmtpRelay)) this.queue.add(`pool/${ns}/${p}`);
        return;
      }
      case 'pools':
        this.queue.add(`pool/${ns}/${name}`);
        for (const r of this.relays())
          if (r.metadata.namespace === ns && this.poolsOf(r).includes(name))
            this.queue.add(`relay/${ns}/${r.metadata.name}`);
        return;
      case 'secrets':
        for (const r of this.relays())
          if (r.metadata.namespace === ns && this.secretsOf(r).includes(name))
            this.queue.add(`relay/${ns}/${r.metadata.name}`);
        return;
      default: {
        const relay = obj.metadata.labels?.['app.kubernetes.io/instance'] as string | undefined;
        if (informer === 'pods' && type === 'DELETED') this.lastFigures.delete(obj.metadata.uid as string);
        if (relay) this.queue.add(`relay/${ns}/${relay}`);
        if (informer === 'pods' && relay) {
          const r = this.informers.relays.get(ns, relay) as unknown as SmtpRelay | undefined;
          if (r) for (const p of this.poolsOf(r)) this.queue.add(`pool/${ns}/${p}`);
        }
      }
    }
  }

  private poolsOf(r: SmtpRelay): string[] {
    return [...new Set((r.spec?.tenants ?? []).map((t) => t.ipPool).filter((p): p is string => !!p))];
  }

  private secretsOf(r: SmtpRelay): string[] {
    const s = new Set<string>([names(r.metadata.name!).secret]);
    for (const t of r.spec?.tenants ?? []) if (t.credentialsSecret) s.add(t.credentialsSecret);
    const routing = r.spec?.routing;
    if (routing?.default?.smarthost?.credentialsSecret) s.add(routing.default.smarthost.credentialsSecret);
    for (const d of routing?.domains ?? []) if (d.credentialsSecret) s.add(d.credentialsSecret);
    for (const b of routing?.backups ?? []) if (b.credentialsSecret) s.add(b.credentialsSecret);
    if (r.spec?.tls?.secretName) s.add(r.spec.tls.secretName);
    if (r.spec?.rateLimitStore?.credentialsSecret) s.add(r.spec.rateLimitStore.credentialsSecret);
    return [...s];
  }

  private async reconcile(key: string): Promise<{ requeueAfterMs?: number } | void> {
    const [kind, ns, name] = key.split('/');
    if (kind === 'pool') return this.reconcilePool(ns, name);
    return this.reconcileRelay(ns, name);
  }

  // ---------------------------------------------------------------- IpPool

  private async reconcilePool(ns: string, name: string): Promise<void> {
    const pool = this.informers.pools.get(ns, name) as unknown as IpPool | undefined;
    if (!pool || pool.metadata.deletionTimestamp) return;
    const wants: PodWant[] = [];
    const pods = this.informers.pods.list().filter((p) => p.metadata.namespace === ns) as Pod[];
    for (const r of this.relays()) {
      if (r.metadata.namespace !== ns || !this.poolsOf(r).includes(name) || r.metadata.deletionTimestamp)
        continue;
      const sts = this.informers.statefulsets.get(ns, names(r.metadata.name!).statefulSet);
      // pods that exist or will: the larger of the spec and the StatefulSet (draining pods keep theirs)
      const count = Math.max(r.spec.replicas ?? 0, (sts?.spec?.replicas as number | undefined) ?? 0);
      for (const pod of podNames(r.metadata.name!, count)) {
        const node = pods.find((p) => p.metadata.name === pod)?.spec.nodeName;
        if (pool.spec.mode === 'HostNetwork' && !node) continue; // allocated once scheduled
        wants.push({ relay: r.metadata.name!, pod, ...(node ? { node } : {}) });
      }
    }
    const result = allocate(pool, wants);
    const now = this.now();
    const today = warmupToday(pool, now);
    let conditions = pool.status?.conditions;
    const gen = pool.metadata.generation;
    if (result.conflicts.length)
      this.event(pool as unknown as KObject, 'Warning', 'AllocationConflict', result.conflicts.join('; '));
    if (result.unallocated.length) {
      const msg = `no free address for ${result.unallocated.map((w) => w.pod).join(', ')} (${pool.spec.addresses.length} addresses)`;
      conditions = setCondition(
        conditions,
        { type: 'Degraded', status: 'True', reason: 'PoolExhausted', message: msg },
        gen,
        now,
      );
      conditions = setCondition(
        conditions,
        { type: 'Ready', status: 'False', reason: 'PoolExhausted', message: msg },
        gen,
        now,
      );
      this.event(pool as unknown as KObject, 'Warning', 'PoolExhausted', msg);
    } else if (result.conflicts.length) {
      const msg = result.conflicts.join('; ');
      conditions = setCondition(
        conditions,
        { type: 'Degraded', status: 'True', reason: 'AllocationConflict', message: msg },
        gen,
        now,
      );
      conditions = setCondition(
        conditions,
        { type: 'Ready', status: 'True', reason: 'Allocated', message: 'every pod has an address' },
        gen,
        now,
      );
    } else {
      conditions = setCondition(
        conditions,
        { type: 'Degraded', status: 'False', reason: 'AsExpected', message: '' },
        gen,
        now,
      );
      conditions = setCondition(
        conditions,
        {
          type: 'Ready',
          status: 'True',
          reason: 'Allocated',
          message: `${result.allocations.length} of ${pool.spec.addresses.length} addresses allocated`,
        },
        gen,
        now,
      );
    }
    const status: IpPoolStatus = {
      observedGeneration: gen,
      size: pool.spec.addresses.length,
      allocated: result.allocations.length,
      free: pool.spec.addresses.length - result.allocations.length,
      ...(today.day ? { warmupDay: today.day } : {}),
      ...(today.cap ? { todayCap: today.cap } : {}),
      allocations: result.allocations,
      conditions,
    };
    await this.writeStatus(pool as unknown as KObject, 'ippools', status);
  }

  // ---------------------------------------------------------------- SmtpRelay

  private async reconcileRelay(ns: string, name: string): Promise<{ requeueAfterMs?: number } | void> {
    const relay = this.informers.relays.get(ns, name) as unknown as SmtpRelay | undefined;
    if (!relay) {
      this.forgetRelay(ns, name);
      return;
    }
    const log = this.log.child({ smtprelay: `${ns}/${name}` });
    const n = names(name);
    const now = this.now();
    const pods = (this.informers.pods.list() as Pod[])
      .filter(
        (p) => p.metadata.namespace === ns && p.metadata.labels?.['app.kubernetes.io/instance'] === name,
      )
      .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name, 'en', { numeric: true }));
    const ownSecret = this.informers.secrets.get(ns, n.secret);
    const decode = (v: unknown) =>
      typeof v === 'string' ? Buffer.from(v, 'base64').toString('utf8') : undefined;
    const adminToken = decode(ownSecret?.data?.[secretKeys.admin]) || randomBytes(24).toString('base64url');
    const peerPassword = decode(ownSecret?.data?.[secretKeys.peer]) || randomBytes(24).toString('base64url');
    const admin = (ip: string) => new RelayAdmin(`http://${ip}:9025`, adminToken);

    if (relay.metadata.deletionTimestamp) return this.finalize(relay, pods, admin, log);
    if (!(relay.metadata.finalizers ?? []).includes(FINALIZER)) {
      await this.objects.patch(
        {
          apiVersion: API_VERSION,
          kind: 'SmtpRelay',
          metadata: { name, namespace: ns, finalizers: [...(relay.metadata.finalizers ?? []), FINALIZER] },
        } as KubernetesObject,
        undefined,
        undefined,
        FIELD_MANAGER,
        undefined,
        PatchStrategy.MergePatch,
      );
    }

    // --- inputs
    const credentials = new Map<string, Credentials>();
    for (const s of this.secretsOf(relay)) {
      const secret = this.informers.secrets.get(ns, s);
      const username = decode(secret?.data?.username);
      const password = decode(secret?.data?.password);
      if (username && password) credentials.set(s, { username, password });
    }
    const pools = new Map<string, IpPool>();
    const allocations: Allocation[] = [];
    for (const p of this.poolsOf(relay)) {
      const pool = this.informers.pools.get(ns, p) as unknown as IpPool | undefined;
      if (!pool) continue;
      pools.set(p, pool);
      for (const a of pool.status?.allocations ?? [])
        if (a.relay === name) allocations.push({ pool: p, ip: a.ip, pod: a.pod });
    }

    // --- replicas: lower the StatefulSet only once the pods that go are drained
    const sts = this.informers.statefulsets.get(ns, n.statefulSet);
    const desired = relay.spec.replicas ?? 2;
    const current = (sts?.spec?.replicas as number | undefined) ?? desired;
    let stsReplicas = desired;
    let drain: { message: string; pods: string[] } | undefined;
    if (sts && desired < current) {
      const going = podNames(name, current).slice(desired);
      const state = await this.drainPods(relay, pods, going, admin, log);
      if (state.done) {
        await this.carryRateUse(pods, going, admin, log);
        this.event(
          relay as unknown as KObject,
          'Normal',
          'ScaledDown',
          `drained ${going.join(', ')}; scaling to ${desired}`,
        );
      } else {
        stsReplicas = current;
        drain = { message: state.message, pods: going };
        this.event(relay as unknown as KObject, 'Normal', 'Draining', state.message);
      }
    }
    // Scale-up: a pod starts only once every pool it sends from has given it an address (HostNetwork
    // pools allocate by node, after scheduling, so they cannot hold it back).
    let waiting: string | undefined;
    if (desired > (sts ? current : 0)) {
      const from = sts ? current : 0;
      for (let i = from; i < desired; i++) {
        const pod = `${name}-${i}`;
        const missing = [...pools.values()].filter(
          (p) =>
            p.spec.mode !== 'HostNetwork' &&
            !allocations.some((a) => a.pool === p.metadata.name && a.pod === pod),
        );
        if (missing.length) {
          stsReplicas = i;
          waiting = `waiting for IpPool ${missing.map((p) => p.metadata.name).join(', ')} to allocate an address to ${pod}`;
          break;
        }
      }
    }

    // --- desired objects
    const built = buildRelayConfig({
      relay,
      defaultImage: this.o.defaultImage,
      credentials,
      pools,
      allocations,
      adminToken,
      peerPassword,
      replicas: Math.max(desired, 1),
    });
    const problems: Problem[] = [...built.problems];
    const revision = (built.doc.fleet as { revision: string }).revision;
    if (relay.spec.tls && !this.informers.secrets.get(ns, relay.spec.tls.secretName))
      problems.push({
        reason: 'SecretMissing',
        message: `TLS Secret ${relay.spec.tls.secretName} not found`,
      });
    problems.push(...this.checkSpec(relay));
    const invalid = checkConfigSchema(built.doc);
    if (invalid)
      problems.push({
        reason: 'InvalidConfig',
        message: `the relay config rendered from the spec is invalid: ${invalid.message}`,
      });
    await this.refreshOptionalKinds();
    const hostNodes = [...pools.values()]
      .filter((p) => p.spec.mode === 'HostNetwork')
      .flatMap((p) => p.spec.addresses.map((a) => a.node!).filter(Boolean));
    const desiredObjects: KObject[] = [
      buildConfigMap(relay, built.doc),
      buildSecret(relay, built.secretData),
      ...buildServices(relay),
      buildStatefulSet({
        relay,
        defaultImage: this.o.defaultImage,
        replicas: stsReplicas,
        ...(hostNodes.length ? { hostNetworkNodes: hostNodes } : {}),
      }),
    ];
    const pdb = buildPdb(relay);
    if (pdb) desiredObjects.push(pdb);
    if (this.optionalKinds.serviceMonitor) desiredObjects.push(buildServiceMonitor(relay));
    const egress = buildEgressPolicies(relay, pools, allocations);
    if (egress.length && !this.optionalKinds.ciliumEgress)
      problems.push({
        reason: 'EgressGatewayUnavailable',
        message:
          'an IpPool uses mode CiliumEgressGateway, but the CiliumEgressGatewayPolicy CRD is not installed',
      });
    else desiredObjects.push(...egress);

    let applyError: string | undefined;
    let applied = 0;
    for (const obj of desiredObjects) {
      try {
        if (await this.apply(obj)) applied++;
      } catch (e) {
        applyError = `${obj.kind} ${obj.metadata.name}: ${errorText(e)}`;
        log.warn({ err: errorText(e), kind: obj.kind, name: obj.metadata.name }, 'apply.failed');
      }
    }
    if (applied) log.info({ applied }, 'reconcile.applied');
    if (!pdb) await this.deleteIfOwned('policy/v1', 'PodDisruptionBudget', ns, n.pdb);

    // --- fleet figures, pauses and suppressions
    const figures = await this.readPods(pods, admin);
    await this.syncFleet(relay, figures, admin, log);
    const queueOps = await this.syncQueue(relay, figures, desired, admin, log, now);
    problems.push(...queueOps.problems);
    if (!drain) await this.restartDrainedSurvivors(relay, pods, figures, stsReplicas, admin, log);

    // --- status
    const status = this.relayStatus(relay, {
      ...(waiting ? { waiting } : {}),
      sts,
      figures,
      revision,
      problems,
      applyError,
      drain,
      desired,
      now,
    });
    Object.assign(status, queueOps.status);
    await this.writeStatus(relay as unknown as KObject, 'smtprelays', status);
    const ready = findCondition(status.conditions, 'Ready')?.status === 'True';
    if (ready)
      this.event(relay as unknown as KObject, 'Normal', 'Ready', `${status.readyReplicas} relays ready`);
    this.updateGauges();
    return { requeueAfterMs: drain ? Math.min(this.statusIntervalMs, 2000) : this.statusIntervalMs };
  }

  /** Rules the schema cannot express across objects, and CEL rules the API server may not evaluate. */
  private checkSpec(relay: SmtpRelay): Problem[] {
    const out: Problem[] = [];
    const seen = new Set<string>();
    for (const t of relay.spec.tenants ?? []) {
      if (seen.has(t.name)) out.push({ reason: 'InvalidSpec', message: `tenant ${t.name} is defined twice` });
      seen.add(t.name);
      if (t.ipPool && !this.informers.pools.get(relay.metadata.namespace, t.ipPool))
        out.push({ reason: 'IpPoolMissing', message: `tenant ${t.name}: IpPool ${t.ipPool} not found` });
    }
    const d = relay.spec.routing?.default;
    if (d?.type === 'smarthost' && !d.smarthost)
      out.push({
        reason: 'InvalidSpec',
        message: 'routing.default.type is smarthost but routing.default.smarthost is missing',
      });
    const ls = relay.spec.listeners ?? DEFAULT_LISTENERS;
    if (ls.some((l) => (l.tls ?? 'none') !== 'none') && !relay.spec.tls)
      out.push({ reason: 'InvalidSpec', message: 'a listener uses TLS but spec.tls.secretName is not set' });
    const tenants = new Set((relay.spec.tenants ?? []).map((t) => t.name));
    for (const q of relay.spec.queue?.suspend ?? []) {
      if (!q.tenant && !q.domain)
        out.push({ reason: 'InvalidSpec', message: 'a queue.suspend item names neither tenant nor domain' });
      else if (q.tenant && !tenants.has(q.tenant))
        out.push({
          reason: 'InvalidSpec',
          message: `queue.suspend names tenant ${q.tenant}, which is not in spec.tenants; it is not applied`,
        });
    }
    return [...new Map(out.map((p) => [p.message, p])).values()];
  }

  private async readPods(pods: Pod[], admin: (ip: string) => RelayAdmin): Promise<PodFigures[]> {
    return Promise.all(
      pods.map(async (p): Promise<PodFigures> => {
        const f: PodFigures = {
          name: p.metadata.name,
          ready: isReady(p),
          ...(p.status?.podIP ? { ip: p.status.podIP } : {}),
        };
        if (!p.status?.podIP || p.metadata.deletionTimestamp) return f;
        const a = admin(p.status.podIP);
        try {
          const [q, t, c, d] = await Promise.all([a.queue(), a.tenants(), a.config(), a.drainStatus()]);
          // a relay still indexing its spool does not know its queue yet: neither empty nor a figure
          const depth = knownDepth(q);
          Object.assign(f, {
            queue: depth,
            byTenant: depth === undefined ? undefined : q.byTenant,
            recovering: depth === undefined,
            tenants: t,
            revision: c.revision,
            draining: d.draining,
          });
          this.lastFigures.set(p.metadata.uid, { at: Date.now(), f: { ...f } });
        } catch (e) {
          // One slow or failed answer (a busy node) is not news: keep the pod's last figures for a while,
          // so status does not flap; report the error once it lasts.
          const last = this.lastFigures.get(p.metadata.uid);
          if (last && Date.now() - last.at < FIGURES_GRACE_MS) return { ...last.f, ready: f.ready };
          f.error = errorText(e);
        }
        return f;
      }),
    );
  }

  /** Copies pauses and suppressions made on one relay to every other relay of the fleet. */
  private async syncFleet(
    relay: SmtpRelay,
    figures: PodFigures[],
    admin: (ip: string) => RelayAdmin,
    log: Logger,
  ): Promise<void> {
    const live = figures.filter((f) => f.ip && f.tenants && !f.draining);
    if (live.length < 2) return;
    for (const t of relay.spec.tenants ?? []) {
      const states = live.map((f) => ({ f, s: f.tenants!.find((x) => x.name === t.name) }));
      const origin = states.find((x) => x.s?.state === 'paused' && x.s.by !== 'fleet');
      for (const { f, s } of states) {
        if (!s) continue;
        try {
          if (origin && s.state !== 'paused') {
            await admin(f.ip!).pause(
              t.name,
              `paused on ${origin.f.name}: ${origin.s!.reason ?? 'no reason given'}`,
              origin.s!.pausedUntil,
            );
            log.info({ tenant: t.name, pod: f.name, from: origin.f.name }, 'fleet.pause.copied');
          } else if (!origin && s.state === 'paused' && s.by === 'fleet') {
            await admin(f.ip!).call('POST', `/tenants/${encodeURIComponent(t.name)}/resume`, {
              source: 'fleet',
            });
            log.info({ tenant: t.name, pod: f.name }, 'fleet.resume.copied');
          }
        } catch (e) {
          log.warn({ err: errorText(e), pod: f.name }, 'fleet.pause.failed');
        }
      }
    }
    for (const f of live) {
      const key = `${relay.metadata.namespace}/${f.name}`;
      const since = this.suppressionCursor.get(key) ?? 0;
      try {
        const feed = await admin(f.ip!).suppressionChanges(since);
        for (const c of feed.changes) {
          const fromFleet = c.op === 'add' ? c.entry?.source === 'fleet' : c.source === 'fleet';
          if (fromFleet) continue;
          for (const other of live) {
            if (other === f) continue;
            if (c.op === 'add')
              await admin(other.ip!).addSuppression(
                c.tenant,
                c.address,
                `suppressed on ${f.name}: ${c.entry?.reason ?? ''}`.trim(),
              );
            else
              await admin(other.ip!)
                .removeSuppression(c.tenant, c.address)
                .catch(() => undefined);
          }
        }
        this.suppressionCursor.set(key, feed.lastSeq);
      } catch (e) {
        log.warn({ err: errorText(e), pod: f.name }, 'fleet.suppressions.failed');
      }
    }
  }

  /**
   * spec.queue.suspend and the purge annotation on every ready relay. Suspensions are level-based: each
   * reconcile reads every relay's suspensions and calls only where they differ from the spec (no call
   * when in line). A purge runs once per pod listed in status.purge.
   */
  private async syncQueue(
    relay: SmtpRelay,
    figures: PodFigures[],
    replicas: number,
    admin: (ip: string) => RelayAdmin,
    log: Logger,
    now: Date,
  ): Promise<{ problems: Problem[]; status: Pick<SmtpRelayStatus, 'queue' | 'purge' | 'lastPurge'> }> {
    const ns = relay.metadata.namespace!;
    const name = relay.metadata.name!;
    const obj = relay as unknown as KObject;
    const problems: Problem[] = [];
    const tenants = (relay.spec.tenants ?? []).map((t) => t.name);
    const ready = figures.filter((f) => f.ready && f.ip);
    const ipOf = (pod: string) => ready.find((f) => f.name === pod)!.ip!;

    // --- suspensions
    const want = wantedSuspensions(
      (relay.spec.queue?.suspend ?? []).filter((q) => !q.tenant || tenants.includes(q.tenant)),
      `spec.queue.suspend of SmtpRelay ${ns}/${name}`,
    );
    const failed: string[] = [];
    const read = await Promise.all(
      ready.map(async (f): Promise<(PodSuspensions & { fresh: boolean }) | undefined> => {
        const key = `${ns}/${f.name}`;
        try {
          const list = await admin(f.ip!).suspensions();
          this.lastSuspensions.set(key, { at: Date.now(), list });
          return { pod: f.name, suspensions: list, fresh: true };
        } catch (e) {
          const last = this.lastSuspensions.get(key);
          if (last && Date.now() - last.at < FIGURES_GRACE_MS)
            return { pod: f.name, suspensions: last.list, fresh: false };
          failed.push(`${f.name}: ${errorText(e)}`);
          return undefined;
        }
      }),
    );
    const views = read.filter((v): v is PodSuspensions & { fresh: boolean } => !!v);
    const calls = decideSuspensions(
      want,
      views.filter((v) => v.fresh),
    );
    const heldKey = (pod: string, s: { tenant?: string; domain?: string }) =>
      `${ns}/${pod}|${suspensionKey(s)}`;
    const done: { call: SuspensionCall; count: number }[] = [];
    await Promise.all(
      views.map(async (v) => {
        for (const c of calls.filter((x) => x.pod === v.pod)) {
          const sel = {
            ...(c.tenant ? { tenant: c.tenant } : {}),
            ...(c.domain ? { domain: c.domain } : {}),
          };
          try {
            let count: number;
            if (c.op === 'suspend') {
              count = (await admin(ipOf(c.pod)).suspend({ ...sel, reason: c.reason })).held;
              this.heldCounts.set(heldKey(c.pod, c), count);
            } else {
              count = (await admin(ipOf(c.pod)).resume(sel)).released;
              this.heldCounts.delete(heldKey(c.pod, c));
            }
            v.suspensions = applyCall(v.suspensions, c, now);
            this.lastSuspensions.set(`${ns}/${v.pod}`, { at: Date.now(), list: v.suspensions });
            done.push({ call: c, count });
            log.info({ pod: c.pod, op: c.op, ...sel, count }, 'queue.suspension.applied');
          } catch (e) {
            failed.push(`${c.pod}: ${c.op} ${describeSelector(c)}: ${errorText(e)}`);
          }
        }
      }),
    );
    for (const op of ['suspend', 'resume'] as const) {
      const byKey = new Map<string, { call: SuspensionCall; pods: string[]; count: number }>();
      for (const d of done.filter((x) => x.call.op === op)) {
        const k = suspensionKey(d.call);
        const g = byKey.get(k) ?? { call: d.call, pods: [], count: 0 };
        g.pods.push(d.call.pod);
        g.count += d.count;
        byKey.set(k, g);
      }
      for (const g of byKey.values()) {
        const what = `queued mail of ${describeSelector(g.call)}`;
        if (g.call.op === 'suspend')
          this.event(
            obj,
            'Normal',
            'QueueSuspended',
            `holding ${what} on ${g.pods.sort().join(', ')} (${g.count} held): ${g.call.reason}`,
            true,
          );
        else
          this.event(
            obj,
            'Normal',
            'QueueResumed',
            `released ${what} on ${g.pods.sort().join(', ')} (${g.count} released)`,
            true,
          );
      }
    }
    if (failed.length && (want.length || calls.length))
      problems.push({
        reason: 'QueueSuspendFailed',
        message: `spec.queue.suspend not applied on ${failed.sort().join('; ')}`,
      });
    const suspended = suspendedStatus(
      want,
      views.sort((a, b) => a.pod.localeCompare(b.pod, 'en', { numeric: true })),
      (pod, s) => (typeof s.held === 'number' ? s.held : this.heldCounts.get(heldKey(pod, s))),
      relay.status?.queue?.suspended,
    );

    // --- purge
    const parsed = parsePurge(relay.metadata.annotations?.[PURGE_ANNOTATION], tenants);
    if (parsed.error) problems.push({ reason: 'InvalidPurge', message: parsed.error });
    const key = `${ns}/${name}`;
    const memo = this.purges.get(key);
    const request = parsed.request;
    const mine = memo && memo.state.id === request?.id ? memo : undefined;
    const plan = planPurge({
      request,
      state: mine?.state ?? relay.status?.purge,
      pods: figures.map((f) => ({ name: f.name, ready: f.ready && !!f.ip })),
      replicas,
      now,
    });
    let state = plan.state;
    for (const pod of plan.run) {
      if (!request || !state) break;
      try {
        // a relay still indexing its spool after a start would miss what it has not found yet
        const q = (await admin(ipOf(pod)).queue()) as { recovering?: boolean };
        if (q.recovering) {
          state = recordPurge(state, pod, { error: 'the relay is still indexing its spool; waiting' });
          continue;
        }
        const result = await admin(ipOf(pod)).purge({
          ...(request.tenant ? { tenant: request.tenant } : {}),
          ...(request.domain ? { domain: request.domain } : {}),
          dsn: request.dsn,
        });
        state = recordPurge(state, pod, { result });
        log.info({ pod, id: request.id, ...result }, 'queue.purged');
      } catch (e) {
        state = recordPurge(state, pod, { error: errorText(e) });
        log.warn({ pod, id: request.id, err: errorText(e) }, 'queue.purge.failed');
        this.event(obj, 'Warning', 'PurgeFailed', `purge ${request.id} on ${pod}: ${errorText(e)}; retrying`);
      }
      // remembered before the next call, so a failure further on cannot make this pod run it again
      this.purges.set(key, { state, ...(mine?.last ? { last: mine.last } : {}) });
    }
    const previous = mine?.last ?? relay.status?.lastPurge;
    const lastPurge = lastPurgeOf(request, state, previous, now);
    if (state && request) this.purges.set(key, { state, ...(lastPurge ? { last: lastPurge } : {}) });
    if (state && lastPurge && lastPurge !== previous) {
      this.event(
        obj,
        'Normal',
        'Purged',
        `purge ${lastPurge.id} (${describeSelector(lastPurge)}${request?.dsn ? ', with DSNs' : ''}) ran on ` +
          `${lastPurge.pods} pod(s): ${lastPurge.purged} messages purged, ${lastPurge.dsn} bounced with a DSN, ` +
          `${lastPurge.busy} busy (in delivery, not purged)`,
        true,
      );
    }
    return {
      problems,
      status: {
        queue: { suspended },
        ...(state ? { purge: state } : {}),
        ...(lastPurge ? { lastPurge } : {}),
      },
    };
  }

  /** Drains `going` into the pods that stay. Returns done when every pod that goes has an empty queue. */
  private async drainPods(
    relay: SmtpRelay,
    pods: Pod[],
    going: string[],
    admin: (ip: string) => RelayAdmin,
    log: Logger,
  ): Promise<{ done: boolean; message: string }> {
    const port = containerPortOf((relay.spec.listeners ?? DEFAULT_LISTENERS)[0]);
    const peers = pods
      .filter((p) => !going.includes(p.metadata.name) && isReady(p) && p.status?.podIP)
      .map((p) => ({ host: p.status!.podIP!, port }));
    const pending: string[] = [];
    for (const podName of going) {
      const pod = pods.find((p) => p.metadata.name === podName);
      if (!pod) continue; // already gone
      if (!pod.status?.podIP) {
        pending.push(`${podName} (not running; its queue cannot be read)`);
        continue;
      }
      try {
        const a = admin(pod.status.podIP);
        let d = await a.drainStatus();
        if (!d.draining) {
          d = await a.drain(peers);
          log.info({ pod: podName, peers: peers.length, queued: d.queued }, 'drain.started');
        }
        if (!drainFinished(d)) pending.push(drainPending(podName, d));
      } catch (e) {
        pending.push(`${podName} (${errorText(e)})`);
      }
    }
    if (pending.length === 0) return { done: true, message: '' };
    const into = peers.length ? `into ${peers.length} remaining relay(s)` : 'by delivering their queues';
    return {
      done: false,
      message: `scaling down to ${relay.spec.replicas ?? 0}: draining ${pending.join(', ')} ${into}`,
    };
  }

  /**
   * A pod the fleet keeps but that drained to the end (a scale-down reverted half-way, or a drain started
   * by hand) stays in drain mode for good: its drain state lives on its volume. With its queue empty,
   * nothing is lost by starting it over: delete its claim and the pod, and the StatefulSet makes both anew.
   */
  private async restartDrainedSurvivors(
    relay: SmtpRelay,
    pods: Pod[],
    figures: PodFigures[],
    replicas: number,
    admin: (ip: string) => RelayAdmin,
    log: Logger,
  ): Promise<void> {
    const ns = relay.metadata.namespace!;
    for (const f of figures) {
      const ordinal = Number(/-(\d+)$/.exec(f.name)?.[1] ?? -1);
      if (!f.draining || f.queue !== 0 || ordinal < 0 || ordinal >= replicas) continue;
      const claim = `spool-${f.name}`;
      // its rate-limit use this hour and day would be forgotten with its volume: the others count it
      await this.carryRateUse(pods, [f.name], admin, log);
      log.warn({ pod: f.name, claim }, 'drained.pod.restarted');
      this.event(
        relay as unknown as KObject,
        'Normal',
        'RestartingDrainedPod',
        `${f.name} finished a drain but is still wanted: its empty volume and the pod are recreated`,
      );
      await this.core
        .deleteNamespacedPersistentVolumeClaim({ namespace: ns, name: claim })
        .catch((e: unknown) => {
          if (!(e instanceof ApiException && e.code === 404)) throw e;
        });
      await this.core.deleteNamespacedPod({ namespace: ns, name: f.name }).catch((e: unknown) => {
        if (!(e instanceof ApiException && e.code === 404)) throw e;
      });
    }
  }

  /** Adds what the departing pods used this hour and day to the survivors, so the fleet limit holds. */
  private async carryRateUse(
    pods: Pod[],
    going: string[],
    admin: (ip: string) => RelayAdmin,
    log: Logger,
  ): Promise<void> {
    const survivors = pods.filter((p) => !going.includes(p.metadata.name) && p.status?.podIP && isReady(p));
    if (!survivors.length) return;
    for (const podName of going) {
      const pod = pods.find((p) => p.metadata.name === podName);
      if (!pod?.status?.podIP) continue;
      try {
        const use = await admin(pod.status.podIP).rateLimits();
        for (const [tenant, limits] of Object.entries(use.tenants)) {
          for (const l of limits) {
            if ((l.unit !== 'h' && l.unit !== 'd') || l.used === 0 || l.resetsAt <= this.now().getTime())
              continue;
            const each = Math.ceil(l.used / survivors.length);
            for (const s of survivors) await admin(s.status!.podIP!).addRateUse(tenant, l.unit, each);
          }
        }
      } catch (e) {
        log.warn({ err: errorText(e), pod: podName }, 'drain.ratelimits.failed');
      }
    }
  }

  /** Deletion: every pod delivers (or expires) its queue first, unless the abandon annotation says not to. */
  private async finalize(
    relay: SmtpRelay,
    pods: Pod[],
    admin: (ip: string) => RelayAdmin,
    log: Logger,
  ): Promise<{ requeueAfterMs?: number } | void> {
    if (!(relay.metadata.finalizers ?? []).includes(FINALIZER)) return;
    const abandon = relay.metadata.annotations?.[ABANDON_ANNOTATION] === 'true';
    let pending: string[] = [];
    if (!abandon) {
      for (const p of pods) {
        if (!p.status?.podIP || p.metadata.deletionTimestamp) {
          if (!p.metadata.deletionTimestamp) pending.push(`${p.metadata.name} (not running)`);
          continue;
        }
        try {
          const a = admin(p.status.podIP);
          let d = await a.drainStatus();
          if (!d.draining) d = await a.drain([]);
          if (!drainFinished(d)) pending.push(drainPending(p.metadata.name, d));
        } catch (e) {
          pending.push(`${p.metadata.name} (${errorText(e)})`);
        }
      }
    }
    if (abandon) pending = [];
    let msg: string | undefined;
    if (pending.length)
      msg = `deleting: waiting for ${pending.join(', ')} to deliver their queues (annotate ${ABANDON_ANNOTATION}=true to abandon them)`;
    else if (!abandon && pods.length) {
      // Every queue is empty: stop the relays before their claims go (a claim must not vanish under a
      // running relay), then delete the claims, then let the SmtpRelay go.
      const sts = this.informers.statefulsets.get(
        relay.metadata.namespace,
        names(relay.metadata.name!).statefulSet,
      );
      if (sts && sts.spec?.replicas !== 0)
        await this.objects.patch(
          {
            apiVersion: 'apps/v1',
            kind: 'StatefulSet',
            metadata: { name: sts.metadata.name, namespace: sts.metadata.namespace },
            spec: { replicas: 0 },
          } as KubernetesObject,
          undefined,
          undefined,
          FIELD_MANAGER,
          undefined,
          PatchStrategy.MergePatch,
        );
      msg = `deleting: queues delivered; stopping ${pods.map((p) => p.metadata.name).join(', ')} before their volumes are released`;
    }
    if (msg) {
      const status = structuredClone(relay.status ?? {}) as SmtpRelayStatus;
      status.conditions = setCondition(
        status.conditions,
        { type: 'Progressing', status: 'True', reason: 'Deleting', message: msg },
        relay.metadata.generation,
        this.now(),
      );
      await this.writeStatus(relay as unknown as KObject, 'smtprelays', status);
      this.event(relay as unknown as KObject, 'Normal', 'Deleting', msg);
      return { requeueAfterMs: 2000 };
    }
    // Every queue was delivered and every relay stopped: the spool claims (kept by whenDeleted: Retain for
    // abandoned mail) go too, so an SmtpRelay re-created under this name does not start on old volumes.
    if (!abandon) await this.deleteClaims(relay, log);
    log.info({ abandoned: abandon }, 'finalizer.removed');
    await this.objects
      .patch(
        {
          apiVersion: API_VERSION,
          kind: 'SmtpRelay',
          metadata: {
            name: relay.metadata.name,
            namespace: relay.metadata.namespace,
            resourceVersion: relay.metadata.resourceVersion,
            finalizers: (relay.metadata.finalizers ?? []).filter((f) => f !== FINALIZER),
          },
        } as KubernetesObject,
        undefined,
        undefined,
        FIELD_MANAGER,
        undefined,
        PatchStrategy.MergePatch,
      )
      .catch((e: unknown) => {
        if (!(e instanceof ApiException && e.code === 404)) throw e;
      });
    await this.deleteEgressPolicies(relay);
  }

  private async deleteClaims(relay: SmtpRelay, log: Logger): Promise<void> {
    const namespace = relay.metadata.namespace!;
    const claims = await this.core.listNamespacedPersistentVolumeClaim({
      namespace,
      labelSelector: selectorString(relay.metadata.name!),
    });
    for (const c of claims.items) {
      await this.core
        .deleteNamespacedPersistentVolumeClaim({ namespace, name: c.metadata!.name! })
        .catch((e: unknown) => {
          if (!(e instanceof ApiException && e.code === 404)) throw e;
        });
      log.info({ claim: c.metadata!.name }, 'claim.deleted');
    }
  }

  private relayStatus(
    relay: SmtpRelay,
    s: {
      sts: KObject | undefined;
      figures: PodFigures[];
      revision: string;
      problems: Problem[];
      applyError?: string;
      drain?: { message: string; pods: string[] };
      waiting?: string;
      desired: number;
      now: Date;
    },
  ): SmtpRelayStatus {
    const gen = relay.metadata.generation;
    const old = relay.status ?? {};
    const readyPods = s.figures.filter((f) => f.ready);
    const current = readyPods.filter((f) => f.revision === s.revision);
    const stsStatus = (s.sts?.status ?? {}) as Record<string, number | string | undefined>;
    const stsCurrent =
      s.sts && (stsStatus.observedGeneration as number) >= (s.sts.metadata.generation as number);
    const stsUpdated = stsCurrent && stsStatus.updateRevision === stsStatus.currentRevision;
    let conditions = old.conditions;
    const set = (type: string, ok: boolean, reason: string, message: string) => {
      conditions = setCondition(
        conditions,
        { type, status: ok ? 'True' : 'False', reason, message },
        gen,
        s.now,
      );
    };
    const degraded = s.applyError ?? s.problems.map((p) => p.message).join('; ');
    const degradedReason = s.applyError ? 'ApplyFailed' : (s.problems[0]?.reason ?? 'AsExpected');
    set(
      'Reconciled',
      !s.applyError,
      s.applyError ? 'ApplyFailed' : 'Applied',
      s.applyError ?? 'every owned object matches the spec',
    );
    set('Degraded', !!degraded, degradedReason, degraded);
    for (const p of s.problems) this.event(relay as unknown as KObject, 'Warning', p.reason, p.message);
    const stale = readyPods.filter((f) => f.revision !== s.revision).map((f) => f.name);
    let readyReason = 'Ready';
    let readyMsg = `${current.length} of ${s.desired} relays ready with the current config`;
    const ok =
      current.length >= s.desired &&
      readyPods.length >= s.desired &&
      !s.drain &&
      !s.applyError &&
      !!stsUpdated;
    if (!ok) {
      if (s.applyError) readyReason = 'ApplyFailed';
      else if (s.drain) readyReason = 'Draining';
      else if (s.waiting) {
        readyReason = 'WaitingForAddresses';
        readyMsg += `; ${s.waiting}`;
      } else if (stale.length) {
        readyReason = 'ConfigPending';
        readyMsg += `; waiting for ${stale.join(', ')} to load config ${s.revision}`;
      } else if (!stsUpdated) readyReason = 'RollingUpdate';
      else readyReason = 'PodsNotReady';
      const errs = s.figures.filter((f) => f.error).map((f) => `${f.name}: ${f.error}`);
      if (errs.length) readyMsg += `; admin API: ${errs.join('; ')}`;
    }
    set('Ready', ok, readyReason, readyMsg);
    set(
      'Progressing',
      !ok,
      s.drain ? 'ScalingDown' : ok ? 'Complete' : readyReason,
      s.drain ? s.drain.message : ok ? 'the fleet matches the spec' : readyMsg,
    );
    // a pod whose relay still indexes its spool does not know its queue: the fleet's figures are unknown
    // then, and status says nothing rather than a number that may read "empty"
    const depthKnown = !s.figures.some((f) => f.recovering);
    const queueDepth = s.figures.reduce((sum, f) => sum + (f.queue ?? 0), 0);
    const tenants = (relay.spec.tenants ?? []).map((t) => {
      const states = s.figures
        .map((f) => f.tenants?.find((x) => x.name === t.name))
        .filter((x): x is TenantState => !!x);
      const worst =
        states.find((x) => x.state === 'paused' && x.by !== 'fleet') ??
        states.find((x) => x.state === 'paused') ??
        states.find((x) => x.state === 'warning');
      const state = worst?.state === 'paused' ? 'Paused' : worst?.state === 'warning' ? 'Warning' : 'Active';
      return {
        name: t.name,
        state: state as 'Active' | 'Warning' | 'Paused',
        ...(worst?.reason ? { reason: worst.reason } : {}),
        bounceRate: round4(Math.max(0, ...states.map((x) => x.rate))),
        ...(depthKnown
          ? { queueDepth: s.figures.reduce((sum, f) => sum + (f.byTenant?.[t.name] ?? 0), 0) }
          : {}),
      };
    });
    const attempted = s.figures.flatMap((f) => f.tenants ?? []).reduce((sum, t) => sum + t.attempted, 0);
    const hard = s.figures.flatMap((f) => f.tenants ?? []).reduce((sum, t) => sum + t.hard, 0);
    const bounceRate = attempted ? round4(hard / attempted) : 0;
    return {
      observedGeneration: gen,
      replicas: s.figures.length,
      readyReplicas: readyPods.length,
      readyText: `${readyPods.length}/${s.desired}`,
      selector: selectorString(relay.metadata.name!),
      configHash: s.revision,
      ...(depthKnown ? { queueDepth } : {}),
      bounceRate,
      bounceRatePercent: `${(bounceRate * 100).toFixed(1)}%`,
      conditions,
      tenants,
      pods: s.figures.map((f) => ({
        name: f.name,
        ready: f.ready,
        ...(f.revision ? { configHash: f.revision } : {}),
        ...(f.queue !== undefined ? { queueDepth: f.queue } : {}),
        ...(f.draining ? { draining: true } : {}),
      })),
      ...(s.drain
        ? {
            drain: {
              targetReplicas: s.desired,
              pods: s.drain.pods,
              since: old.drain?.since ?? s.now.toISOString().replace(/\.\d{3}Z$/, 'Z'),
            },
          }
        : {}),
    };
  }

  // ---------------------------------------------------------------- API helpers

  /** Server-side apply of `obj` unless the cached object already has every field we set. */
  private async apply(obj: KObject): Promise<boolean> {
    const cached = this.cached(obj);
    if (cached && isSubset(obj, cached)) return false;
    // kinds without an informer (ServiceMonitor, Cilium policies): skip what this process applied last
    const key = `${obj.apiVersion}/${obj.kind}/${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
    const json = stableJson(obj);
    if (!this.isInformed(obj) && this.applied.get(key) === json) return false;
    await this.objects.patch(
      obj as KubernetesObject,
      undefined,
      undefined,
      FIELD_MANAGER,
      true,
      PatchStrategy.ServerSideApply,
    );
    if (!this.isInformed(obj)) this.applied.set(key, json);
    return true;
  }

  private isInformed(obj: KObject): boolean {
    return ['ConfigMap', 'Secret', 'Service', 'StatefulSet', 'PodDisruptionBudget'].includes(obj.kind);
  }

  private cached(obj: KObject): KObject | undefined {
    const inf = {
      ConfigMap: 'configmaps',
      Secret: 'secrets',
      Service: 'services',
      StatefulSet: 'statefulsets',
      PodDisruptionBudget: 'pdbs',
    }[obj.kind];
    return inf ? this.informers[inf].get(obj.metadata.namespace, obj.metadata.name) : undefined;
  }

  private async deleteIfOwned(
    apiVersion: string,
    kind: string,
    namespace: string,
    name: string,
  ): Promise<void> {
    const cached = kind === 'PodDisruptionBudget' ? this.informers.pdbs.get(namespace, name) : undefined;
    if (!cached) return;
    await this.objects.delete({ apiVersion, kind, metadata: { name, namespace } }).catch(() => undefined);
  }

  private async deleteEgressPolicies(relay: SmtpRelay): Promise<void> {
    if (!this.optionalKinds.ciliumEgress) return;
    const list = await this.objects
      .list(
        'cilium.io/v2',
        'CiliumEgressGatewayPolicy',
        undefined,
        undefined,
        undefined,
        undefined,
        undefined,
        `app.kubernetes.io/instance=${relay.metadata.name},cartero.io/relay-namespace=${relay.metadata.namespace}`,
      )
      .catch(() => undefined);
    for (const p of list?.items ?? []) await this.objects.delete(p).catch(() => undefined);
  }

  private async refreshOptionalKinds(): Promise<void> {
    if (Date.now() - this.optionalKinds.checkedAt < 60_000) return;
    const has = async (name: string) => {
      try {
        await this.objects.read({
          apiVersion: 'apiextensions.k8s.io/v1',
          kind: 'CustomResourceDefinition',
          metadata: { name },
        });
        return true;
      } catch {
        return false;
      }
    };
    this.optionalKinds = {
      serviceMonitor: await has('servicemonitors.monitoring.coreos.com'),
      ciliumEgress: await has('ciliumegressgatewaypolicies.cilium.io'),
      checkedAt: Date.now(),
    };
  }

  private async writeStatus(obj: KObject, plural: string, status: object): Promise<void> {
    if (stableJson(stripTimes(obj.status ?? {})) === stableJson(stripTimes(status))) return;
    await this.custom.patchNamespacedCustomObjectStatus(
      {
        group: GROUP,
        version: VERSION,
        namespace: obj.metadata.namespace,
        plural,
        name: obj.metadata.name,
        // keys the new status drops are sent as null, or a merge patch would leave them in place
        body: { status: mergePatchFor(obj.status ?? {}, JSON.parse(JSON.stringify(status))) },
      },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  }

  /** Writes a core/v1 Event once per transition (same reason and message: no new event). */
  private event(
    obj: KObject,
    type: 'Normal' | 'Warning',
    reason: string,
    message: string,
    /** An action's event (each one is news), not a state's. */
    always = false,
  ): void {
    const key = `${obj.kind}/${obj.metadata.namespace}/${obj.metadata.name}/${reason}`;
    const sig = `${message}`;
    if (!always && this.lastEvent.get(key) === sig) return;
    this.lastEvent.set(key, sig);
    const now = this.now()
      .toISOString()
      .replace(/\.\d{3}Z$/, 'Z');
    void this.core
      .createNamespacedEvent({
        namespace: obj.metadata.namespace,
        body: {
          metadata: { generateName: `${obj.metadata.name}.`, namespace: obj.metadata.namespace },
          involvedObject: {
            apiVersion: obj.apiVersion,
            kind: obj.kind,
            name: obj.metadata.name,
            namespace: obj.metadata.namespace,
            uid: obj.metadata.uid,
          },
          reason,
          message: message.slice(0, 1024),
          type,
          source: { component: FIELD_MANAGER },
          firstTimestamp: now as unknown as Date,
          lastTimestamp: now as unknown as Date,
          count: 1,
        },
      })
      .catch((e: unknown) => this.log.warn({ err: errorText(e) }, 'event.failed'));
  }

  private forgetRelay(ns: string, name: string): void {
    for (const k of [...this.applied.keys()])
      if (k.endsWith(`/${ns}/${name}`) || k.includes(`/cartero-${ns}-${name}-`)) this.applied.delete(k);
    for (const k of [...this.lastEvent.keys()])
      if (k.startsWith(`SmtpRelay/${ns}/${name}/`)) this.lastEvent.delete(k);
    for (const m of [this.suppressionCursor, this.lastSuspensions, this.heldCounts])
      for (const k of [...m.keys()]) if (k.startsWith(`${ns}/${name}-`)) m.delete(k);
    this.purges.delete(`${ns}/${name}`);
  }

  private updateGauges(): void {
    if (!this.gauges) return;
    const relays = this.relays();
    this.gauges.relays.set(relays.length);
    this.gauges.ready.set(
      relays.filter(
        (r) => findCondition(r.status?.conditions as Condition[] | undefined, 'Ready')?.status === 'True',
      ).length,
    );
  }
}

/** Several namespaced informers of one kind, seen as one. */
function combine(parts: Informer<KObject>[]): Informer<KObject> {
  return {
    list: () => parts.flatMap((p) => p.list()),
    get: (namespace, name) => {
      for (const p of parts) {
        const o = p.get(namespace, name);
        if (o) return o;
      }
      return undefined;
    },
    synced: async () => {
      await Promise.all(parts.map((p) => p.synced()));
    },
    stop: () => parts.forEach((p) => p.stop()),
  };
}

function stripTimes(status: object): unknown {
  return JSON.parse(JSON.stringify(status), (k, v) => (k === 'lastTransitionTime' ? undefined : v));
}

const round4 = (x: number) => Math.round(x * 10000) / 10000;

export function errorText(e: unknown): string {
  if (e instanceof ApiException) {
    let body = e.body as unknown;
    if (typeof body === 'string') {
      try {
        body = JSON.parse(body);
      } catch {
        /* keep the text */
      }
    }
    const msg = (body as { message?: string } | undefined)?.message ?? String(e.body).slice(0, 200);
    return `${e.code}: ${msg}`;
  }
  return e instanceof Error ? e.message : String(e);
}
