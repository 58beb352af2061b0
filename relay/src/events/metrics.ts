/** The delivery events' metrics (docs/metrics.md): labels bounded by config (tenant, endpoint) and enums. */
import { Counter, Gauge, type Registry } from 'prom-client';

export type DropReason =
  'outbox-full' | 'disk-full' | 'buffer-full' | 'write-error' | 'retry-expired' | 'corrupt';

export class EventMetrics {
  readonly queued: Counter<'tenant' | 'type'>;
  readonly sent: Counter<'endpoint'>;
  readonly failed: Counter<'endpoint' | 'reason'>;
  readonly dropped: Counter<'reason'>;
  readonly lag: Gauge<'endpoint'>;
  readonly outboxBytes: Gauge;
  readonly handedOff: Counter<'result'>;

  constructor(r: Registry, outboxBytes: () => number) {
    this.queued = new Counter({
      name: 'cartero_events_queued_total',
      help: 'Delivery events written durably to the outbox (committed), by tenant and type.',
      labelNames: ['tenant', 'type'],
      registers: [r],
    });
    this.sent = new Counter({
      name: 'cartero_events_sent_total',
      help: 'Events acknowledged (2xx) by a webhook endpoint.',
      labelNames: ['endpoint'],
      registers: [r],
    });
    this.failed = new Counter({
      name: 'cartero_events_failed_total',
      help: 'Webhook requests that failed (each retried), by endpoint and reason.',
      labelNames: ['endpoint', 'reason'],
      registers: [r],
    });
    this.dropped = new Counter({
      name: 'cartero_events_dropped_total',
      help: 'Events lost on purpose: outbox full, disk full, buffer full, write error, retried past retryFor, damaged.',
      labelNames: ['reason'],
      registers: [r],
    });
    this.lag = new Gauge({
      name: 'cartero_events_lag_seconds',
      help: 'Age of the oldest event a webhook endpoint has not acknowledged yet (0 when caught up).',
      labelNames: ['endpoint'],
      registers: [r],
    });
    this.handedOff = new Counter({
      name: 'cartero_events_handed_off_total',
      help: 'Events handed to a peer relay during a drain: sent (a peer took them) or received (from a peer).',
      labelNames: ['result'],
      registers: [r],
    });
    this.outboxBytes = new Gauge({
      name: 'cartero_events_outbox_bytes',
      help: 'Bytes of event segments on the spool volume.',
      registers: [r],
      collect() {
        this.set(outboxBytes());
      },
    });
  }
}
