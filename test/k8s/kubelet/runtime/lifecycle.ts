/**
 * Stopping containers as a kubelet does: the preStop hook (exec, httpGet, sleep), SIGTERM, SIGKILL
 * at the end of the grace period; and the end of a pod's runtime (pod dir and finalizer removed).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { appendFile, rm } from 'node:fs/promises';
import http from 'node:http';
import { currentPod, dropFinalizer } from './status.js';
import {
  containerPort,
  isRunning,
  type LifecycleHandler,
  type Runtime,
  type RuntimeContext,
} from './types.js';
import { rewritePaths } from './volumes.js';

/** The kubelet's minimum shutdown window after a preStop hook (as kubelet's minimumGracePeriodInSeconds). */
const MIN_GRACE_AFTER_HOOK_MS = 2_000;

/** SIGKILLs what is left of a process group (never a lone pid: it may have been reused). */
export function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // none left
  }
}

/** Signals a pod's process group (its process leads one: spawned detached). */
function signalOf(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig);
  } catch {
    // gone
  }
}

/** Appends a line to the pod's container log (what a kubelet would report as an event). */
function note(rt: Runtime, line: string): void {
  void appendFile(rt.log, `[kubelet] ${line}\n`).catch(() => undefined);
}

/**
 * Runs a container's preStop hook until it finishes or `deadline` (ms) passes: exec (the command
 * with the process's environment and cwd, mount paths rewritten as for commands; no `$(VAR)`
 * expansion, as in Kubernetes), httpGet (GET to the pod IP unless `host` is given) or sleep.
 * Failures are noted in the container log; termination goes on either way.
 */
async function runPreStop(
  ctx: RuntimeContext,
  rt: Runtime,
  hook: LifecycleHandler,
  deadline: number,
): Promise<void> {
  const left = () => Math.max(0, deadline - Date.now());
  if (hook.exec?.command?.length) {
    const argv = hook.exec.command.map((a) => rewritePaths(a, rt));
    const fd = openSync(rt.log, 'a');
    let child: ChildProcess;
    try {
      child = spawn(argv[0], argv.slice(1), {
        cwd: rt.dir,
        env: rt.env ?? {},
        stdio: ['ignore', fd, fd],
        detached: true,
      });
    } finally {
      closeSync(fd);
    }
    if (child.pid) ctx.pids.add(child.pid);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        note(rt, `preStop hook ${JSON.stringify(argv)} still running at the end of the grace period`);
        if (child.pid) killGroup(child.pid);
        resolve();
      }, left());
      child.on('error', (err) => {
        clearTimeout(timer);
        note(rt, `preStop hook ${JSON.stringify(argv)} failed: ${err.message}`);
        resolve();
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        if (child.pid) killGroup(child.pid);
        if (code !== 0) note(rt, `preStop hook ${JSON.stringify(argv)} exited with ${code ?? signal}`);
        resolve();
      });
    });
  } else if (hook.httpGet) {
    const get = hook.httpGet;
    await new Promise<void>((resolve) => {
      const req = http.get(
        {
          host: get.host ?? rt.ip,
          port: containerPort(rt, get.port),
          path: get.path ?? '/',
          headers: Object.fromEntries((get.httpHeaders ?? []).map((h) => [h.name, h.value])),
          agent: false,
        },
        (res) => {
          if ((res.statusCode ?? 0) >= 400)
            note(rt, `preStop hook GET ${get.path ?? '/'}: ${res.statusCode}`);
          res.resume();
        },
      );
      const timer = setTimeout(() => req.destroy(new Error('timed out')), left());
      req.on('error', (err) => note(rt, `preStop hook GET ${get.path ?? '/'} failed: ${err.message}`));
      req.on('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  } else if (hook.sleep)
    await new Promise<void>((resolve) => setTimeout(resolve, Math.min(hook.sleep!.seconds * 1000, left())));
}

/**
 * Stops a container's process as a kubelet does: the preStop hook (when `hook`), then SIGTERM, then
 * SIGKILL at the deadline: `graceSeconds` after the start, the hook's time included, but at least
 * 2 s after a hook (the kubelet's minimum shutdown window).
 */
export function killContainer(
  ctx: RuntimeContext,
  rt: Runtime,
  child: ChildProcess,
  graceSeconds: number,
  hook: boolean,
): Promise<void> {
  if (rt.killing?.child === child) return rt.killing.done;
  const exited = rt.child === child ? rt.exited : Promise.resolve();
  const done = (async () => {
    const deadline = Date.now() + graceSeconds * 1000;
    let killAt = deadline;
    const preStop = rt.container.lifecycle?.preStop;
    if (hook && preStop && isRunning(child)) {
      await runPreStop(ctx, rt, preStop, deadline);
      killAt = Math.max(deadline, Date.now() + MIN_GRACE_AFTER_HOOK_MS);
    }
    const pid = child.pid;
    if (!pid || !isRunning(child)) return;
    signalOf(pid, 'SIGTERM');
    const kill = setTimeout(() => signalOf(pid, 'SIGKILL'), Math.max(0, killAt - Date.now()));
    await exited;
    clearTimeout(kill);
  })();
  rt.killing = { child, done };
  return done;
}

/**
 * preStop (when `hooks`), SIGTERM, SIGKILL after the grace period; then removes the pod dir and the
 * finalizer.
 */
export function terminate(
  ctx: RuntimeContext,
  rt: Runtime,
  graceSeconds?: number,
  hooks = false,
): Promise<void> {
  if (rt.done) return rt.done;
  rt.terminating = true;
  rt.ready = false;
  for (const t of rt.timers) clearTimeout(t);
  rt.timers.clear();
  rt.done = (async () => {
    const child = rt.child;
    if (child?.pid && isRunning(child))
      await killContainer(ctx, rt, child, graceSeconds ?? rt.graceSeconds, hooks);
    await rm(rt.dir, { recursive: true, force: true, maxRetries: 3 }).catch(() => undefined);
    ctx.runtimes.delete(rt.uid);
    const pod = currentPod(ctx, rt);
    if (pod?.metadata.deletionTimestamp || (pod && ctx.stopped)) ctx.guard(() => dropFinalizer(ctx, pod));
    if (!ctx.stopped) ctx.schedule();
  })();
  return rt.done;
}
