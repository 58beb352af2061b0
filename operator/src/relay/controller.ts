/**
 * The SmtpRelay controller. Each reconcile observes (informer caches, the relays' admin APIs), decides
 * with pure functions (config-render.ts and workload.ts for the desired objects, scale-down.ts,
 * spec-check.ts, fleet-sync.ts, status.ts, suspend.ts, purge.ts) and applies (server-side apply of
 * what differs, admin API calls, status when it changed, events).
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { IpPool, SmtpRelay } from '../api/types.js';
import type { ApiWriter } from '../api-writer.js';
import { podsOf, poolsOf, secretsOf, type Caches, type Pod } from '../cache.js';
import type { Problem } from '../conditions.js';
import { API_VERSION, FINALIZER, names } from '../constants.js';
import { errorText } from '../errors.js';
import type { EventRecorder } from '../events.js';
import type { KObject } from '../objects.js';
import { RelayAdmin } from './admin-client.js';
import { checkRenderedConfig } from './config-check.js';
import { buildRelayConfig, secretKeys, type Allocation, type Credentials } from './config-render.js';
import { carryRateUse, drainPods, restartDrainedPod } from './drain.js';
import { FiguresReader, type PodFigures } from './figures.js';
import { finalizeRelay } from './finalize.js';
import { decidePauseCopies, decideSuppressionCopies } from './fleet-sync.js';
import { decideFleetComplaintPauses } from './complaint-fleet.js';
import { QueueOps } from './queue-ops.js';
import { drainedSurvivors, planScale, scaleDownStep } from './scale-down.js';
import { checkSpec } from './spec-check.js';
import { DEFAULT_DKIM_SECRET_KEY, dkimRecords, dkimRef, generatedKeySecret, keysToGenerate } from './dkim.js';
import { outboundCaRef } from './outbound-tls.js';
import { relayStatus } from './status.js';
import { lintStatus } from './lint-status.js';
import { buildFeedbackService, FEEDBACK_KEY_FILE, feedbackMx } from './feedback.js';
import { DkimDnsChecker } from './dkim-dns.js';
import {
  buildConfigMap,
  buildEgressPolicies,
  buildPdb,
  buildSecret,
  buildServiceMonitor,
  buildServices,
  buildStatefulSet,
} from './workload.js';
import { DEFAULT_WEBHOOK_SECRET_KEY, webhookRef } from './webhooks.js';

type Admin = (ip: string) => RelayAdmin;

export interface RelayControllerOptions {
  caches: Caches;
  writer: ApiWriter;
  events: EventRecorder;
  log: Logger;
  now: () => Date;
  /** Relay image for SmtpRelays that name none. */
  defaultImage: string;
  /** How often a relay is reconciled at rest (fleet figures, pauses, suppressions). */
  statusIntervalMs: number;
  /** How often DNS is asked whether the DKIM records of status.dkim are served (default 10 min). */
  dnsCheckIntervalMs?: number;
}

export class RelayController {
  readonly figures = new FiguresReader();
  private readonly queueOps: QueueOps;
  /** Per relay pod: the suppression feed position copied so far. */
  private readonly suppressionCursor = new Map<string, number>();

  /** Whether DNS serves the records of status.dkim (checked through a Ready pod). */
  private readonly dkimDns: DkimDnsChecker;

  constructor(private readonly o: RelayControllerOptions) {
    this.queueOps = new QueueOps(o.events);
    this.dkimDns = new DkimDnsChecker(o.dnsCheckIntervalMs ?? 10 * 60_000);
  }

  async reconcile(ns: string, name: string): Promise<{ requeueAfterMs?: number } | void> {
    const { caches, writer, events } = this.o;
    const relay = caches.relays.get(ns, name);
    if (!relay) {
      this.forget(ns, name);
      return;
    }
    const log = this.o.log.child({ smtprelay: `${ns}/${name}` });
    const n = names(name);
    const now = this.o.now();
    const pods = podsOf(caches, ns, name);
    const ownSecret = caches.secrets.get(ns, n.secret);
    const adminToken = decode(ownSecret?.data?.[secretKeys.admin]) || randomBytes(24).toString('base64url');
    const peerPassword = decode(ownSecret?.data?.[secretKeys.peer]) || randomBytes(24).toString('base64url');
    const feedbackKey = // the return-path token key (feedback.ts): one per fleet, kept across reconciles
      decode(ownSecret?.data?.[FEEDBACK_KEY_FILE]) || randomBytes(32).toString('base64url');
    const admin: Admin = (ip) => new RelayAdmin(`http://${ip}:9025`, adminToken);

    if (relay.metadata.deletionTimestamp) return finalizeRelay(this.o, relay, pods, admin, log);
    if (!(relay.metadata.finalizers ?? []).includes(FINALIZER))
      await writer.mergePatch({
        apiVersion: API_VERSION,
        kind: 'SmtpRelay',
        metadata: { name, namespace: ns, finalizers: [...(relay.metadata.finalizers ?? []), FINALIZER] },
      });

    // --- DKIM keys asked for (generate: true) whose Secret does not exist yet: made once, never rewritten
    for (const g of keysToGenerate(relay, (s) => !!caches.secrets.get(ns, s)))
      if (await writer.createIfAbsent(generatedKeySecret(relay, g)))
        log.info({ secret: g.secret, keys: g.keys.map((k) => k.key) }, 'dkim.key-generated');

    // --- observe: inputs from the caches
    const { credentials, pools, allocations, dkimKeys, webhookKeys, outboundCa } = this.inputs(relay);

    // --- replicas: lower the StatefulSet only once the pods that go are drained
    const sts = caches.statefulsets.get(ns, n.statefulSet);
    const desired = relay.spec.replicas ?? 2;
    const plan = planScale({
      name,
      desired,
      current: sts ? (sts.spec?.replicas ?? desired) : undefined,
      pools: [...pools.values()],
      allocations,
    });
    let stsReplicas = plan.replicas;
    let drain: { message: string; pods: string[] } | undefined;
    if (plan.going.length) {
      let progress = await drainPods(relay, pods, plan.going, admin, log);
      if (progress.done) {
        const uncarried = await carryRateUse(pods, plan.going, admin, log, this.o.now);
        if (uncarried.length)
          progress = { done: false, message: `scaling down to ${plan.replicas}: ${uncarried.join(', ')}` };
      }
      const step = scaleDownStep(plan, progress);
      stsReplicas = step.replicas;
      drain = step.drain;
      events.emit(relay, step.event);
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
      dkimKeys,
      webhookKeys,
      ...(outboundCa ? { outboundCa } : {}),
      feedbackKey,
    });
    const problems: Problem[] = [...built.problems];
    const revision = (built.doc.fleet as { revision: string }).revision;
    if (relay.spec.tls && !caches.secrets.get(ns, relay.spec.tls.secretName))
      problems.push({
        reason: 'SecretMissing',
        message: `TLS Secret ${relay.spec.tls.secretName} not found`,
      });
    problems.push(...checkSpec(relay, (pool) => !!caches.pools.get(ns, pool)));
    const invalid = checkRenderedConfig(built.doc, built.secretData);
    if (invalid) problems.push(invalid);
    await writer.refreshOptionalKinds();
    const hostNodes = [...pools.values()]
      .filter((p) => p.spec.mode === 'HostNetwork')
      .flatMap((p) => p.spec.addresses.map((a) => a.node!).filter(Boolean));
    const desiredObjects: KObject[] = [
      ...(invalid ? [] : [buildConfigMap(relay, built.doc), buildSecret(relay, built.secretData)]),
      ...buildServices(relay),
      ...[buildFeedbackService(relay)].filter((x): x is KObject => !!x),
      buildStatefulSet({
        relay,
        defaultImage: this.o.defaultImage,
        replicas: stsReplicas,
        ...(hostNodes.length ? { hostNetworkNodes: hostNodes } : {}),
      }),
    ];
    const pdb = buildPdb(relay);
    if (pdb) desiredObjects.push(pdb);
    if (writer.optionalKinds.serviceMonitor) desiredObjects.push(buildServiceMonitor(relay));
    const egress = buildEgressPolicies(relay, pools, allocations);
    if (egress.length && !writer.optionalKinds.ciliumEgress)
      problems.push({
        reason: 'EgressGatewayUnavailable',
        message:
          'an IpPool uses mode CiliumEgressGateway, but the CiliumEgressGatewayPolicy CRD is not installed',
      });
    else desiredObjects.push(...egress);

    // --- apply
    let applyError: string | undefined;
    let applied = 0;
    for (const obj of desiredObjects) {
      try {
        if (await writer.apply(obj)) applied++;
      } catch (e) {
        applyError = `${obj.kind} ${obj.metadata.name}: ${errorText(e)}`;
        log.warn({ err: errorText(e), kind: obj.kind, name: obj.metadata.name }, 'apply.failed');
      }
    }
    if (applied) log.info({ applied }, 'reconcile.applied');
    if (!pdb) await writer.deletePdbIfPresent(ns, n.pdb);
    if (!relay.spec.feedback) await writer.deleteServiceIfPresent(ns, n.feedbackService);

    // --- fleet figures, pauses and suppressions
    const figures = await this.figures.read(pods, admin);
    await this.syncFleet(relay, figures, admin, log);
    const queueOps = await this.queueOps.sync(relay, figures, desired, admin, log, now);
    problems.push(...queueOps.problems);
    if (!drain) await this.restartDrainedSurvivors(relay, pods, figures, stsReplicas, admin, log);

    // --- status
    const { status, events: statusEvents } = relayStatus(relay, {
      ...(plan.waiting ? { waiting: plan.waiting } : {}),
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
    const dkim = dkimRecords(relay, dkimKeys);
    if (dkim.length)
      status.dkim = (
        await this.dkimDns.annotate(`${ns}/${name}`, dkim, relay.status?.dkim, figures, admin, log)
      ).dkim;
    const mx = feedbackMx(relay.spec); // the feedback loop (ADR 016)
    if (mx.length) status.feedback = { mx };
    const lint = lintStatus(figures); // bulk-sender lint (ADR 014)
    if (lint.length) status.lint = lint;
    await writer.writeStatus(relay, 'smtprelays', status);
    events.emitAll(relay, statusEvents);
    return { requeueAfterMs: drain ? Math.min(this.o.statusIntervalMs, 2000) : this.o.statusIntervalMs };
  }

  /** The Secrets' credentials, the IpPools and their allocations to this relay's pods. */
  private inputs(relay: SmtpRelay): {
    credentials: Map<string, Credentials>;
    pools: Map<string, IpPool>;
    allocations: Allocation[];
    dkimKeys: Map<string, string>;
    webhookKeys: Map<string, string>;
    outboundCa?: string;
  } {
    const ns = relay.metadata.namespace!;
    const credentials = new Map<string, Credentials>();
    for (const s of secretsOf(relay)) {
      const secret = this.o.caches.secrets.get(ns, s);
      const username = decode(secret?.data?.username);
      const password = decode(secret?.data?.password);
      if (username && password) credentials.set(s, { username, password });
    }
    const pools = new Map<string, IpPool>();
    const allocations: Allocation[] = [];
    for (const p of poolsOf(relay)) {
      const pool = this.o.caches.pools.get(ns, p);
      if (!pool) continue;
      pools.set(p, pool);
      for (const a of pool.status?.allocations ?? [])
        if (a.relay === relay.metadata.name) allocations.push({ pool: p, ip: a.ip, pod: a.pod });
    }
    const dkimKeys = new Map<string, string>();
    for (const t of relay.spec.tenants ?? [])
      for (const k of t.dkim?.keys ?? []) {
        const pem = decode(
          this.o.caches.secrets.get(ns, k.secretRef.name)?.data?.[k.secretRef.key ?? DEFAULT_DKIM_SECRET_KEY],
        );
        if (pem) dkimKeys.set(dkimRef(k), pem);
      }
    const webhookKeys = new Map<string, string>();
    for (const t of relay.spec.tenants ?? [])
      for (const h of t.webhooks ?? []) {
        const key = decode(
          this.o.caches.secrets.get(ns, h.secretRef.name)?.data?.[
            h.secretRef.key ?? DEFAULT_WEBHOOK_SECRET_KEY
          ],
        );
        if (key) webhookKeys.set(webhookRef(h), key);
      }
    const caRef = outboundCaRef(relay);
    const outboundCa = caRef
      ? decode(this.o.caches.secrets.get(ns, caRef.name)?.data?.[caRef.key])
      : undefined;
    return { credentials, pools, allocations, dkimKeys, webhookKeys, ...(outboundCa ? { outboundCa } : {}) };
  }

  /** Copies pauses and suppressions made on one relay to every other relay of the fleet. */
  private async syncFleet(relay: SmtpRelay, figures: PodFigures[], admin: Admin, log: Logger): Promise<void> {
    const live = figures.filter((f) => f.ip && f.tenants && !f.draining);
    if (live.length < 2) return;
    const ipOf = new Map(live.map((f) => [f.name, f.ip!]));
    // the complaint rate counted fleet-wide (ADR 018): a pause made on one relay, copied below next time
    for (const p of decideFleetComplaintPauses(
      relay.spec.tenants ?? [],
      live.map((f) => ({ name: f.name, tenants: f.tenants! })),
      this.o.now().getTime(),
    )) {
      try {
        await admin(ipOf.get(p.pod)!).call('POST', `/tenants/${encodeURIComponent(p.tenant)}/pause`, {
          reason: p.reason,
          ...(p.until !== undefined ? { until: p.until } : {}),
          source: 'guard',
        });
        log.warn({ tenant: p.tenant, pod: p.pod, reason: p.reason }, 'fleet.complaint.paused');
      } catch (e) {
        log.warn({ err: errorText(e), pod: p.pod }, 'fleet.complaint.failed');
      }
    }
    const copies = decidePauseCopies(
      (relay.spec.tenants ?? []).map((t) => t.name),
      live.map((f) => ({ name: f.name, tenants: f.tenants! })),
    );
    for (const c of copies) {
      try {
        if (c.op === 'pause') {
          await admin(ipOf.get(c.pod)!).pause(c.tenant, c.reason, c.until);
          log.info({ tenant: c.tenant, pod: c.pod, from: c.from }, 'fleet.pause.copied');
        } else {
          await admin(ipOf.get(c.pod)!).call('POST', `/tenants/${encodeURIComponent(c.tenant)}/resume`, {
            source: 'fleet',
          });
          log.info({ tenant: c.tenant, pod: c.pod }, 'fleet.resume.copied');
        }
      } catch (e) {
        log.warn({ err: errorText(e), pod: c.pod }, 'fleet.pause.failed');
      }
    }
    for (const f of live) {
      const key = `${relay.metadata.namespace}/${f.name}`;
      try {
        const feed = await admin(f.ip!).suppressionChanges(this.suppressionCursor.get(key) ?? 0);
        const copies = decideSuppressionCopies(
          f.name,
          feed.changes,
          live.map((x) => x.name),
        );
        for (const c of copies) {
          if (c.op === 'add') await admin(ipOf.get(c.pod)!).addSuppression(c.tenant, c.address, c.reason!);
          else
            await admin(ipOf.get(c.pod)!)
              .removeSuppression(c.tenant, c.address)
              .catch(() => undefined);
        }
        this.suppressionCursor.set(key, feed.lastSeq);
      } catch (e) {
        log.warn({ err: errorText(e), pod: f.name }, 'fleet.suppressions.failed');
      }
    }
  }

  private async restartDrainedSurvivors(
    relay: SmtpRelay,
    pods: Pod[],
    figures: PodFigures[],
    replicas: number,
    admin: Admin,
    log: Logger,
  ): Promise<void> {
    for (const pod of drainedSurvivors(figures, replicas)) {
      // its rate-limit use this hour and day would be forgotten with its volume: the others count it
      if ((await carryRateUse(pods, [pod], admin, log, this.o.now)).length) continue; // next pass
      this.o.events.emit(relay, {
        type: 'Normal',
        reason: 'RestartingDrainedPod',
        message: `${pod} finished a drain but is still wanted: its empty volume and the pod are recreated`,
      });
      await restartDrainedPod(this.o.writer.core, relay.metadata.namespace!, pod, log);
    }
  }

  /** Forgets what this process remembers of a relay that is gone. */
  private forget(ns: string, name: string): void {
    this.o.writer.forgetRelay(ns, name);
    this.o.events.forget(`SmtpRelay/${ns}/${name}`);
    for (const k of [...this.suppressionCursor.keys()])
      if (k.startsWith(`${ns}/${name}-`)) this.suppressionCursor.delete(k);
    this.queueOps.forgetRelay(ns, name);
    this.dkimDns.forget(`${ns}/${name}`);
  }
}

const decode = (v: unknown) =>
  typeof v === 'string' ? Buffer.from(v, 'base64').toString('utf8') : undefined;
