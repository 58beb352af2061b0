/**
 * Pure decisions of webhook delivery (relay/src/events/webhooks.ts): the back-off after a failed batch,
 * whether a batch has been retried long enough, how an HTTP answer is read, which events an endpoint gets.
 */
import type { DeliveryEvent, EventType } from '../contract/events.js';

export const BACKOFF_INITIAL_MS = 1000;
export const BACKOFF_MAX_MS = 5 * 60_000;

/**
 * The wait before retry number `failures` (1 = after the first failure): doubling from 1s, capped at 5
 * min, with up to 20 % jitter taken from `rand` (0..1) so that endpoints failing together do not retry in
 * step.
 */
export function backoffMs(failures: number, rand: number): number {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_INITIAL_MS * 2 ** Math.min(30, Math.max(0, failures - 1)));
  return Math.round(base * (1 - 0.2 * Math.min(1, Math.max(0, rand))));
}

/**
 * After a failure: retry later, or give up on the batch once `retryForMs` has passed since `firstTryAt`
 * (webhooks.ts passes the time of the batch's oldest event).
 */
export function afterFailure(
  firstTryAt: number,
  now: number,
  failures: number,
  retryForMs: number,
  rand: number,
): { retryAt: number } | 'drop' {
  if (now - firstTryAt >= retryForMs) return 'drop';
  return { retryAt: Math.min(now + backoffMs(failures, rand), firstTryAt + retryForMs) };
}

/** Bounded label values of cartero_events_failed_total{reason}. */
export type FailReason = 'timeout' | 'connect' | 'http-4xx' | 'http-5xx' | 'http-other';

/** 2xx acknowledges the batch; anything else is a failure retried (4xx included: a receiver's bug gets fixed). */
export function readStatus(status: number): 'ok' | FailReason {
  if (status >= 200 && status < 300) return 'ok';
  if (status >= 400 && status < 500) return 'http-4xx';
  if (status >= 500 && status < 600) return 'http-5xx';
  return 'http-other';
}

export interface EndpointFilter {
  tenant: string;
  events: readonly EventType[];
}

export function wants(f: EndpointFilter, e: Pick<DeliveryEvent, 'tenant' | 'type'>): boolean {
  return e.tenant === f.tenant && f.events.includes(e.type);
}
