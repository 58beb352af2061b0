/**
 * Applies one attempt's outcomes to a message's delivery state: a pure function, so the engine's rules
 * (retry schedule, expiry at maxAge, the one delay warning, retry overrides, hand-off) are tested without
 * I/O. The engine does what the plan says: DSNs, saveState or remove, metrics, logs.
 */
import type { DeliveryState, Envelope } from '../spool/types.js';
import { scheduleNext, type RetryPolicy } from '../retry.js';
import { dsnRecipientsWanted, type DsnRecipient } from '../dsn.js';
import { isHardBounce, statusFor } from './classify.js';
import type { EngineDeps, Outcome } from './types.js';

export interface OutcomeInput {
  env: Envelope;
  /** The state before the attempt (not modified). */
  state: DeliveryState;
  outcomes: Map<number, Outcome>;
  now: number;
  retry: { policy: RetryPolicy; maxAgeMs: number };
  /** queue.delayWarningAfter; undefined = never warn. */
  delayWarningAfterMs?: number;
  /** False while the engine stops: an attempt that never ran leaves the message as it is. */
  running: boolean;
}

export interface OutcomePlan {
  /** The state to record (a copy). */
  state: DeliveryState;
  /** Recipient indexes by what happened to them in this attempt. */
  delivered: number[];
  handedOff: number[];
  bounced: number[];
  deferred: number[];
  expired: number[];
  /** DSN recipients: failed (bounced or expired, as NOTIFY allows) and delayed (the one delay warning). */
  failed: DsnRecipient[];
  delayed: DsnRecipient[];
  /**
   * `remove`: every recipient is final. A time: save the state and try again then. `unchanged`: nothing
   * was attempted and the engine is stopping; leave the message as it is on disk.
   */
  next: number | 'remove' | 'unchanged';
}

export function applyOutcomes(input: OutcomeInput): OutcomePlan {
  const { env, outcomes, now } = input;
  const state: DeliveryState = structuredClone(input.state);
  const plan: OutcomePlan = {
    state,
    delivered: [],
    handedOff: [],
    bounced: [],
    deferred: [],
    expired: [],
    failed: [],
    delayed: [],
    next: 'remove',
  };
  if (outcomes.size) state.attempts++;
  for (const [i, o] of outcomes) {
    const r = state.rcpts[i];
    const rc = env.rcpts[i];
    r.attempts++;
    r.lastAttemptAt = now;
    r.lastReply = o.reply;
    r.lastStatus = o.status;
    if (o.remoteMta) r.remoteMta = o.remoteMta;
    if (o.result === 'delivered') {
      r.status = 'delivered';
      (o.route === 'handoff' ? plan.handedOff : plan.delivered).push(i);
    } else if (o.result === 'bounced') {
      r.status = 'bounced';
      plan.bounced.push(i);
      plan.failed.push(
        ...dsnLine(rc, 'failed', {
          status: o.status,
          diagnostic: o.reply,
          remoteMta: o.remoteMta,
          lastAttemptAt: new Date(now),
        }),
      );
    } else plan.deferred.push(i);
  }
  const pending = state.rcpts.map((r, i) => (r.status === 'pending' ? i : -1)).filter((i) => i >= 0);
  if (!pending.length) return plan;
  if (!input.running && outcomes.size === 0) {
    plan.next = 'unchanged';
    return plan;
  }
  const { policy, maxAgeMs } = input.retry;
  const decision = scheduleNext({
    attempts: Math.max(1, state.attempts),
    arrivedAt: env.arrivedAt,
    now,
    policy,
    maxAgeMs,
  });
  if (decision.kind === 'expire') {
    // this was the last attempt: what is still pending bounces as expired (RFC 3463 4.4.7)
    const status = statusFor({ expired: true });
    const hours = Math.round((now - env.arrivedAt) / 3_600_000);
    for (const i of pending) {
      const r = state.rcpts[i];
      const rc = env.rcpts[i];
      r.status = 'expired';
      plan.expired.push(i);
      plan.failed.push(
        ...dsnLine(rc, 'failed', {
          status,
          diagnostic: `delivery time expired after ${hours}h; last error: ${r.lastReply ?? 'none'}`,
          remoteMta: r.remoteMta,
          lastAttemptAt: r.lastAttemptAt ? new Date(r.lastAttemptAt) : undefined,
        }),
      );
    }
    return plan;
  }
  const all = [...outcomes.values()];
  const notBefore = Math.max(0, ...all.map((o) => o.notBefore ?? 0));
  const overrides = all.filter((o) => o.retryAt !== undefined).map((o) => o.retryAt!);
  const next = overrides.length ? Math.min(...overrides) : Math.max(decision.at, notBefore);
  state.nextAttemptAt = next;
  plan.next = next;
  const warnAfter = input.delayWarningAfterMs;
  if (warnAfter !== undefined && !state.delayWarned && now - env.arrivedAt >= warnAfter) {
    state.delayWarned = true;
    plan.delayed = pending.flatMap((i) =>
      dsnLine(env.rcpts[i], 'delayed', {
        status: state.rcpts[i].lastStatus ?? '4.0.0',
        diagnostic: state.rcpts[i].lastReply,
        remoteMta: state.rcpts[i].remoteMta,
        lastAttemptAt: new Date(now),
        willRetryUntil: new Date(env.arrivedAt + maxAgeMs),
      }),
    );
  }
  return plan;
}

/** The DSN line of recipient `rc` for `action`: none when its NOTIFY does not ask for one. */
function dsnLine(
  rc: Envelope['rcpts'][number],
  action: 'failed' | 'delayed',
  what: Omit<DsnRecipient, 'address' | 'orcpt' | 'action'>,
): DsnRecipient[] {
  if (!dsnRecipientsWanted(rc.notify?.join(','), action)) return [];
  return [{ address: rc.address, orcpt: rc.orcpt, action, ...what }];
}

/** Metrics and one log line per recipient for an applied plan. Returns the recipients handed off. */
export function reportOutcomes(
  d: Pick<EngineDeps, 'log' | 'metrics'>,
  env: Envelope,
  outcomes: Map<number, Outcome>,
  plan: OutcomePlan,
): number {
  const st = plan.state;
  const log = (event: string, i: number, msg: string) => {
    const o = outcomes.get(i);
    const r = st.rcpts[i];
    d.log.info(
      {
        event,
        queueId: env.id,
        tenant: env.tenant,
        from: env.from,
        to: env.rcpts[i].address,
        route: o?.route,
        status: event === 'expired' ? statusFor({ expired: true }) : o?.status,
        reply: o?.reply ?? r.lastReply,
        remoteMta: o?.remoteMta,
        attempt: r.attempts,
      },
      msg,
    );
  };
  for (const i of plan.handedOff) {
    d.metrics.delivered.inc({ tenant: env.tenant, route: 'handoff' });
    log('handed-off', i, 'handed off to a peer relay');
  }
  for (const i of plan.delivered) {
    d.metrics.delivered.inc({ tenant: env.tenant, route: outcomes.get(i)!.route });
    log('delivered', i, 'delivered');
  }
  for (const i of plan.bounced) {
    const kind = isHardBounce(outcomes.get(i)!.status) ? 'hard' : 'soft';
    d.metrics.bounced.inc({ tenant: env.tenant, kind });
    log('bounced', i, 'bounced');
  }
  for (const i of plan.deferred) {
    d.metrics.deferred.inc({ tenant: env.tenant });
    log('deferred', i, 'deferred');
  }
  for (const i of plan.expired) {
    d.metrics.bounced.inc({ tenant: env.tenant, kind: 'expired' });
    log('expired', i, 'expired');
  }
  return plan.handedOff.length;
}
