/**
 * Where the relay's parts report delivery events (contract/events.ts): the engine, the acceptance path,
 * the feedback listener. The webhook outbox implements it; a relay without webhook endpoints discards.
 */
import type { DeliveryEvent } from '../contract/events.js';

/**
 * An event as a part reports it: the sink gives it its id, and `at` defaults to now (ms). `key`, when
 * given, names the event so that reporting it again (an attempt repeated after a crash, a report received
 * twice) gives the same id (eventId); without it the id is random.
 */
export type NewEvent = Omit<DeliveryEvent, 'id' | 'at'> & { at?: number; key?: string };

export interface EventSink {
  /** Never throws and never blocks: the sink bounds and persists on its own. */
  emit(e: NewEvent): void;
}

/** The sink of a relay that has no webhook endpoints: events are dropped at once. */
export const DISCARD_EVENTS: EventSink = { emit() {} };

/** A relay that stores delivery events handed off by a draining peer (events/runtime.ts, ADR 019). */
export interface EventHandoffReceiver {
  /** Stores the events this relay's endpoints want, durably; resolves with how many; throws when it cannot. */
  receiveHandoff(events: DeliveryEvent[]): Promise<number>;
}
