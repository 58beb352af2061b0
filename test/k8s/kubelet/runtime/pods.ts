/**
 * The pod runtime: the pods bound to this node become processes. A pod gets an address, a directory
 * with its volumes and ServiceAccount credentials, and its first container's process (image ->
 * local command, `$(VAR)` expansion, mount paths rewritten), restarted with back-off under its
 * restart policy; a deleted pod is terminated (`lifecycle.ts`) before its finalizer goes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { nowTimestamp, type KObject } from '../../apiserver/objects.js';
import type { PodLogSource } from '../../apiserver/logs.js';
import { restartDelay, restarts } from '../decide.js';
import { KUBELET_FINALIZER } from '../shared.js';
import { writeServiceAccount } from './credentials.js';
import { buildEnv, expand } from './env.js';
import { killGroup, terminate } from './lifecycle.js';
import { startProbes } from './probes.js';
import { addFinalizer, currentPod, dropFinalizer, writePodStatus } from './status.js';
import type { ImageCommand, PodSpec, Runtime, RuntimeContext } from './types.js';
import { queueVolumeRefresh, rewritePaths, writeVolumes } from './volumes.js';

const mine = (ctx: RuntimeContext, pod: KObject) =>
  (pod.spec as PodSpec | undefined)?.nodeName === ctx.nodeName;

/** Starts runtimes for new pods of this node and terminates those of deleted (or vanished) pods. */
export function syncPods(ctx: RuntimeContext): void {
  const seen = new Set<string>();
  for (const pod of ctx.store.list(ctx.kinds.pod).items) {
    if (!mine(ctx, pod)) continue;
    const uid = pod.metadata.uid ?? '';
    seen.add(uid);
    const rt = ctx.runtimes.get(uid);
    if (pod.metadata.deletionTimestamp) {
      if (rt) void terminate(ctx, rt, undefined, true);
      else dropFinalizer(ctx, pod);
    } else if (!rt) {
      // Pods made without a controller (kubectl run/apply) get the finalizer too, so their
      // deletion waits for the process (preStop, SIGTERM, SIGKILL) as a graceful deletion does.
      if (!pod.metadata.finalizers?.includes(KUBELET_FINALIZER)) addFinalizer(ctx, pod);
      start(ctx, pod);
    }
  }
  for (const rt of ctx.runtimes.values()) if (!seen.has(rt.uid)) void terminate(ctx, rt);
}

function start(ctx: RuntimeContext, pod: KObject): void {
  const spec = pod.spec as PodSpec;
  const container = spec.containers?.[0] ?? {};
  const uid = pod.metadata.uid ?? '';
  const name = pod.metadata.name ?? '';
  const namespace = pod.metadata.namespace ?? '';
  let ip = ctx.allocate();
  const used = new Set([...ctx.runtimes.values()].map((r) => r.ip));
  for (let i = 0; i < 254 && used.has(ip); i++) ip = ctx.allocate();
  const dir = path.join(ctx.dir, `${namespace}_${name}_${uid.slice(0, 8)}`);
  const rt: Runtime = {
    uid,
    namespace,
    name,
    ip,
    dir,
    log: path.join(dir, `${container.name ?? 'main'}.log`),
    container,
    restartCount: 0,
    ready: false,
    successes: 0,
    failures: 0,
    terminating: false,
    graceSeconds: spec.terminationGracePeriodSeconds ?? 30,
    restartPolicy: spec.restartPolicy ?? 'Always',
    timers: new Set(),
    exited: Promise.resolve(),
    startMs: 0,
    volumeFiles: new Map(),
    volumesWritten: false,
    volumeUpdates: Promise.resolve(),
    implicitMounts: [],
  };
  ctx.runtimes.set(uid, rt);
  const image = container.image ? ctx.images[container.image] : undefined;
  if (!image) {
    rt.waiting = { reason: 'ErrImagePull', message: `no local command for image ${container.image ?? ''}` };
    writePodStatus(ctx, rt);
    return;
  }
  // Prepares volumes and starts the process; retried every second while that fails (a missing
  // ConfigMap, say), as a kubelet does.
  const prepare = async (current: KObject) => {
    await rm(path.join(dir, 'mounts'), { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    await writeVolumes(ctx, current, rt);
    await writeServiceAccount(ctx, current, rt);
    rt.volumesWritten = true;
    // A ConfigMap or Secret change that came while the volumes were first written was skipped by
    // refreshVolumes: write them once more from the store's current data.
    queueVolumeRefresh(ctx, current, rt);
    if (rt.terminating || ctx.stopped) return;
    spawnProcess(ctx, current, rt, image);
    startProbes(ctx, rt);
  };
  const attempt = (current: KObject) =>
    prepare(current).catch((err: unknown) => {
      if (rt.terminating || ctx.stopped) return;
      rt.waiting = { reason: 'CreateContainerConfigError', message: String(err) };
      ctx.guard(() => writePodStatus(ctx, rt));
      const timer = setTimeout(() => {
        rt.timers.delete(timer);
        const latest = currentPod(ctx, rt);
        if (latest && !rt.terminating && !ctx.stopped) void attempt(latest);
      }, 1_000);
      rt.timers.add(timer);
    });
  void attempt(pod);
}

function spawnProcess(ctx: RuntimeContext, pod: KObject, rt: Runtime, image: ImageCommand): void {
  if (rt.terminating || ctx.stopped) return;
  const env = buildEnv(ctx, pod, rt);
  const c = rt.container;
  const fix = (s: string) => rewritePaths(expand(s, env), rt);
  const argv = c.command?.length
    ? [...c.command, ...(c.args ?? [])].map(fix)
    : [image.command, ...(image.args ?? []), ...(c.args ?? []).map(fix)];
  for (const [k, v] of Object.entries(env)) env[k] = rewritePaths(v, rt);
  rt.env = env;
  const fd = openSync(rt.log, 'a');
  let child: ChildProcess;
  try {
    child = spawn(argv[0], argv.slice(1), { cwd: rt.dir, env, stdio: ['ignore', fd, fd], detached: true });
  } finally {
    closeSync(fd);
  }
  rt.child = child;
  rt.pid = child.pid;
  if (child.pid) ctx.pids.add(child.pid);
  rt.startMs = Date.now();
  const startedAt = nowTimestamp();
  let resolveExit!: () => void;
  rt.exited = new Promise<void>((resolve) => (resolveExit = resolve));
  child.on('error', (err) => {
    rt.waiting = { reason: 'RunContainerError', message: err.message };
  });
  child.on('spawn', () => {
    rt.startedAt = startedAt;
    rt.waiting = undefined;
    if (!c.readinessProbe) rt.ready = true;
    ctx.guard(() => writePodStatus(ctx, rt));
  });
  child.on('close', (code, signal) => {
    if (child.pid) killGroup(child.pid); // leftovers of the process group
    rt.ready = false;
    rt.successes = 0;
    rt.lastTerminated = {
      exitCode: code ?? 128 + (signal ? 9 : 0),
      ...(signal ? { signal } : {}),
      startedAt,
      finishedAt: nowTimestamp(),
    };
    rt.child = undefined;
    resolveExit();
    if (rt.terminating || ctx.stopped) return;
    if (!restarts(rt.restartPolicy, code)) {
      rt.waiting = { reason: code === 0 ? 'Completed' : 'Error' };
      ctx.guard(() => writePodStatus(ctx, rt));
      return;
    }
    const delay = restartDelay(
      Date.now() - rt.startMs,
      rt.restartCount,
      ctx.backoff.initialMs,
      ctx.backoff.maxMs,
    );
    rt.restartCount++;
    rt.waiting = { reason: 'CrashLoopBackOff', message: `back-off ${delay}ms restarting failed container` };
    ctx.guard(() => writePodStatus(ctx, rt));
    const timer = setTimeout(() => {
      rt.timers.delete(timer);
      const current = currentPod(ctx, rt);
      if (current && !rt.terminating) ctx.guard(() => spawnProcess(ctx, current, rt, image));
    }, delay);
    rt.timers.add(timer);
  });
}

/** `kubectl logs`: the API server reads the log files named here (`<podDir>/<container>.log`). */
export function podLogSource(ctx: RuntimeContext): PodLogSource {
  return {
    logFile: (pod, container) => {
      const rt = ctx.runtimes.get(pod.uid);
      return rt && path.join(rt.dir, `${container}.log`);
    },
    running: (pod, container) => {
      const rt = ctx.runtimes.get(pod.uid);
      return rt?.child !== undefined && (rt.container.name ?? 'main') === container;
    },
  };
}
