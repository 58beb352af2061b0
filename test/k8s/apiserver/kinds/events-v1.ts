import type { KindDescriptor } from './descriptor.js';
import { EVENT_MICRO_TIMES } from './event.js';

/** events.k8s.io/v1 Event (served without a schema or columns of its own). */
export const eventsV1Event: KindDescriptor = {
  group: 'events.k8s.io',
  version: 'v1',
  kind: 'Event',
  resource: {},
  strategy: { microTimeFields: EVENT_MICRO_TIMES },
};
