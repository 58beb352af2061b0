/**
 * Decide: an SmtpRelay's status from what was observed and done this reconcile, as a pure function. It
 * returns the events the status calls for (a Warning per problem, Ready when the fleet is) instead of
 * writing them: the controller writes them after the status.
 */
import type { SmtpRelay, SmtpRelayStatus } from '../api/types.js';
import { selectorString } from '../constants.js';
import type { Problem } from '../conditions.js';
import type { StatefulSet } from '../cache.js';
import { setCondition } from '../conditions.js';
import type { EventIntent } from '../events.js';
import type { TenantState } from './admin-client.js';
import type { PodFigures } from './figures.js';

export interface StatusInputs {
  sts: StatefulSet | undefined;
  figures: PodFigures[];
  /** The revision of the config rendered this reconcile. */
  revision: string;
  problems: Problem[];
  applyError?: string;
  drain?: { message: string; pods: string[] };
  /** Why a scale-up waits (an IpPool has no address for the next pod yet). */
  waiting?: string;
  desired: number;
  now: Date;
}

export function relayStatus(
  relay: SmtpRelay,
  s: StatusInputs,
): { status: SmtpRelayStatus; events: EventIntent[] } {
  const gen = relay.metadata.generation;
  const old = relay.status ?? {};
  const events: EventIntent[] = [];
  const readyPods = s.figures.filter((f) => f.ready);
  const current = readyPods.filter((f) => f.revision === s.revision);
  const stsStatus = s.sts?.status ?? {};
  const stsCurrent =
    s.sts && (stsStatus.observedGeneration as number) >= (s.sts.metadata.generation as number);
  const stsUpdated = stsCurrent && stsStatus.updateRevision === stsStatus.currentRevision;
  let conditions = old.conditions;
  const set = (type: string, ok: boolean, reason: string, message: string) => {
    conditions = setCondition(
      conditions,
      { type, status: ok ? 'True' : 'False', reason, message },
      gen,
      s.now,
    );
  };
  const degraded = s.applyError ?? s.problems.map((p) => p.message).join('; ');
  const degradedReason = s.applyError ? 'ApplyFailed' : (s.problems[0]?.reason ?? 'AsExpected');
  set(
    'Reconciled',
    !s.applyError,
    s.applyError ? 'ApplyFailed' : 'Applied',
    s.applyError ?? 'every owned object matches the spec',
  );
  set('Degraded', !!degraded, degradedReason, degraded);
  for (const p of s.problems) events.push({ type: 'Warning', reason: p.reason, message: p.message });
  const stale = readyPods.filter((f) => f.revision !== s.revision).map((f) => f.name);
  let readyReason = 'Ready';
  let readyMsg = `${current.length} of ${s.desired} relays ready with the current config`;
  const ok =
    current.length >= s.desired && readyPods.length >= s.desired && !s.drain && !s.applyError && !!stsUpdated;
  if (!ok) {
    if (s.applyError) readyReason = 'ApplyFailed';
    else if (s.drain) readyReason = 'Draining';
    else if (s.waiting) {
      readyReason = 'WaitingForAddresses';
      readyMsg += `; ${s.waiting}`;
    } else if (stale.length) {
      readyReason = 'ConfigPending';
      readyMsg += `; waiting for ${stale.join(', ')} to load config ${s.revision}`;
    } else if (!stsUpdated) readyReason = 'RollingUpdate';
    else readyReason = 'PodsNotReady';
    const errs = s.figures.filter((f) => f.error).map((f) => `${f.name}: ${f.error}`);
    if (errs.length) readyMsg += `; admin API: ${errs.join('; ')}`;
  }
  set('Ready', ok, readyReason, readyMsg);
  set(
    'Progressing',
    !ok,
    s.drain ? 'ScalingDown' : ok ? 'Complete' : readyReason,
    s.drain ? s.drain.message : ok ? 'the fleet matches the spec' : readyMsg,
  );
  // a pod whose relay still indexes its spool does not know its queue: the fleet's figures are unknown
  // then, and status says nothing rather than a number that may read "empty"
  const depthKnown = !s.figures.some((f) => f.recovering);
  const queueDepth = s.figures.reduce((sum, f) => sum + (f.queue ?? 0), 0);
  const tenants = (relay.spec.tenants ?? []).map((t) => {
    const states = s.figures
      .map((f) => f.tenants?.find((x) => x.name === t.name))
      .filter((x): x is TenantState => !!x);
    const worst =
      states.find((x) => x.state === 'paused' && x.by !== 'fleet') ??
      states.find((x) => x.state === 'paused') ??
      states.find((x) => x.state === 'warning');
    const state = worst?.state === 'paused' ? 'Paused' : worst?.state === 'warning' ? 'Warning' : 'Active';
    return {
      name: t.name,
      state: state as 'Active' | 'Warning' | 'Paused',
      ...(worst?.reason ? { reason: worst.reason } : {}),
      bounceRate: round4(Math.max(0, ...states.map((x) => x.rate))),
      // complaint rate (ADR 018): the fleet's complaints over the fleet's delivered recipients
      ...complaintFigures(states),
      ...(depthKnown
        ? { queueDepth: s.figures.reduce((sum, f) => sum + (f.byTenant?.[t.name] ?? 0), 0) }
        : {}),
    };
  });
  const attempted = s.figures.flatMap((f) => f.tenants ?? []).reduce((sum, t) => sum + t.attempted, 0);
  const hard = s.figures.flatMap((f) => f.tenants ?? []).reduce((sum, t) => sum + t.hard, 0);
  const bounceRate = attempted ? round4(hard / attempted) : 0;
  const status: SmtpRelayStatus = {
    observedGeneration: gen,
    replicas: s.figures.length,
    readyReplicas: readyPods.length,
    readyText: `${readyPods.length}/${s.desired}`,
    selector: selectorString(relay.metadata.name!),
    configHash: s.revision,
    ...(depthKnown ? { queueDepth } : {}),
    bounceRate,
    bounceRatePercent: `${(bounceRate * 100).toFixed(1)}%`,
    conditions,
    tenants,
    pods: s.figures.map((f) => ({
      name: f.name,
      ready: f.ready,
      ...(f.revision ? { configHash: f.revision } : {}),
      ...(f.queue !== undefined ? { queueDepth: f.queue } : {}),
      ...(f.draining ? { draining: true } : {}),
    })),
    ...(s.drain
      ? {
          drain: {
            targetReplicas: s.desired,
            pods: s.drain.pods,
            since: old.drain?.since ?? s.now.toISOString().replace(/\.\d{3}Z$/, 'Z'),
          },
        }
      : {}),
  };
  if (ok) events.push({ type: 'Normal', reason: 'Ready', message: `${readyPods.length} relays ready` });
  return { status, events };
}

/** The status of an SmtpRelay being deleted while its queues drain: the old one, Progressing Deleting. */
export function deletingStatus(
  relay: SmtpRelay,
  message: string,
  now: Date,
): { status: SmtpRelayStatus; events: EventIntent[] } {
  const status = structuredClone(relay.status ?? {}) as SmtpRelayStatus;
  status.conditions = setCondition(
    status.conditions,
    { type: 'Progressing', status: 'True', reason: 'Deleting', message },
    relay.metadata.generation,
    now,
  );
  return { status, events: [{ type: 'Normal', reason: 'Deleting', message }] };
}

const round4 = (x: number) => Math.round(x * 10000) / 10000;

/** A tenant's complaint figures summed over the relays that report them (relays before ADR 018 do not). */
export function complaintFigures(states: TenantState[]): { complaintRate?: number; complaints?: number } {
  const known = states.filter((x) => x.delivered !== undefined || x.complaints !== undefined);
  if (!known.length) return {};
  const delivered = known.reduce((sum, x) => sum + (x.delivered ?? 0), 0);
  const complaints = known.reduce((sum, x) => sum + (x.complaints ?? 0), 0);
  return { complaintRate: delivered ? Math.round((complaints / delivered) * 1e6) / 1e6 : 0, complaints };
}
