import { age, col, get, num } from './columns.js';
import type { KindDescriptor } from './descriptor.js';
import { dateTime, int32, kindSchema, open, str } from './schema.js';

/** metav1.MicroTime fields of both Event kinds. */
export const EVENT_MICRO_TIMES = [['eventTime'], ['series', 'lastObservedTime']];

/** The core (v1) Event; events.k8s.io/v1 has its own descriptor (events-v1.ts). */
export const event: KindDescriptor = {
  group: '',
  version: 'v1',
  kind: 'Event',
  resource: { shortNames: ['ev'] },
  schema: kindSchema(
    'Event is a report of an event somewhere in the cluster.',
    {
      involvedObject: open(),
      reason: str(),
      message: str(),
      type: str(),
      count: int32(),
      firstTimestamp: dateTime(),
      lastTimestamp: dateTime(),
      eventTime: dateTime(),
      source: open(),
      series: open(),
      action: str(),
      related: open(),
      reportingComponent: str(),
      reportingInstance: str(),
    },
    ['metadata', 'involvedObject'],
  ),
  columns: [
    col('Last Seen', 'string', (o, now) =>
      age(get(o, 'lastTimestamp') ?? get(o, 'eventTime') ?? get(o, 'metadata', 'creationTimestamp'), now),
    ),
    col('Type', 'string', (o) => o.type ?? ''),
    col('Reason', 'string', (o) => o.reason ?? ''),
    col(
      'Object',
      'string',
      (o) =>
        `${String(get(o, 'involvedObject', 'kind') ?? '').toLowerCase()}/${String(get(o, 'involvedObject', 'name') ?? '')}`,
    ),
    col('Message', 'string', (o) => String(o.message ?? '').trim()),
    col('Count', 'integer', (o) => num(o.count) || 1, 1),
  ],
  nameColumnLast: true,
  strategy: { microTimeFields: EVENT_MICRO_TIMES },
};
