import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { waitFor } from './helpers/poll.js';
import { processAlive } from './helpers/ports.js';
import { isRunningAndReady, POD_NAME_LABEL, REVISION_LABEL } from './kubelet/kubelet.js';
import { askPodserver, kubeletSuite, podIP, PODSERVER_IMAGE as IMAGE } from './testing/kubelet-suite.js';
import { manifests, nodePod, podserverContainer, readyz, workload } from './testing/manifests.js';

const manifest = (opts: { replicas: number; greeting: string }) => `
apiVersion: v1
kind: ConfigMap
metadata: {name: x-config}
data:
  greeting.txt: "${opts.greeting}"
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: x}
spec:
  replicas: ${opts.replicas}
  serviceName: x
  updateStrategy: {type: RollingUpdate}
  selector: {matchLabels: {app: x}}
  template:
    metadata:
      labels: {app: x}
      annotations: {greeting: "${opts.greeting}"}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
        - name: server
          image: ${IMAGE}
          args: [--port, "8080", --file, /etc/podserver/greeting.txt]
          ports: [{name: http, containerPort: 8080}]
          env:
            - {name: GREETING, value: "${opts.greeting}"}
            - {name: GREETING_TWICE, value: "$(GREETING)$(GREETING)"}
            - name: MY_NAME
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
            - name: MY_NAMESPACE
              valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
            - name: MY_IP
              valueFrom: {fieldRef: {fieldPath: status.podIP}}
            - name: MY_NODE
              valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
          volumeMounts:
            - {name: config, mountPath: /etc/podserver}
          readinessProbe:
            httpGet: {path: /readyz, port: http}
            periodSeconds: 1
      volumes:
        - name: config
          configMap: {name: x-config}
`;

describe('process kubelet: StatefulSets to local processes', () => {
  const podEvents: { type: string; name: string; x0Ready: boolean }[] = [];
  const suite = kubeletSuite({
    tmpPrefix: 'cartero-kubelet-test-',
    beforeKubelet: (server) =>
      server.store.subscribe((e) => {
        if (e.key !== '/pods' || e.type === 'MODIFIED') return;
        const x0 = e.object.metadata.name === 'x-0' ? undefined : pod('x-0');
        podEvents.push({
          type: e.type,
          name: e.object.metadata.name ?? '',
          x0Ready: !!x0 && isRunningAndReady(x0),
        });
      }),
  });
  const { k, apply, pod } = suite;
  const ipOf = (name: string) => podIP(pod(name)!);
  const info = (name: string) => askPodserver(ipOf(name));
  const statefulSet = () => suite.get(suite.resource('apps', 'v1', 'statefulsets'), 'x')!;
  const stsStatus = () => statefulSet().status as Record<string, unknown>;

  it('starts pods in order as processes that become Ready and answer at their pod IP', async () => {
    await apply(manifest({ replicas: 2, greeting: 'hello' }));
    await waitFor(() => pod('x-0'), { what: 'pod x-0' });
    await k('wait', '--for=condition=Ready', 'pod/x-0', '--timeout=30s');
    await waitFor(() => pod('x-1'), { what: 'pod x-1' });
    await k('wait', '--for=condition=Ready', 'pod/x-1', '--timeout=30s');
    assert.deepEqual(
      podEvents.filter((e) => e.type === 'ADDED').map((e) => [e.name, e.x0Ready]),
      [
        ['x-0', false],
        ['x-1', true],
      ],
      'x-1 is created only once x-0 is Ready',
    );

    const p0 = pod('x-0')!;
    const sts = statefulSet();
    assert.equal(p0.metadata.labels?.app, 'x');
    assert.equal(p0.metadata.labels?.[POD_NAME_LABEL], 'x-0');
    assert.match(p0.metadata.labels?.[REVISION_LABEL] ?? '', /^x-[0-9a-f]{10}$/);
    assert.deepEqual(
      p0.metadata.ownerReferences?.map((r) => [r.kind, r.name, r.uid, r.controller]),
      [['StatefulSet', 'x', sts.metadata.uid, true]],
    );
    const ip0 = ipOf('x-0');
    const ip1 = ipOf('x-1');
    assert.ok(ip0.startsWith(`${suite.addresses.podPrefix}.`), ip0);
    assert.notEqual(ip0, ip1);

    const i0 = await info('x-0');
    assert.equal(i0.env.POD_NAME, 'x-0');
    assert.equal(i0.env.POD_NAMESPACE, 'default');
    assert.equal(i0.env.POD_IP, ip0);
    assert.equal(i0.env.MY_NAME, 'x-0');
    assert.equal(i0.env.MY_NAMESPACE, 'default');
    assert.equal(i0.env.MY_IP, ip0);
    assert.equal(i0.env.MY_NODE, i0.env.NODE_NAME);
    assert.equal(i0.env.GREETING, 'hello');
    assert.equal(i0.env.GREETING_TWICE, 'hellohello');
    assert.equal(i0.content, 'hello', 'the ConfigMap volume is readable at the rewritten mountPath');
    assert.equal(
      i0.argv[3],
      path.join(suite.kubelet.pods().find((p) => p.name === 'x-0')!.dir, 'mounts/etc/podserver/greeting.txt'),
    );
    assert.equal((await info('x-1')).env.POD_NAME, 'x-1');
    const log = await readFile(suite.kubelet.logPath('default', 'x-0')!, 'utf8');
    assert.match(log, /podserver env .*"POD_NAME":"x-0"/);

    await waitFor(() => stsStatus().readyReplicas === 2, { what: 'readyReplicas 2' });
    const st = stsStatus();
    assert.equal(st.replicas, 2);
    assert.equal(st.currentReplicas, 2);
    assert.equal(st.updatedReplicas, 2);
    assert.equal(st.availableReplicas, 2);
    assert.equal(st.currentRevision, st.updateRevision);
    assert.equal(st.updateRevision, p0.metadata.labels?.[REVISION_LABEL]);
    assert.equal(st.observedGeneration, sts.metadata.generation);
    await k('rollout', 'status', 'statefulset/x', '--timeout=30s');
    assert.match(await k('get', 'pods'), /x-0\s+1\/1\s+Running\s+0/);
    assert.match(await k('get', 'statefulset', 'x'), /x\s+2\/2/);
  });

  it('restarts a process that exits', async () => {
    const before = await info('x-0');
    await fetch(`http://${ipOf('x-0')}:8080/exit`);
    const restarted = await waitFor(
      () => {
        const cs = (pod('x-0')?.status as { containerStatuses?: { restartCount: number; ready: boolean }[] })
          ?.containerStatuses?.[0];
        return cs && cs.restartCount === 1 && cs.ready && cs;
      },
      { what: 'x-0 restarted and Ready', timeoutMs: 20_000 },
    );
    assert.equal(restarted.restartCount, 1);
    const after = await info('x-0');
    assert.notEqual(after.pid, before.pid);
    assert.ok(!processAlive(before.pid));
  });

  it('follows the readiness probe', async () => {
    const readyCondition = () =>
      (pod('x-1')?.status as { conditions: { type: string; status: string }[] }).conditions.find(
        (c) => c.type === 'Ready',
      )?.status;
    await fetch(`http://${ipOf('x-1')}:8080/unready`);
    await waitFor(() => readyCondition() === 'False' && stsStatus().readyReplicas === 1, {
      what: 'x-1 not Ready',
      timeoutMs: 20_000,
    });
    await fetch(`http://${ipOf('x-1')}:8080/ready`);
    await waitFor(() => readyCondition() === 'True' && stsStatus().readyReplicas === 2, {
      what: 'x-1 Ready again',
      timeoutMs: 20_000,
    });
  });

  it('rolls a template change from the highest ordinal down', async () => {
    const oldRevision = stsStatus().updateRevision;
    const oldPids = [(await info('x-0')).pid, (await info('x-1')).pid];
    podEvents.length = 0;
    await apply(manifest({ replicas: 2, greeting: 'bonjour' }));
    await waitFor(() => stsStatus().updateRevision !== oldRevision, { what: 'new updateRevision' });
    await k('rollout', 'status', 'statefulset/x', '--timeout=60s');
    const st = stsStatus();
    assert.equal(st.currentRevision, st.updateRevision);
    assert.equal(st.updatedReplicas, 2);
    assert.deepEqual(
      podEvents.map((e) => `${e.type} ${e.name}`),
      ['DELETED x-1', 'ADDED x-1', 'DELETED x-0', 'ADDED x-0'],
    );
    for (const name of ['x-0', 'x-1']) {
      assert.equal(pod(name)?.metadata.labels?.[REVISION_LABEL], st.updateRevision);
      const i = await info(name);
      assert.equal(i.env.GREETING, 'bonjour');
      assert.equal(i.content, 'bonjour');
    }
    for (const pid of oldPids) assert.ok(!processAlive(pid), `old process ${pid} is gone`);
  });

  it('scales 2 -> 1 by removing x-1 and its process', async () => {
    const pid1 = (await info('x-1')).pid;
    await k('scale', 'statefulset/x', '--replicas=1');
    await waitFor(() => !pod('x-1'), { what: 'x-1 deleted' });
    await waitFor(() => !processAlive(pid1), { what: 'x-1 process gone' });
    await waitFor(() => stsStatus().replicas === 1 && stsStatus().readyReplicas === 1, {
      what: 'status 1/1',
    });
    assert.ok(pod('x-0'));
    assert.deepEqual(
      suite.kubelet.pods().map((p) => p.name),
      ['x-0'],
    );
  });

  it('updates ConfigMap volume files of a running pod', async () => {
    const before = await info('x-0');
    await k('patch', 'configmap', 'x-config', '--type=merge', '-p', '{"data":{"greeting.txt":"hola"}}');
    const after = await waitFor(
      async () => {
        const i = await info('x-0');
        return i.content === 'hola' && i;
      },
      { what: 'updated greeting file' },
    );
    assert.equal(after.pid, before.pid);
  });

  it('leaves no process behind when stopped', async () => {
    const pids = suite.kubelet.spawnedPids();
    assert.ok(pids.length >= 5);
    await suite.kubelet.stop();
    for (const pid of pids) assert.ok(!processAlive(pid), `process ${pid} is gone`);
    assert.deepEqual(suite.kubelet.pods(), []);
  });
});

describe('process kubelet: Parallel pods, grace periods, unknown images', () => {
  const suite = kubeletSuite({
    tmpPrefix: 'cartero-kubelet-test-',
  });
  const { k, apply, pod, ready } = suite;
  /**
   * A Parallel StatefulSet of podservers on `port` (`args` after it) that keep their state on a claim
   * `data` (1Mi, ReadWriteOnce), Ready once the port accepts connections.
   */
  const statefulSetWithClaims = (
    name: string,
    port: number,
    o: { replicas: number; grace: number; args?: string[]; spec?: Record<string, unknown> },
  ) =>
    manifests(
      workload(
        'StatefulSet',
        name,
        {
          replicas: o.replicas,
          podManagementPolicy: 'Parallel',
          ...o.spec,
          volumeClaimTemplates: [
            {
              metadata: { name: 'data' },
              spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Mi' } } },
            },
          ],
        },
        {
          terminationGracePeriodSeconds: o.grace,
          containers: [
            podserverContainer(port, [...(o.args ?? []), '--state=/var/lib/podserver'], {
              readinessProbe: { tcpSocket: { port }, periodSeconds: 1 },
              volumeMounts: [{ name: 'data', mountPath: '/var/lib/podserver' }],
            }),
          ],
        },
      ),
    );

  it('creates Parallel pods at once, kills SIGTERM-deaf processes after the grace period', async () => {
    await apply(
      statefulSetWithClaims('par', 9090, {
        replicas: 3,
        grace: 1,
        args: ['--ignore-sigterm'],
      }),
    );
    await waitFor(() => pod('par-0') && pod('par-1') && pod('par-2'), { what: 'three pods' });
    await waitFor(() => ready('par-0') && ready('par-1') && ready('par-2'), {
      what: 'three Ready',
      timeoutMs: 20_000,
    });
    const pvc = suite.get(suite.resource('', 'v1', 'persistentvolumeclaims'), 'data-par-0')!;
    assert.equal((pvc.status as { phase: string }).phase, 'Bound');
    const starts = async () => {
      return (await askPodserver(podIP(pod('par-0')!), 9090)).starts;
    };
    assert.equal(await starts(), 'started par-0\n');
    const uid0 = pod('par-0')?.metadata.uid;
    const pid0 = suite.kubelet.pods().find((p) => p.name === 'par-0')?.pid ?? 0;
    const started = Date.now();
    await k('delete', 'pod', 'par-0', '--wait=true', '--timeout=30s');
    assert.ok(Date.now() - started >= 900, 'deletion waited for the grace period');
    assert.ok(!processAlive(pid0), 'SIGKILL after the grace period');
    await waitFor(() => pod('par-0') && pod('par-0')?.metadata.uid !== uid0 && ready('par-0'), {
      what: 'par-0 recreated and Ready',
      timeoutMs: 20_000,
    });
    assert.equal(await starts(), 'started par-0\nstarted par-0\n', 'the claim outlives the pod');
    await k('scale', 'statefulset/par', '--replicas=1');
    await waitFor(() => !pod('par-1') && !pod('par-2'), { what: 'par-1 and par-2 gone' });
    assert.deepEqual(
      suite.kubelet.pods().map((p) => p.name),
      ['par-0'],
    );
    const pid = suite.kubelet.pods()[0].pid ?? 0;
    await k('delete', 'statefulset', 'par', '--wait=true', '--timeout=30s');
    await waitFor(() => !pod('par-0') && !processAlive(pid) && suite.kubelet.pods().length === 0, {
      what: 'pods of the deleted StatefulSet gone',
    });
  });

  it('honours persistentVolumeClaimRetentionPolicy: whenScaled and whenDeleted Delete release claims and volumes', async () => {
    const claim = (name: string) => suite.get(suite.resource('', 'v1', 'persistentvolumeclaims'), name);
    await apply(
      statefulSetWithClaims('ret', 9191, {
        replicas: 2,
        grace: 2,
        spec: { persistentVolumeClaimRetentionPolicy: { whenScaled: 'Delete', whenDeleted: 'Delete' } },
      }),
    );
    await waitFor(() => ready('ret-0') && ready('ret-1'), { what: 'two Ready', timeoutMs: 20_000 });
    const volume1 = path.join(suite.dir, 'pods', 'volumes', 'default', 'data-ret-1');
    await waitFor(() => existsSync(volume1), { what: 'the volume of ret-1' });
    await k('scale', 'statefulset/ret', '--replicas=1');
    await waitFor(() => !pod('ret-1') && !claim('data-ret-1') && !existsSync(volume1), {
      what: 'ret-1, its claim and its volume gone',
      timeoutMs: 20_000,
    });
    assert.ok(claim('data-ret-0'), 'the claim of the pod that stays is kept');
    await k('delete', 'statefulset', 'ret', '--wait=true', '--timeout=30s');
    await waitFor(() => !pod('ret-0') && !claim('data-ret-0'), {
      what: 'whenDeleted: Delete collects the remaining claim',
      timeoutMs: 20_000,
    });
  });

  it('restarts a container whose liveness probe fails', async () => {
    await apply(
      manifests(
        nodePod('lively', {
          terminationGracePeriodSeconds: 2,
          containers: [
            podserverContainer(9091, [], {
              livenessProbe: {
                httpGet: { path: '/livez', port: 9091 },
                initialDelaySeconds: 3,
                periodSeconds: 0.2,
                failureThreshold: 2,
              },
            }),
          ],
        }),
      ),
    );
    // The delay covers the restarted process's start-up on a loaded machine (no startupProbe here).
    const restarts = () =>
      (pod('lively')?.status as { containerStatuses?: { restartCount: number }[] } | undefined)
        ?.containerStatuses?.[0]?.restartCount;
    await waitFor(() => ready('lively'), { what: 'lively Ready' });
    const ip = podIP(pod('lively')!);
    // Without a readiness probe the pod is Ready once started, maybe before it listens.
    const get = (p: string) =>
      fetch(`http://${ip}:9091${p}`).then(
        (r) => r.ok,
        () => false,
      );
    await waitFor(() => get('/unlive'), { what: 'lively answering' });
    await waitFor(() => restarts() === 1 && ready('lively'), { what: 'lively restarted', timeoutMs: 20_000 });
    await waitFor(() => get('/livez'), { what: 'restarted lively live' });
    assert.equal(restarts(), 1);
    await k('delete', 'pod', 'lively', '--wait=true', '--timeout=30s');
    await waitFor(() => suite.kubelet.pods().every((p) => p.name !== 'lively'), {
      what: 'lively process gone',
    });
  });

  it('starts a pod once the ConfigMap its volume needs exists', async () => {
    await apply(
      manifests(
        nodePod('waiting', {
          containers: [
            podserverContainer(9092, ['--file=/config/a'], {
              readinessProbe: readyz(9092, 0.2),
              volumeMounts: [{ name: 'c', mountPath: '/config' }],
            }),
          ],
          volumes: [{ name: 'c', configMap: { name: 'late' } }],
        }),
      ),
    );
    await waitFor(
      () =>
        (pod('waiting')?.status as { containerStatuses?: { state: { waiting?: { reason: string } } }[] })
          ?.containerStatuses?.[0]?.state.waiting?.reason === 'CreateContainerConfigError',
      { what: 'CreateContainerConfigError' },
    );
    await k('create', 'configmap', 'late', '--from-literal=a=finally');
    await waitFor(() => ready('waiting'), { what: 'waiting Ready' });
    assert.equal((await askPodserver(podIP(pod('waiting')!), 9092)).content, 'finally');
    await k('delete', 'pod', 'waiting', '--wait=true', '--timeout=30s');
  });

  it('leaves a pod with an unmapped image Pending with ErrImagePull', async () => {
    await k(
      'run',
      'stray',
      '--image=nowhere/unknown:1',
      '--overrides={"spec":{"nodeName":"cartero-kubelet"}}',
    );
    const status = await waitFor(
      () =>
        (pod('stray')?.status as { containerStatuses?: { state: { waiting?: { reason: string } } }[] })
          ?.containerStatuses?.[0],
      { what: 'stray status' },
    );
    assert.equal(status.state.waiting?.reason, 'ErrImagePull');
    assert.equal((pod('stray')?.status as { phase: string }).phase, 'Pending');
    await k('delete', 'pod', 'stray', '--wait=true', '--timeout=30s');
  });
});

describe('process kubelet: kubectl logs (pods/log)', () => {
  const NODE_IMAGE = 'cartero.test/node:1';
  const suite = kubeletSuite({
    tmpPrefix: 'cartero-kubelet-logs-test-',
    kubelet: { images: { [NODE_IMAGE]: { command: process.execPath } }, services: false },
  });
  const { apply } = suite;
  /** Runs kubectl; resolves with its exit code and output (never rejects on a non-zero exit). */
  const run = (args: string[]) => suite.kubectl.run(args);
  const logs = async (...args: string[]) => {
    const r = await run(['logs', ...args]);
    assert.equal(r.code, 0, `kubectl logs ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  /** A pod (restartPolicy Never) whose containers run `node -e <script>`. */
  const podYaml = (name: string, containers: Record<string, string>) =>
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name },
      spec: {
        nodeName: 'cartero-kubelet',
        restartPolicy: 'Never',
        terminationGracePeriodSeconds: 2,
        containers: Object.entries(containers).map(([c, script]) => ({
          name: c,
          image: NODE_IMAGE,
          args: ['-e', script],
        })),
      },
    });
  const logFileHas = (name: string, text: string) => async () => {
    const file = suite.kubelet.logPath('default', name);
    return !!file && existsSync(file) && (await readFile(file, 'utf8')).includes(text);
  };

  before(async () => {
    await apply(podYaml('printer', { main: 'for (let i = 1; i <= 5; i++) console.log(`line ${i}`)' }));
    await waitFor(logFileHas('printer', 'line 5'), { what: 'printer output' });
  });

  it('serves the whole log, --tail and --limit-bytes, as text/plain', async () => {
    assert.equal((await logs('printer')).stdout, 'line 1\nline 2\nline 3\nline 4\nline 5\n');
    assert.equal((await logs('printer', '--tail=2')).stdout, 'line 4\nline 5\n');
    assert.equal((await logs('printer', '--tail=0')).stdout, '');
    assert.equal((await logs('printer', '--limit-bytes=9')).stdout, 'line 1\nli');
    assert.equal((await logs('pod/printer', '--timestamps', '--since=1h')).stdout.split('\n').length, 6);
    const res = await fetch(`${suite.server.url}/api/v1/namespaces/default/pods/printer/log?tailLines=1`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    assert.equal(await res.text(), 'line 5\n');
  });

  it('answers NotFound for an unknown pod and 400 for --previous', async () => {
    const missing = await run(['logs', 'nope']);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /pods "nope" not found/);
    const previous = await run(['logs', 'printer', '--previous']);
    assert.notEqual(previous.code, 0);
    assert.match(previous.stderr, /previous terminated container "main" in pod "printer" not found/);
  });

  it('picks a container with -c; without one the server answers 400 naming them', async () => {
    await apply(podYaml('duo', { a: 'console.log("from a")', b: 'console.log("from b")' }));
    await waitFor(logFileHas('duo', 'from a'), { what: 'duo output' });
    assert.equal((await logs('duo', '-c', 'a')).stdout, 'from a\n');
    // The process kubelet runs the first container only: b has no log yet, an empty 200.
    assert.equal((await logs('duo', '-c', 'b')).stdout, '');
    const bad = await run(['logs', 'duo', '-c', 'zz']);
    assert.match(bad.stderr, /container zz is not valid for pod duo/);
    // kubectl itself defaults to the first container (and says so); the API call needs a name.
    const defaulted = await logs('duo');
    assert.equal(defaulted.stdout, 'from a\n');
    assert.match(defaulted.stderr, /Defaulted container "a" out of: a, b/);
    const res = await fetch(`${suite.server.url}/api/v1/namespaces/default/pods/duo/log`);
    assert.equal(res.status, 400);
    const status = (await res.json()) as { reason: string; message: string };
    assert.equal(status.reason, 'BadRequest');
    assert.equal(status.message, 'a container name must be specified for pod duo, choose one of: [a b]');
  });

  it('follows with -f: a line written later arrives, and the stream ends when the process exits', async () => {
    const go = path.join(suite.dir, 'go');
    const script = [
      'const fs = require("node:fs");',
      'console.log("first");',
      `const t = setInterval(() => { if (fs.existsSync(${JSON.stringify(go)})) { clearInterval(t); console.log("second"); } }, 20);`,
    ].join('\n');
    await apply(podYaml('follower', { main: script }));
    await waitFor(logFileHas('follower', 'first'), { what: 'follower output' });
    const all = [
      '--kubeconfig',
      suite.server.kubeconfig,
      '--cache-dir',
      path.join(suite.dir, 'cache'),
      'logs',
      '-f',
      'follower',
    ];
    const child = execFile('kubectl', all, { timeout: 60_000 });
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    let exitCode: number | null | undefined;
    child.on('exit', (code) => (exitCode = code));
    try {
      await waitFor(() => out.includes('first\n'), { what: 'kubectl logs -f to print the first line' });
      assert.equal(exitCode, undefined, 'kubectl logs -f keeps following while the process runs');
      await writeFile(go, '');
      await waitFor(() => exitCode !== undefined, { what: 'kubectl logs -f to end', timeoutMs: 20_000 });
      assert.equal(exitCode, 0);
      assert.equal(out, 'first\nsecond\n');
    } finally {
      child.kill();
    }
  });

  it('lists pods/log in discovery', async () => {
    const list = (await (await fetch(`${suite.server.url}/api/v1`)).json()) as {
      resources: { name: string; verbs: string[]; kind: string }[];
    };
    assert.deepEqual(
      list.resources.find((r) => r.name === 'pods/log'),
      { name: 'pods/log', singularName: '', namespaced: true, kind: 'Pod', verbs: ['get'] },
    );
  });
});
