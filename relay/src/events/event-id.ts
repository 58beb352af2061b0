/**
 * Event ids (docs/events.md): a UUID, random unless the event has a stable key (sink.ts NewEvent.key);
 * then the UUID (version 8, RFC 9562) is derived from the key, so the same event reported again after a
 * crash (the attempt repeated because its outcome was not yet on the spool) keeps its id and receivers
 * deduplicate it like a retried batch.
 */
import { createHash, randomUUID } from 'node:crypto';

export function eventId(key?: string): string {
  if (key === undefined) return randomUUID();
  const b = createHash('sha256').update('cartero-event\0').update(key).digest().subarray(0, 16);
  b[6] = (b[6] & 0x0f) | 0x80; // version 8: custom
  b[8] = (b[8] & 0x3f) | 0x80; // variant 10
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The key of an event about recipient `rcpt` (its index) of message `queueId`, at `attempt` (0: none). */
export function recipientEventKey(queueId: string, rcpt: number, type: string, attempt = 0): string {
  return `${queueId}\0${rcpt}\0${type}\0${attempt}`;
}
