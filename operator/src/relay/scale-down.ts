/**
 * Decide: how many pods the StatefulSet may have this reconcile. Scale-down lowers it only once the pods
 * that go have drained their queues into the ones that stay; scale-up starts a pod only once every IpPool
 * it sends from has given it an address. Pure functions; the controller drains and applies.
 */
import type { IpPool } from '../api/types.js';
import { podNames } from '../constants.js';
import type { Allocation } from './config-render.js';
import type { EventIntent } from '../events.js';
import type { RateLimitUse } from './admin-client.js';
import type { PodFigures } from './figures.js';

export interface ScaleInput {
  /** The SmtpRelay's name (its pods are `<name>-<ordinal>`). */
  name: string;
  /** spec.replicas (defaulted). */
  desired: number;
  /** The StatefulSet's replicas; undefined while there is no StatefulSet. */
  current: number | undefined;
  /** The IpPools the relay sends from, and their allocations to its pods. */
  pools: IpPool[];
  allocations: Allocation[];
}

export interface ScalePlan {
  /** The StatefulSet's replicas now (the desired count when there is none yet). */
  current: number;
  /** Pods that go: they drain before the StatefulSet is lowered. */
  going: string[];
  /** The replicas to apply once `going` (if any) has drained. */
  replicas: number;
  /** Why a scale-up stops short of the desired count. */
  waiting?: string;
}

export function planScale(i: ScaleInput): ScalePlan {
  const current = i.current ?? i.desired;
  if (i.current !== undefined && i.desired < current)
    return { current, going: podNames(i.name, current).slice(i.desired), replicas: i.desired };
  // HostNetwork pools allocate by node, after scheduling, so they cannot hold a pod back
  for (let ord = i.current ?? 0; ord < i.desired; ord++) {
    const pod = `${i.name}-${ord}`;
    const missing = i.pools.filter(
      (p) =>
        p.spec.mode !== 'HostNetwork' &&
        !i.allocations.some((a) => a.pool === p.metadata.name && a.pod === pod),
    );
    if (missing.length)
      return {
        current,
        going: [],
        replicas: ord,
        waiting: `waiting for IpPool ${missing.map((p) => p.metadata.name).join(', ')} to allocate an address to ${pod}`,
      };
  }
  return { current, going: [], replicas: i.desired };
}

/** Where a drain of the pods that go stands: done when every one has an empty queue. */
export interface DrainProgress {
  done: boolean;
  message: string;
}

/**
 * The drain progress from each going pod's pending text (none when it finished): `target` is
 * spec.replicas, `peers` the ready pods that stay (the drain's destinations).
 */
export function drainProgress(target: number, pending: string[], peers: number): DrainProgress {
  if (pending.length === 0) return { done: true, message: '' };
  const into = peers ? `into ${peers} remaining relay(s)` : 'by delivering their queues';
  return { done: false, message: `scaling down to ${target}: draining ${pending.join(', ')} ${into}` };
}

/** A scale-down's step this reconcile: the replicas to apply, the drain status, the event. */
export function scaleDownStep(
  plan: ScalePlan,
  progress: DrainProgress,
): { replicas: number; drain?: { message: string; pods: string[] }; event: EventIntent } {
  if (progress.done)
    return {
      replicas: plan.replicas,
      event: {
        type: 'Normal',
        reason: 'ScaledDown',
        message: `drained ${plan.going.join(', ')}; scaling to ${plan.replicas}`,
      },
    };
  return {
    replicas: plan.current,
    drain: { message: progress.message, pods: plan.going },
    event: { type: 'Normal', reason: 'Draining', message: progress.message },
  };
}

/**
 * What a departing pod used this hour and day, shared out over the `survivors` (rounded up), so the
 * fleet limit holds after it goes. Windows that have reset and per-second/minute limits are not carried.
 */
export function rateCarry(
  use: Record<string, RateLimitUse[]>,
  survivors: number,
  now: number,
): { tenant: string; unit: 'h' | 'd'; each: number }[] {
  if (!survivors) return [];
  const out: { tenant: string; unit: 'h' | 'd'; each: number }[] = [];
  for (const [tenant, limits] of Object.entries(use))
    for (const l of limits) {
      if ((l.unit !== 'h' && l.unit !== 'd') || l.used === 0 || l.resetsAt <= now) continue;
      out.push({ tenant, unit: l.unit, each: Math.ceil(l.used / survivors) });
    }
  return out;
}

/**
 * Pods the fleet keeps (ordinal below `replicas`) that drained to the end: their drain state lives on
 * their volume, and with an empty queue they are restarted on a new one.
 */
export function drainedSurvivors(figures: PodFigures[], replicas: number): string[] {
  return figures
    .filter((f) => {
      const ordinal = Number(/-(\d+)$/.exec(f.name)?.[1] ?? -1);
      return f.draining && f.queue === 0 && ordinal >= 0 && ordinal < replicas;
    })
    .map((f) => f.name);
}
