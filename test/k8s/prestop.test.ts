/**
 * preStop hooks in the process kubelet: run on pod deletion before SIGTERM (exec with the pod's
 * environment, cwd and rewritten paths; httpGet to the pod IP), their time counted against
 * `terminationGracePeriodSeconds`, then SIGTERM and SIGKILL at the deadline.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { waitFor } from './helpers/poll.js';
import { processAlive } from './helpers/ports.js';
import { fixturePath, kubeletSuite } from './testing/kubelet-suite.js';
import { manifests, nodePod, podserverContainer, readyz } from './testing/manifests.js';

const HOOK = fixturePath('hook');

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
  /** When each pod got its deletionTimestamp and when it was gone (ms), seen in the store. */
  const deletions = new Map<string, { marked?: number; gone?: number }>();
  const suite = kubeletSuite({
    tmpPrefix: 'cartero-prestop-test-',
    beforeKubelet: (server) =>
      server.store.subscribe((e) => {
        if (e.key !== '/pods') return;
        const name = e.object.metadata.name ?? '';
        const d = deletions.get(name) ?? {};
        if (e.type === 'MODIFIED' && e.object.metadata.deletionTimestamp) d.marked ??= Date.now();
        if (e.type === 'DELETED') d.gone = Date.now();
        deletions.set(name, d);
      }),
    stopGraceSeconds: 5,
  });
  const { apply, ready } = suite;
  /** Deletes a pod as kubectl does (waiting until it is gone); ms from deletionTimestamp to gone. */
  const timedDelete = async (name: string) => {
    await suite.k('delete', 'pod', name, '--wait=true', '--timeout=60s');
    const d = deletions.get(name);
    assert.ok(d?.marked && d.gone, `deletion of ${name} seen`);
    return d.gone - d.marked;
  };

  /**
   * A podserver pod that appends its events to `<dir>/<name>.events` (`file` in the result), with
   * `preStop` as its hook: applied, Ready, then deleted. Its pod folder and pid while it ran, how long
   * its deletion took and the events seen.
   */
  const runThenDelete = async (
    name: string,
    o: {
      grace: number;
      preStop: (file: string) => Record<string, unknown>;
      ignoreSigterm?: boolean;
      /** More of the container (ports, volumeMounts) and of the pod spec (volumes). */
      container?: Record<string, unknown>;
      spec?: Record<string, unknown>;
      /** The readiness probe's port (default 8080). */
      probePort?: number | string;
    },
  ) => {
    const file = path.join(suite.dir, `${name}.events`);
    const args = ['--events', file, ...(o.ignoreSigterm ? ['--ignore-sigterm'] : [])];
    await apply(
      manifests(
        nodePod(name, {
          terminationGracePeriodSeconds: o.grace,
          containers: [
            podserverContainer(8080, args, {
              ...o.container,
              readinessProbe: readyz(o.probePort ?? 8080, 0.2),
              lifecycle: { preStop: o.preStop(file) },
            }),
          ],
          ...o.spec,
        }),
      ),
    );
    await waitFor(() => ready(name), { what: `${name} Ready` });
    const { dir, pid } = suite.kubelet.pods().find((p) => p.name === name)!;
    const took = await timedDelete(name);
    return { file, dir, pid: pid!, took, events: await events(file) };
  };
  const hookCommand = (...args: string[]) => ({ exec: { command: [process.execPath, HOOK, ...args] } });

  it('runs an exec hook with the pod environment, cwd and rewritten paths before SIGTERM', async () => {
    await apply(
      'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hook-config}\ndata: {greeting: "bye now"}\n',
    );
    const {
      dir: podDir,
      took,
      events: ev,
    } = await runThenDelete('exec-hook', {
      grace: 10,
      preStop: (file) => hookCommand('--record', file, '--file', '/etc/hook/greeting'),
      container: { volumeMounts: [{ name: 'c', mountPath: '/etc/hook' }] },
      spec: { volumes: [{ name: 'c', configMap: { name: 'hook-config' } }] },
    });
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
    const { events: ev } = await runThenDelete('http-hook', {
      grace: 10,
      preStop: () => ({ httpGet: { path: '/prestop', port: 'http' } }),
      container: { ports: [{ name: 'http', containerPort: 8080 }] },
      probePort: 'http',
    });
    assert.deepEqual(
      ev.map((e) => e.what),
      ['start', 'prestop', 'sigterm'],
    );
    assert.ok(ev.every((e) => e.pid === ev[0].pid));
  });

  // Hooks still running when the grace period ends; a pod that ignores SIGTERM. Both deletions take 4 s.
  const overruns = [
    {
      title: "counts the hook's time against the grace period (SIGKILL at the deadline)",
      name: 'slow-hook',
      grace: 4,
      preStop: () => ({ httpGet: { path: '/prestop?ms=1500', port: 8080 } }),
      hookEvent: 'prestop',
      sigtermAfterMs: 1_400,
      sigtermWhen: 'SIGTERM once the hook answered',
      // 4 s in all (hook 1.5 s + the rest of the grace period), not 1.5 + 4 s.
      killed: async (pod: { pid: number }) => assert.ok(!processAlive(pod.pid), 'SIGKILLed at the deadline'),
    },
    {
      title: 'stops waiting for a hook at the deadline, kills it, and still gives SIGTERM a short window',
      name: 'stuck-hook',
      grace: 2,
      preStop: (file: string) => hookCommand('--record', file, '--sleep', '60000'),
      hookEvent: 'hook',
      sigtermAfterMs: 1_500,
      sigtermWhen: 'SIGTERM only at the end of the grace period',
      // 2 s grace used up by the hook, then the kubelet's minimum 2 s for SIGTERM before SIGKILL.
      killed: (_pod: unknown, hook: Event) =>
        waitFor(() => !processAlive(hook.pid), { what: 'the hook process killed' }),
    },
  ];
  for (const c of overruns)
    it(c.title, async () => {
      const r = await runThenDelete(c.name, { grace: c.grace, ignoreSigterm: true, preStop: c.preStop });
      assert.deepEqual(
        r.events.map((e) => e.what),
        ['start', c.hookEvent, 'sigterm'],
      );
      const [, hook, sigterm] = r.events;
      assert.ok(sigterm.at - hook.at >= c.sigtermAfterMs, c.sigtermWhen);
      assert.ok(r.took >= 3_900 && r.took < 5_000, `deletion took ${r.took} ms`);
      await c.killed(r, hook);
    });
});
