/**
 * The delivery events of one applied attempt (delivery/outcomes.ts), as data: the engine emits them at
 * its edge once the plan is applied. Pure, so the mapping is tested without a sink.
 */
import type { Envelope } from '../spool/types.js';
import type { Outcome } from '../delivery/types.js';
import type { OutcomePlan } from '../delivery/outcomes.js';
import { isHardBounce, statusFor } from '../delivery/classify.js';
import type { NewEvent } from './sink.js';
import { recipientEventKey } from './event-id.js';

/** An SMTP reply line as the event's reply: code and enhanced status when the text starts with them. */
export function replyOf(text: string, status?: string): NonNullable<NewEvent['reply']> {
  const m = /^([245][0-9]{2})[ -](?:([245]\.[0-9]{1,3}\.[0-9]{1,3}) )?/.exec(text);
  const enhanced = m?.[2] ?? status;
  return {
    ...(m ? { code: Number(m[1]) } : {}),
    ...(enhanced ? { enhanced } : {}),
    text,
  };
}

export function outcomeEvents(
  env: Envelope,
  outcomes: Map<number, Outcome>,
  plan: OutcomePlan,
  now: number,
): NewEvent[] {
  // our own DSNs are not the tenant's messages: no events about them
  if (env.origin === 'dsn') return [];
  // keyed by the attempt count the plan saves: an attempt repeated after a crash (its outcome not yet on
  // the spool) reports the same events with the same ids
  const base = (i: number, type: NewEvent['type'] = 'delivered'): NewEvent => ({
    key: recipientEventKey(env.id, i, type, plan.state.rcpts[i]?.attempts ?? plan.state.attempts),
    type,
    tenant: env.tenant,
    queueId: env.id,
    recipient: env.rcpts[i].address,
    ...(env.messageId ? { messageId: env.messageId } : {}),
    at: now,
  });
  const withOutcome = (i: number, type: NewEvent['type']): NewEvent => {
    const o = outcomes.get(i)!;
    return {
      ...base(i, type),
      reply: replyOf(o.reply, o.status),
      ...(o.egress ? { egress: o.egress } : {}),
    };
  };
  const out: NewEvent[] = [];
  // a hand-off is not a delivery: the peer relay reports what happens next
  for (const i of plan.delivered) out.push(withOutcome(i, 'delivered'));
  for (const i of plan.bounced) {
    const e = withOutcome(i, 'bounced');
    e.bounce = { class: isHardBounce(outcomes.get(i)!.status) ? 'hard' : 'soft', async: false };
    out.push(e);
  }
  // a recipient deferred by its last attempt expires: one `expired`, not a `deferred` first
  const expired = new Set(plan.expired);
  // nor is a failed hand-off a delivery attempt: the peer's answer is about the drain, not the recipient
  for (const i of plan.deferred)
    if (!expired.has(i) && outcomes.get(i)?.route !== 'handoff') out.push(withOutcome(i, 'deferred'));
  for (const i of plan.expired) {
    const r = plan.state.rcpts[i];
    out.push({
      ...base(i, 'expired'),
      reply: replyOf(r.lastReply ?? 'delivery time expired', statusFor({ expired: true })),
    });
  }
  return out;
}
