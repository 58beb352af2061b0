/**
 * Reconcile benchmark: how fast the operator brings N SmtpRelays to Ready, how many API writes that
 * takes, and that a fleet at rest costs none. The peer, measured in the same run against a fresh API
 * server, is the floor: a plain client-node loop that server-side-applies the same objects the operator
 * builds (ConfigMap, Secret, two Services, StatefulSet, PDB per SmtpRelay) with no reconcile logic.
 * The ratio operator/floor is the operator's overhead. SmtpRelays have replicas 0 (no relay processes),
 * so the figures are about the control plane only.
 *
 *   node dist/bench/operator.js [--relays N] (default 200)
 */
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  KubeConfig,
  KubernetesObjectApi,
  PatchStrategy,
  type KubernetesObject,
} from '@kubernetes/client-node';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import YAML from 'yaml';
import type { SmtpRelay } from '../operator/src/api/types.js';
import {
  buildConfigMap,
  buildPdb,
  buildSecret,
  buildServices,
  buildStatefulSet,
} from '../operator/src/relay/workload.js';
import { buildRelayConfig } from '../operator/src/relay/config-render.js';
import { FIELD_MANAGER } from '../operator/src/constants.js';
import { Operator } from '../operator/src/controller.js';
import { startApiServer, type ApiServer } from '@cartero/k8s-testbed/apiserver/server.js';
import { startKubelet } from '@cartero/k8s-testbed/kubelet/kubelet.js';
import { REPO_ROOT } from './measure.js';

const { values } = parseArgs({ options: { relays: { type: 'string', default: '200' } } });
const N = Number(values.relays);

function relay(i: number): SmtpRelay {
  return {
    apiVersion: 'cartero.io/v1alpha1',
    kind: 'SmtpRelay',
    metadata: { name: `relay-${i}`, namespace: 'bench' },
    spec: {
      replicas: 0,
      image: 'cartero/relay:bench',
      tenants: [{ name: 'app', rateLimits: { perHour: 1000 } }],
      routing: { default: { type: 'mx' } },
    },
  };
}

async function setup(dir: string): Promise<{ api: ApiServer; kc: KubeConfig; objects: KubernetesObjectApi }> {
  const api = await startApiServer({ dir });
  for (const f of ['smtprelay.yaml', 'ippool.yaml'])
    api.store.create(
      api.registry.find('apiextensions.k8s.io', 'v1', 'customresourcedefinitions')!,
      '',
      YAML.parse((await import('node:fs')).readFileSync(path.join(REPO_ROOT, 'crds', f), 'utf8')),
    );
  const kc = new KubeConfig();
  kc.loadFromFile(api.kubeconfig);
  const objects = KubernetesObjectApi.makeApiClient(kc);
  await objects.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'bench' } });
  return { api, kc, objects };
}

const writes = (api: ApiServer, from = 0) =>
  api.requests.slice(from).filter((r) => !['get', 'list', 'watch'].includes(r.verb)).length;

async function floor(tmp: string): Promise<{ ms: number; writes: number }> {
  const { api, objects } = await setup(path.join(tmp, 'floor'));
  const start = Date.now();
  const before = api.requests.length;
  const queue = Array.from({ length: N }, (_, i) => i);
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      for (let i = queue.shift(); i !== undefined; i = queue.shift()) {
        const r = relay(i);
        const created = (await objects.create(r as unknown as KubernetesObject)) as unknown as SmtpRelay;
        const built = buildRelayConfig({
          relay: created,
          defaultImage: 'x',
          credentials: new Map(),
          pools: new Map(),
          allocations: [],
          adminToken: 't',
          peerPassword: 'p',
          replicas: 1,
        });
        for (const o of [
          buildConfigMap(created, built.doc),
          buildSecret(created, built.secretData),
          ...buildServices(created),
          buildStatefulSet({ relay: created, defaultImage: 'x', replicas: 0 }),
          buildPdb(created)!,
        ])
          await objects.patch(
            o as KubernetesObject,
            undefined,
            undefined,
            FIELD_MANAGER,
            true,
            PatchStrategy.ServerSideApply,
          );
      }
    }),
  );
  const ms = Date.now() - start;
  const w = writes(api, before);
  await api.stop();
  return { ms, writes: w };
}

async function withOperator(tmp: string) {
  const { api, kc, objects } = await setup(path.join(tmp, 'operator'));
  const kubelet = startKubelet({ server: api, images: {}, dir: path.join(tmp, 'pods'), services: false });
  const registry = new Registry();
  const operator = new Operator({
    kc,
    log: pino({ level: 'silent' }),
    defaultImage: 'x',
    metrics: registry,
    statusIntervalMs: 5000,
  });
  await operator.start();
  const crT = api.registry.find('cartero.io', 'v1alpha1', 'smtprelays')!;
  const start = Date.now();
  const before = api.requests.length;
  for (let i = 0; i < N; i++) await objects.create(relay(i) as unknown as KubernetesObject);
  const ready = () =>
    api.store
      .list(crT, { namespace: 'bench' })
      .items.filter((r) =>
        (r.status as SmtpRelay['status'])?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
      ).length;
  while (ready() < N) {
    if (Date.now() - start > 600_000) throw new Error(`only ${ready()} of ${N} Ready after 600 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const ms = Date.now() - start;
  const convergeWrites = writes(api, before) - N; // minus the creates of the SmtpRelays themselves
  // at rest: two full status intervals
  const idleFrom = api.requests.length;
  await new Promise((r) => setTimeout(r, 11_000));
  const idleWrites = writes(api, idleFrom);
  const hist =
    (await registry.getSingleMetric('controller_runtime_reconcile_time_seconds')?.get())?.values ?? [];
  const count = hist.find((v) => (v as { metricName?: string }).metricName?.endsWith('_count'))?.value ?? 0;
  const sum = hist.find((v) => (v as { metricName?: string }).metricName?.endsWith('_sum'))?.value ?? 0;
  await operator.stop();
  await kubelet.stop();
  await api.stop();
  return {
    ms,
    convergeWrites,
    idleWrites,
    reconciles: count,
    meanReconcileMs: count ? (sum / count) * 1000 : 0,
  };
}

const tmp = mkdtempSync(path.join(os.tmpdir(), 'cartero-bench-operator-'));
try {
  const f = await floor(tmp);
  const o = await withOperator(tmp);
  const result = {
    relays: N,
    floor: { ms: f.ms, writes: f.writes, perRelayMs: f.ms / N },
    operator: { ...o, perRelayMs: o.ms / N },
    ratio: o.ms / f.ms,
    cpus: os.cpus().length,
    node: process.version,
  };
  console.log(`reconcile benchmark: ${N} SmtpRelays (replicas 0), ${os.cpus().length} CPUs`);
  console.log(`  floor (plain SSA loop, 4 workers): ${f.ms} ms, ${f.writes} writes`);
  console.log(
    `  operator to all Ready:             ${o.ms} ms, ${o.convergeWrites} writes (${(o.convergeWrites / N).toFixed(1)} per relay), ${o.reconciles} reconciles, mean ${o.meanReconcileMs.toFixed(1)} ms`,
  );
  console.log(`  operator/floor:                    ${result.ratio.toFixed(2)}x`);
  console.log(`  writes at rest over 11 s:          ${o.idleWrites}`);
  mkdirSync(path.join(REPO_ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(
    path.join(REPO_ROOT, 'bench', 'results', 'operator-latest.json'),
    JSON.stringify(result, null, 2) + '\n',
  );
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
