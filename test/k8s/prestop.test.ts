/**
 * preStop hooks in the process kubelet: run on pod deletion before SIGTERM (exec with the pod's
 * environment, cwd and rewritten paths; httpGet to the pod IP), their time counted against
 * `terminationGracePeriodSeconds`, then SIGTERM and SIGKILL at the deadline.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from './helpers/poll.js';
import { processAlive } from './helpers/ports.js';
import { makeTmpDir, removeTmpDir } from './helpers/tmp.js';
import type { KObject } from './apiserver/objects.js';
import type { ResourceType } from './apiserver/resources.js';
import { startApiServer, type ApiServer } from './apiserver/server.js';
import { allocateAddresses, kubectlOf } from './harness.js';
import { isRunningAndReady, startKubelet, type Kubelet } from './kubelet/kubelet.js';

/** Pod addresses and Service IPs no other test process uses at the same time. */
const NET = allocateAddresses();

const PODSERVER = fileURLToPath(new URL('./fixtures/podserver.js', import.meta.url));
const HOOK = fileURLToPath(new URL('./fixtures/hook.js', import.meta.url));
const IMAGE = 'cartero.test/podserver:1';

interface Event {
  what: string;
  pid: number;
  at: number;
  hook?: { pid: number; argv: string[]; cwd: string; pod: string; content?: string };
}

/** The lines the podserver (`start`, `prestop`, `sigterm`) and the hook fixture (`hook`) appended. */
async function events(file: string): Promise<Event[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((l) => l)
    .map((l) => {
      if (l.startsWith('hook ')) {
        const hook = JSON.parse(l.slice(5)) as Event['hook'] & { at: number };
        return { what: 'hook', pid: hook.pid, at: hook.at, hook };
      }
      const [what, pid, at] = l.split(' ');
      return { what, pid: Number(pid), at: Number(at) };
    });
}

describe('process kubelet: preStop hooks', () => {
  let dir: string;
  let server: ApiServer;
  let kubelet: Kubelet;
  const errors: unknown[] = [];
  let podT: ResourceType;
  const k = (...args: string[]) => kubectlOf(server, dir)(args);
  const apply = (text: string) => kubectlOf(server, dir)(['apply', '-f', '-'], text);
  const pod = (name: string): KObject | undefined => {
    try {
      return server.store.get(podT, 'default', name);
    } catch {
      return undefined;
    }
  };
  const ready = (name: string) => {
    const p = pod(name);
    return !!p && isRunningAndReady(p);
  };
  /** When each pod got its deletionTimestamp and when it was gone (ms), seen in the store. */
  const deletions = new Map<string, { marked?: number; gone?: number }>();
  /** Deletes a pod as kubectl does (waiting until it is gone); ms from deletionTimestamp to gone. */
  const timedDelete = async (name: string) => {
    await k('delete', 'pod', name, '--wait=true', '--timeout=60s');
    const d = deletions.get(name);
    assert.ok(d?.marked && d.gone, `deletion of ${name} seen`);
    return d.gone - d.marked;
  };

  before(async () => {
    dir = await makeTmpDir('cartero-prestop-test-');
    server = await startApiServer({
      dir: path.join(dir, 'api'),
      serviceClusterIpRange: NET.serviceRange,
    });
    podT = server.registry.find('', 'v1', 'pods')!;
    server.store.subscribe((e) => {
      if (e.key !== '/pods') return;
      const name = e.object.metadata.name ?? '';
      const d = deletions.get(name) ?? {};
      if (e.type === 'MODIFIED' && e.object.metadata.deletionTimestamp) d.marked ??= Date.now();
      if (e.type === 'DELETED') d.gone = Date.now();
      deletions.set(name, d);
    });
    kubelet = startKubelet({
      server,
      images: { [IMAGE]: { command: process.execPath, args: [PODSERVER] } },
      dir: path.join(dir, 'pods'),
      onError: (err) => errors.push(err),
      podAddresses: NET.podAddresses(),
    });
  });

  after(async () => {
    const pids = kubelet ? kubelet.spawnedPids() : [];
    await kubelet?.stop({ graceSeconds: 5 });
    await server?.stop();
    if (dir) await removeTmpDir(dir);
    for (const pid of pids) assert.ok(!processAlive(pid), `process ${pid} is gone`);
    assert.deepEqual(errors, [], 'the kubelet hit no errors');
  });

  it('runs an exec hook with the pod environment, cwd and rewritten paths before SIGTERM', async () => {
    const file = path.join(dir, 'exec.events');
    await apply(`
apiVersion: v1
kind: ConfigMap
metadata: {name: hook-config}
data: {greeting: "bye now"}
---
apiVersion: v1
kind: Pod
metadata: {name: exec-hook}
spec:
  nodeName: cartero-kubelet
  terminationGracePeriodSeconds: 10
  containers:
    - name: server
      image: ${IMAGE}
      args: [--port, "8080", --events, ${file}]
      readinessProbe: {httpGet: {path: /readyz, port: 8080}, periodSeconds: 0.2}
      volumeMounts: [{name: c, mountPath: /etc/hook}]
      lifecycle:
        preStop:
          exec:
            command: [${process.execPath}, ${HOOK}, --record, ${file}, --file, /etc/hook/greeting]
  volumes: [{name: c, configMap: {name: hook-config}}]
`);
    await waitFor(() => ready('exec-hook'), { what: 'exec-hook Ready' });
    const podDir = kubelet.pods().find((p) => p.name === 'exec-hook')!.dir;
    const took = await timedDelete('exec-hook');
    const ev = await events(file);
    assert.deepEqual(
      ev.map((e) => e.what),
      ['start', 'hook', 'sigterm'],
    );
    const hook = ev[1].hook!;
    assert.equal(hook.pod, 'exec-hook', 'the pod environment');
    assert.equal(hook.cwd, podDir);
    assert.equal(hook.argv.at(-1), path.join(podDir, 'mounts/etc/hook/greeting'));
    assert.equal(hook.content, 'bye now', 'the volume is still there while the hook runs');
    assert.ok(took < 5_000, `deletion took ${took} ms: SIGTERM right after the hook`);
  });

  it('GETs an httpGet hook from the pod before SIGTERM', async () => {
    const file = path.join(dir, 'http.events');
    await apply(`
apiVersion: v1
kind: Pod
metadata: {name: http-hook}
spec:
  nodeName: cartero-kubelet
  terminationGracePeriodSeconds: 10
  containers:
    - name: server
      image: ${IMAGE}
      args: [--port, "8080", --events, ${file}]
      ports: [{name: http, containerPort: 8080}]
      readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 0.2}
      lifecycle:
        preStop:
          httpGet: {path: /prestop, port: http}
`);
    await waitFor(() => ready('http-hook'), { what: 'http-hook Ready' });
    await timedDelete('http-hook');
    const ev = await events(file);
    assert.deepEqual(
      ev.map((e) => e.what),
      ['start', 'prestop', 'sigterm'],
    );
    assert.ok(ev.every((e) => e.pid === ev[0].pid));
  });

  it("counts the hook's time against the grace period (SIGKILL at the deadline)", async () => {
    const file = path.join(dir, 'slow.events');
    await apply(`
apiVersion: v1
kind: Pod
metadata: {name: slow-hook}
spec:
  nodeName: cartero-kubelet
  terminationGracePeriodSeconds: 4
  containers:
    - name: server
      image: ${IMAGE}
      args: [--port, "8080", --events, ${file}, --ignore-sigterm]
      readinessProbe: {httpGet: {path: /readyz, port: 8080}, periodSeconds: 0.2}
      lifecycle:
        preStop:
          httpGet: {path: "/prestop?ms=1500", port: 8080}
`);
    await waitFor(() => ready('slow-hook'), { what: 'slow-hook Ready' });
    const pid = kubelet.pods().find((p) => p.name === 'slow-hook')!.pid!;
    const took = await timedDelete('slow-hook');
    const ev = await events(file);
    assert.deepEqual(
      ev.map((e) => e.what),
      ['start', 'prestop', 'sigterm'],
    );
    const [, prestop, sigterm] = ev;
    assert.ok(sigterm.at - prestop.at >= 1_400, 'SIGTERM once the hook answered');
    // 4 s in all (hook 1.5 s + the rest of the grace period), not 1.5 + 4 s.
    assert.ok(took >= 3_900 && took < 5_000, `deletion took ${took} ms`);
    assert.ok(!processAlive(pid), 'SIGKILLed at the deadline');
  });

  it('stops waiting for a hook at the deadline, kills it, and still gives SIGTERM a short window', async () => {
    const file = path.join(dir, 'stuck.events');
    await apply(`
apiVersion: v1
kind: Pod
metadata: {name: stuck-hook}
spec:
  nodeName: cartero-kubelet
  terminationGracePeriodSeconds: 2
  containers:
    - name: server
      image: ${IMAGE}
      args: [--port, "8080", --events, ${file}, --ignore-sigterm]
      readinessProbe: {httpGet: {path: /readyz, port: 8080}, periodSeconds: 0.2}
      lifecycle:
        preStop:
          exec: {command: [${process.execPath}, ${HOOK}, --record, ${file}, --sleep, "60000"]}
`);
    await waitFor(() => ready('stuck-hook'), { what: 'stuck-hook Ready' });
    const took = await timedDelete('stuck-hook');
    const ev = await events(file);
    assert.deepEqual(
      ev.map((e) => e.what),
      ['start', 'hook', 'sigterm'],
    );
    const [, hook, sigterm] = ev;
    assert.ok(sigterm.at - hook.at >= 1_500, 'SIGTERM only at the end of the grace period');
    // 2 s grace used up by the hook, then the kubelet's minimum 2 s for SIGTERM before SIGKILL.
    assert.ok(took >= 3_900 && took < 5_000, `deletion took ${took} ms`);
    await waitFor(() => !processAlive(hook.pid), { what: 'the hook process killed' });
  });
});
