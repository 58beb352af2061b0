/**
 * Readiness and liveness probes (httpGet, tcpSocket; exec probes pass): readiness sets the pod's
 * Ready condition, a failed liveness probe kills the container (preStop included) for its restart
 * policy to bring back.
 */
import type { ChildProcess } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { killContainer } from './lifecycle.js';
import { writePodStatus } from './status.js';
import { containerPort, isRunning, type Probe, type Runtime, type RuntimeContext } from './types.js';

function probeOnce(rt: Runtime, probe: Probe): Promise<boolean> {
  const portOf = (p: number | string) => containerPort(rt, p);
  const timeoutMs = (probe.timeoutSeconds ?? 1) * 1000;
  return new Promise<boolean>((resolve) => {
    if (probe.httpGet) {
      const req = http.get(
        {
          host: probe.httpGet.host ?? rt.ip,
          port: portOf(probe.httpGet.port),
          path: probe.httpGet.path ?? '/',
          agent: false,
          timeout: timeoutMs,
        },
        (res) => {
          res.resume();
          resolve((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 400);
        },
      );
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(false));
    } else if (probe.tcpSocket) {
      const sock = net.connect({ host: probe.tcpSocket.host ?? rt.ip, port: portOf(probe.tcpSocket.port) });
      sock.setTimeout(timeoutMs, () => sock.destroy());
      sock.on('connect', () => (sock.destroy(), resolve(true)));
      sock.on('error', () => resolve(false));
      sock.on('close', () => resolve(false));
    } else resolve(true); // exec probes are not supported: treated as passing
  });
}

/** Runs `fn` every `periodSeconds` (after `initialDelaySeconds`) until the pod terminates. */
function every(ctx: RuntimeContext, rt: Runtime, probe: Probe, fn: () => Promise<void>): void {
  const periodMs = Math.max(100, (probe.periodSeconds ?? 10) * 1000);
  const tick = async () => {
    if (rt.terminating || ctx.stopped) return;
    await fn().catch((err: unknown) => ctx.onError(err));
    if (rt.terminating || ctx.stopped) return;
    const timer = setTimeout(() => {
      rt.timers.delete(timer);
      void tick();
    }, periodMs);
    rt.timers.add(timer);
  };
  const first = setTimeout(
    () => {
      rt.timers.delete(first);
      void tick();
    },
    (probe.initialDelaySeconds ?? 0) * 1000,
  );
  rt.timers.add(first);
}

export function startProbes(ctx: RuntimeContext, rt: Runtime): void {
  const readiness = rt.container.readinessProbe;
  if (readiness)
    every(ctx, rt, readiness, async () => {
      const child = rt.child;
      if (!isRunning(child)) return;
      const ok = await probeOnce(rt, readiness);
      if (rt.terminating || ctx.stopped || rt.child !== child) return;
      if (ok && isRunning(child)) {
        rt.failures = 0;
        if (++rt.successes >= (readiness.successThreshold ?? 1)) rt.ready = true;
      } else {
        rt.successes = 0;
        if (++rt.failures >= (readiness.failureThreshold ?? 3) || !isRunning(child)) rt.ready = false;
      }
      ctx.guard(() => writePodStatus(ctx, rt));
    });
  const liveness = rt.container.livenessProbe;
  let probed: ChildProcess | undefined;
  let failures = 0;
  if (liveness)
    every(ctx, rt, liveness, async () => {
      const child = rt.child;
      if (!isRunning(child) || !child.pid) return;
      if (child !== probed) {
        probed = child;
        failures = 0;
      }
      if (Date.now() - rt.startMs < (liveness.initialDelaySeconds ?? 0) * 1000) return;
      const ok = await probeOnce(rt, liveness);
      if (rt.terminating || ctx.stopped || rt.child !== child || !isRunning(child)) return;
      if (ok) failures = 0;
      else if (++failures >= (liveness.failureThreshold ?? 3)) {
        // Like a kubelet: kill the container (preStop included); the restart policy brings it back.
        failures = 0;
        void killContainer(ctx, rt, child, rt.graceSeconds, true);
      }
    });
}
