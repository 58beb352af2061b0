/**
 * Delivery events (issue 14): what happened to each message and recipient, as the relay reports it to a
 * tenant's webhook endpoints. Part of the contract: the webhook payload is a public schema (docs/events.md
 * once written), and the operator renders endpoints from the SmtpRelay spec against these type names.
 */
export const EVENT_TYPES = [
  'accepted',
  'delivered',
  'deferred',
  'bounced',
  'expired',
  'complained',
  'suppressed',
  'rejected',
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** One event, as delivered to a webhook (inside a batch). */
export interface DeliveryEvent {
  /** Stable and unique: the same event retried keeps its id, so receivers can deduplicate. */
  id: string;
  type: EventType;
  /** When it happened (ISO 8601, UTC). */
  at: string;
  tenant: string;
  /** The relay's queue id (absent for `rejected` before a queue id existed). */
  queueId?: string;
  recipient?: string;
  /** The message's Message-ID header, when it had one. */
  messageId?: string;
  /** The remote (or our own) reply that decided it. */
  reply?: { code?: number; enhanced?: string; text: string };
  /** The address the attempt left from. */
  egress?: string;
  /** bounced: the class and whether it came in the session (`sync`) or later as a DSN (`async`). */
  bounce?: { class: 'hard' | 'soft'; async: boolean };
  /** complained: the ARF feedback type (abuse, fraud, ...) and who reported it. */
  complaint?: { feedbackType: string; reporter?: string };
  /** suppressed: the suppression list's source (bounce, complaint, admin, ...). */
  source?: string;
}
