/**
 * Apply: the admin API calls of a scale-down (drain the pods that go into the ones that stay, carry
 * their rate-limit use over) and the restart of a pod the fleet keeps that drained to the end. The
 * decisions are in scale-down.ts.
 */
import type { CoreV1Api } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { SmtpRelay } from '../api/types.js';
import { DEFAULT_LISTENERS, containerPortOf } from '../constants.js';
import { isReady, type Pod } from '../cache.js';
import { errorText, ignoreNotFound } from '../errors.js';
import { drainFinished, drainPending, type RelayAdmin } from './admin-client.js';
import { drainProgress, rateCarry, type DrainProgress } from './scale-down.js';

type Admin = (ip: string) => RelayAdmin;

/** Drains `going` into the pods that stay (starting drains not started yet) and reports the progress. */
export async function drainPods(
  relay: SmtpRelay,
  pods: Pod[],
  going: string[],
  admin: Admin,
  log: Logger,
): Promise<DrainProgress> {
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
  return drainProgress(relay.spec.replicas ?? 0, pending, peers.length);
}

/**
 * Adds what the departing pods used this hour and day to the survivors, so the fleet limit holds.
 * Returns the pods whose use could not be carried (with why): the caller keeps them until it can, since
 * their counts go with them. A retry after a partial carry counts some use twice: the safe side.
 */
export async function carryRateUse(
  pods: Pod[],
  going: string[],
  admin: Admin,
  log: Logger,
  now: () => Date,
): Promise<string[]> {
  const survivors = pods.filter((p) => !going.includes(p.metadata.name) && p.status?.podIP && isReady(p));
  if (!survivors.length) return [];
  const failed: string[] = [];
  for (const podName of going) {
    const pod = pods.find((p) => p.metadata.name === podName);
    if (!pod?.status?.podIP) continue;
    try {
      const use = await admin(pod.status.podIP).rateLimits();
      for (const c of rateCarry(use.tenants, survivors.length, now().getTime()))
        for (const s of survivors) await admin(s.status!.podIP!).addRateUse(c.tenant, c.unit, c.each);
    } catch (e) {
      log.warn({ err: errorText(e), pod: podName }, 'drain.ratelimits.failed');
      failed.push(`${podName} (carrying its rate-limit use: ${errorText(e)})`);
    }
  }
  return failed;
}

/**
 * A pod the fleet keeps but that drained to the end (a scale-down reverted half-way, or a drain started
 * by hand) stays in drain mode for good: its drain state lives on its volume. With its queue empty,
 * nothing is lost by starting it over: delete its claim and the pod, and the StatefulSet makes both anew.
 */
export async function restartDrainedPod(
  core: CoreV1Api,
  namespace: string,
  pod: string,
  log: Logger,
): Promise<void> {
  const claim = `spool-${pod}`;
  log.warn({ pod, claim }, 'drained.pod.restarted');
  await ignoreNotFound(core.deleteNamespacedPersistentVolumeClaim({ namespace, name: claim }));
  await ignoreNotFound(core.deleteNamespacedPod({ namespace, name: pod }));
}
