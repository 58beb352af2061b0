/**
 * The feedback loop's parts as the relay holds them: the processor, the listener and GET
 * /feedback/unmatched. The relay sets `events` (its EventSink) and `complaints` (the complaint-rate
 * guard) when it has them; until then events are discarded and complaints only counted.
 */
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { AdminServer } from '../admin.js';
import type { FeedbackUnmatchedResponse } from '../contract/admin-api.js';
import type { RelayConfig } from '../config.js';
import { DISCARD_EVENTS, type EventSink } from '../events/sink.js';
import type { TenantRuntime } from '../tenant-runtime.js';
import { FeedbackListener } from './listener.js';
import { FeedbackMetrics, FeedbackProcessor } from './processor.js';
import { NO_COMPLAINT_GUARD, type ComplaintSink } from './complaints.js';

export interface Feedback {
  processor: FeedbackProcessor;
  listener: FeedbackListener;
  events: EventSink;
  complaints: ComplaintSink;
}

export function setUpFeedback(o: {
  cfg: () => RelayConfig;
  tenancy: () => TenantRuntime;
  admin: AdminServer;
  registry: Registry;
  log: Logger;
  now: () => number;
}): Feedback {
  const metrics = new FeedbackMetrics(o.registry);
  const f = { events: DISCARD_EVENTS, complaints: NO_COMPLAINT_GUARD } as Feedback;
  f.processor = new FeedbackProcessor({
    cfg: o.cfg,
    tenancy: o.tenancy,
    events: () => f.events,
    complaints: () => f.complaints,
    metrics,
    log: o.log,
    now: o.now,
  });
  f.listener = new FeedbackListener({ cfg: o.cfg, processor: f.processor, metrics, log: o.log, now: o.now });
  o.admin.route('GET', '/feedback/unmatched', () => [
    200,
    { reports: f.processor.list() } satisfies FeedbackUnmatchedResponse,
  ]);
  return f;
}
