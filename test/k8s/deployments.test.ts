/**
 * The process kubelet's Deployment and ReplicaSet controllers: `kubectl apply` of a Deployment ends
 * in Ready local processes, `kubectl rollout status` follows a rolling update to a new ReplicaSet,
 * and the real helm's `install --wait` sees the Deployment become ready.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from './helpers/poll.js';
import { processAlive } from './helpers/ports.js';
import type { KObject } from './apiserver/objects.js';
import { isRunningAndReady, REVISION_ANNOTATION, TEMPLATE_HASH_LABEL } from './kubelet/kubelet.js';
import { askPodserver, kubeletSuite, podIP, podserver } from './testing/kubelet-suite.js';
import { manifests, podserverContainer, readyz, workload } from './testing/manifests.js';

const HELM = fileURLToPath(new URL('../../../.tmp/tools/helm/helm', import.meta.url));
const CHART_IMAGE = 'example.test/hello:1.0';

function run(cmd: string, args: string[], env: Record<string, string>, input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      { timeout: 90_000, env: { ...process.env, ...env } },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`${path.basename(cmd)} ${args.join(' ')} failed: ${stdout}${stderr}`));
        else resolve(`${stdout}${stderr}`);
      },
    );
    child.stdin?.end(input ?? '');
  });
}

/** Deployment `x` of two podservers, or another by `o`, with GREETING in their environment. */
const deployment = (
  greeting: string,
  o: { name?: string; replicas?: number; spec?: Record<string, unknown> } = {},
) =>
  manifests(
    workload(
      'Deployment',
      o.name ?? 'x',
      { replicas: o.replicas ?? 2, ...o.spec },
      {
        terminationGracePeriodSeconds: 5,
        containers: [
          podserverContainer(8080, [], {
            ports: [{ name: 'http', containerPort: 8080 }],
            env: [{ name: 'GREETING', value: greeting }],
            readinessProbe: readyz('http', 1),
          }),
        ],
      },
    ),
  );

describe('process kubelet: Deployments and ReplicaSets', () => {
  const suite = kubeletSuite({
    tmpPrefix: 'cartero-deployments-test-',
    kubelet: { images: { [CHART_IMAGE]: podserver } },
    stopGraceSeconds: 5,
  });
  const { k, apply } = suite;
  const helm = (...args: string[]) =>
    run(HELM, ['--kubeconfig', suite.server.kubeconfig, ...args], {
      HELM_CACHE_HOME: path.join(suite.dir, 'hc'),
      HELM_CONFIG_HOME: path.join(suite.dir, 'hcfg'),
      HELM_DATA_HOME: path.join(suite.dir, 'hd'),
    });
  const rsT = () => suite.resource('apps', 'v1', 'replicasets');
  const ownedBy = (owner: KObject) => (o: KObject) =>
    !!o.metadata.ownerReferences?.some((r) => r.uid === owner.metadata.uid && r.controller);
  const deploy = (name: string) => suite.get(suite.resource('apps', 'v1', 'deployments'), name)!;
  const replicaSet = (name: string) => suite.get(rsT(), name)!;
  const replicaSets = (d: KObject) => suite.list(rsT()).filter(ownedBy(d));
  const podsOf = (rs: KObject) => suite.list(suite.resource('', 'v1', 'pods')).filter(ownedBy(rs));
  const info = (p: KObject) => askPodserver(podIP(p));
  const pidOf = (p: KObject) => suite.kubelet.pods().find((r) => r.uid === p.metadata.uid)?.pid;

  it('runs a Deployment as a ReplicaSet of Ready processes with truthful status', async () => {
    await apply(deployment('hello'));
    await k('rollout', 'status', 'deployment/x', '--timeout=30s');
    const d = deploy('x');
    const sets = replicaSets(d);
    assert.equal(sets.length, 1);
    const rs = sets[0];
    const hash = rs.metadata.labels?.[TEMPLATE_HASH_LABEL] ?? '';
    assert.match(hash, /^[0-9a-z]+$/);
    assert.equal(rs.metadata.name, `x-${hash}`);
    assert.equal(rs.metadata.annotations?.[REVISION_ANNOTATION], '1');
    assert.deepEqual(
      rs.metadata.ownerReferences?.map((r) => [r.kind, r.name, r.uid, r.controller]),
      [['Deployment', 'x', d.metadata.uid, true]],
    );
    const pods = await waitFor(() => {
      const ps = podsOf(rs);
      return ps.length === 2 && ps.every(isRunningAndReady) && ps;
    });
    for (const p of pods) {
      assert.match(p.metadata.name ?? '', new RegExp(`^x-${hash}-[bcdfghjklmnpqrstvwxz2456789]{5}$`));
      assert.equal(p.metadata.labels?.app, 'x');
      assert.equal(p.metadata.labels?.[TEMPLATE_HASH_LABEL], hash);
      assert.deepEqual(
        p.metadata.ownerReferences?.map((r) => [r.kind, r.name, r.uid]),
        [['ReplicaSet', rs.metadata.name, rs.metadata.uid]],
      );
      const pid = pidOf(p);
      assert.ok(pid && processAlive(pid), 'each pod is a live process');
      const i = await info(p);
      assert.equal(i.pid, pid);
      assert.equal(i.env.POD_NAME, p.metadata.name);
      assert.equal(i.env.GREETING, 'hello');
    }
    const rsStatus = await waitFor(() => {
      const s = replicaSet(rs.metadata.name ?? '').status as Record<string, unknown>;
      return s.availableReplicas === 2 && s;
    });
    assert.equal(rsStatus.replicas, 2);
    assert.equal(rsStatus.readyReplicas, 2);
    assert.equal(rsStatus.observedGeneration, rs.metadata.generation);
    const st = deploy('x').status as {
      observedGeneration: number;
      replicas: number;
      updatedReplicas: number;
      readyReplicas: number;
      availableReplicas: number;
      conditions: { type: string; status: string; reason: string }[];
    };
    assert.equal(st.observedGeneration, deploy('x').metadata.generation);
    assert.equal(st.replicas, 2);
    assert.equal(st.updatedReplicas, 2);
    assert.equal(st.readyReplicas, 2);
    assert.equal(st.availableReplicas, 2);
    assert.deepEqual(
      st.conditions.map((c) => [c.type, c.status, c.reason]),
      [
        ['Available', 'True', 'MinimumReplicasAvailable'],
        ['Progressing', 'True', 'NewReplicaSetAvailable'],
      ],
    );
    assert.match(await k('get', 'deployment', 'x'), /x\s+2\/2\s+2\s+2/);
  });

  it('rolls a template change out to a new ReplicaSet, and the old processes exit', async () => {
    const d0 = deploy('x');
    const oldRs = replicaSets(d0)[0];
    const oldPids = podsOf(oldRs).map((p) => pidOf(p)!);
    assert.equal(oldPids.length, 2);
    // Ready pods of the Deployment, sampled on every pod change: never below 2 - maxUnavailable (0).
    let minReady = Infinity;
    const unsubscribe = suite.server.store.subscribe((e) => {
      if (e.key !== '/pods') return;
      const ready = replicaSets(d0)
        .flatMap(podsOf)
        .filter((p) => isRunningAndReady(p)).length;
      minReady = Math.min(minReady, ready);
    });
    try {
      await apply(deployment('bonjour'));
      await k('rollout', 'status', 'deployment/x', '--timeout=30s');
    } finally {
      unsubscribe();
    }
    const sets = replicaSets(deploy('x'));
    assert.equal(sets.length, 2, 'the old ReplicaSet is kept, scaled to 0');
    const newRs = sets.find((rs) => rs.metadata.uid !== oldRs.metadata.uid)!;
    assert.notEqual(
      newRs.metadata.labels?.[TEMPLATE_HASH_LABEL],
      oldRs.metadata.labels?.[TEMPLATE_HASH_LABEL],
    );
    assert.equal(newRs.metadata.annotations?.[REVISION_ANNOTATION], '2');
    assert.equal((replicaSet(oldRs.metadata.name ?? '').spec as { replicas: number }).replicas, 0);
    await waitFor(() => oldPids.every((pid) => !processAlive(pid)), {
      what: 'old processes gone',
      timeoutMs: 20_000,
    });
    await waitFor(() => podsOf(oldRs).length === 0, { what: 'old pods gone' });
    const pods = podsOf(newRs);
    assert.equal(pods.length, 2);
    for (const p of pods) assert.equal((await info(p)).env.GREETING, 'bonjour');
    assert.ok(minReady >= 2, `at least 2 pods stayed Ready during the rollout (saw ${minReady})`);
    const st = deploy('x').status as {
      updatedReplicas: number;
      replicas: number;
      conditions: { reason: string }[];
    };
    assert.equal(st.replicas, 2);
    assert.equal(st.updatedReplicas, 2);
    assert.equal(st.conditions.find((c) => c.reason === 'NewReplicaSetAvailable') !== undefined, true);

    const pids = podsOf(newRs).map((p) => pidOf(p)!);
    await k('delete', 'deployment', 'x', '--wait=true', '--timeout=30s');
    await waitFor(() => pids.every((pid) => !processAlive(pid)), {
      what: 'processes of the deleted Deployment gone',
      timeoutMs: 20_000,
    });
  });

  it('scales with kubectl scale, and the Recreate strategy stops old pods before starting new ones', async () => {
    const recreate = (greeting: string) =>
      deployment(greeting, { name: 'recreate', replicas: 1, spec: { strategy: { type: 'Recreate' } } });
    await apply(recreate('one'));
    await k('rollout', 'status', 'deployment/recreate', '--timeout=30s');
    await k('scale', 'deployment/recreate', '--replicas=3');
    await k('rollout', 'status', 'deployment/recreate', '--timeout=30s');
    const readyPods = () =>
      replicaSets(deploy('recreate'))
        .flatMap(podsOf)
        .filter((p) => isRunningAndReady(p));
    await waitFor(() => readyPods().length === 3, { what: '3 Ready pods' });
    await k('scale', 'deployment/recreate', '--replicas=1');
    await waitFor(() => replicaSets(deploy('recreate')).flatMap(podsOf).length === 1, {
      what: 'scaled down to 1 pod',
    });
    await waitFor(() => (deploy('recreate').status as { replicas: number }).replicas === 1, {
      what: 'status.replicas 1',
    });

    const oldRs = replicaSets(deploy('recreate'))[0];
    const oldPid = pidOf(podsOf(oldRs)[0])!;
    const added: { name: string; oldPods: number }[] = [];
    const unsubscribe = suite.server.store.subscribe((e) => {
      if (e.key === '/pods' && e.type === 'ADDED')
        added.push({ name: e.object.metadata.name ?? '', oldPods: podsOf(oldRs).length });
    });
    try {
      await apply(recreate('two'));
      await k('rollout', 'status', 'deployment/recreate', '--timeout=30s');
    } finally {
      unsubscribe();
    }
    assert.ok(!processAlive(oldPid), 'the old process is gone');
    assert.equal(added.length, 1);
    assert.equal(added[0].oldPods, 0, 'the new pod was created once the old one was gone');
    const newPods = replicaSets(deploy('recreate'))
      .filter((rs) => rs.metadata.uid !== oldRs.metadata.uid)
      .flatMap(podsOf);
    assert.equal(newPods.length, 1);
    assert.equal((await info(newPods[0])).env.GREETING, 'two');
    const pid = pidOf(newPods[0])!;
    await k('delete', 'deployment', 'recreate', '--wait=true', '--timeout=30s');
    await waitFor(() => !processAlive(pid), { what: 'y process gone', timeoutMs: 20_000 });
  });

  it('helm install --wait of a chart with a Deployment succeeds', async () => {
    const chart = path.join(suite.dir, 'chart');
    await mkdir(path.join(chart, 'templates'), { recursive: true });
    await writeFile(path.join(chart, 'Chart.yaml'), 'apiVersion: v2\nname: hello\nversion: 0.1.0\n');
    await writeFile(path.join(chart, 'values.yaml'), `image: ${CHART_IMAGE}\nreplicas: 2\n`);
    await writeFile(
      path.join(chart, 'templates', 'deployment.yaml'),
      [
        'apiVersion: apps/v1',
        'kind: Deployment',
        'metadata:',
        '  name: {{ .Release.Name }}-hello',
        'spec:',
        '  replicas: {{ .Values.replicas }}',
        '  selector: { matchLabels: { app: {{ .Release.Name }}-hello } }',
        '  template:',
        '    metadata: { labels: { app: {{ .Release.Name }}-hello } }',
        '    spec:',
        '      terminationGracePeriodSeconds: 5',
        '      containers:',
        '        - name: hello',
        '          image: {{ .Values.image }}',
        '          args: ["--port", "8080"]',
        '          ports: [{ name: http, containerPort: 8080 }]',
        '          readinessProbe: { httpGet: { path: /readyz, port: http }, periodSeconds: 1 }',
        '',
      ].join('\n'),
    );
    const out = await helm('install', 'rel', chart, '-n', 'default', '--wait', '--timeout', '60s');
    assert.match(out, /STATUS: deployed/);
    const d = deploy('rel-hello');
    assert.equal(
      (d.status as { availableReplicas: number }).availableReplicas,
      2,
      'helm waited for the pods',
    );
    const pods = replicaSets(d).flatMap(podsOf);
    assert.equal(pods.length, 2);
    const pids = pods.map((p) => pidOf(p)!);
    for (const p of pods) assert.ok(isRunningAndReady(p));
    await helm('uninstall', 'rel', '-n', 'default', '--wait', '--timeout', '60s');
    await waitFor(() => pids.every((pid) => !processAlive(pid)), {
      what: 'chart processes gone',
      timeoutMs: 20_000,
    });
  });
});
