/**
 * Delivery events of the SMTP dialogue (accept.ts, inbound.ts), as data: `accepted` (one per recipient,
 * once the message is durable), `rejected` (refused by policy at RCPT or DATA: rate limit, quota, lint)
 * and `suppressed` (refused at RCPT because the recipient is on the suppression list).
 */
import type { Envelope } from '../spool/types.js';
import type { NewEvent } from './sink.js';
import { recipientEventKey } from './event-id.js';

/** One `accepted` per recipient: every later event of the message is per recipient too. */
export function acceptedEvents(env: Envelope, now: number): NewEvent[] {
  if (env.origin !== 'smtp') return [];
  return env.rcpts.map((r, i) => ({
    key: recipientEventKey(env.id, i, 'accepted'),
    type: 'accepted',
    tenant: env.tenant,
    queueId: env.id,
    recipient: r.address,
    ...(env.messageId ? { messageId: env.messageId } : {}),
    at: now,
  }));
}

/** The reply of an SMTP-facing error (SmtpReplyError and kin: responseCode, enhanced, message). */
export function replyOfError(e: unknown): NonNullable<NewEvent['reply']> {
  const x = e as { responseCode?: unknown; enhanced?: unknown; message?: unknown };
  return {
    ...(typeof x.responseCode === 'number' ? { code: x.responseCode } : {}),
    ...(typeof x.enhanced === 'string' ? { enhanced: x.enhanced } : {}),
    text: typeof x.message === 'string' ? x.message : String(e),
  };
}

/** Refused at the end of DATA by policy (quota, lint): one `rejected` per recipient (no queue id yet). */
export function rejectedEvents(
  tenant: string,
  recipients: string[],
  err: unknown,
  messageId: string | undefined,
  now: number,
): NewEvent[] {
  // only refusals that carry a reply are policy decisions; a local failure is not the tenant's event
  if (typeof (err as { responseCode?: unknown })?.responseCode !== 'number') return [];
  const reply = replyOfError(err);
  return recipients.map((recipient) => ({
    type: 'rejected',
    tenant,
    recipient,
    ...(messageId ? { messageId } : {}),
    reply,
    at: now,
  }));
}

/** Refused at RCPT TO: `suppressed` for a suppressed recipient, `rejected` for a policy refusal. */
export function rcptRefusedEvent(
  tenant: string,
  recipient: string,
  reason: 'suppressed' | 'rate_limited',
  err: unknown,
  now: number,
): NewEvent {
  return {
    type: reason === 'suppressed' ? 'suppressed' : 'rejected',
    tenant,
    recipient,
    reply: replyOfError(err),
    at: now,
  };
}
