import { ageCol, col, count, get, list, num } from './columns.js';
import type { Json, KindDescriptor } from './descriptor.js';
import { podSpecLists } from './podspec.js';
import { kindSchema, open } from './schema.js';

/** kubectl's STATUS column of a pod: Terminating, a container's waiting/terminated reason, or the phase. */
function podStatus(o: Json): string {
  if (get(o, 'metadata', 'deletionTimestamp')) return 'Terminating';
  for (const s of list(o, 'status', 'containerStatuses')) {
    const waiting = get(s, 'state', 'waiting', 'reason');
    if (typeof waiting === 'string' && waiting) return waiting;
    const terminated = get(s, 'state', 'terminated', 'reason');
    if (typeof terminated === 'string' && terminated) return terminated;
  }
  const reason = get(o, 'status', 'reason');
  if (typeof reason === 'string' && reason) return reason;
  return String(get(o, 'status', 'phase') ?? 'Pending');
}

export const pod: KindDescriptor = {
  group: '',
  version: 'v1',
  kind: 'Pod',
  resource: { shortNames: ['po'], categories: ['all'], status: true, subresources: { log: ['get'] } },
  schema: kindSchema('Pod is a collection of containers that can run on a host.', {
    spec: open('PodSpec (not modelled in detail)'),
    status: open(),
  }),
  columns: [
    col('Ready', 'string', (o) => {
      const total = count(get(o, 'spec', 'containers'));
      const ready = list(o, 'status', 'containerStatuses').filter((s) => get(s, 'ready') === true).length;
      return `${ready}/${total}`;
    }),
    col('Status', 'string', podStatus),
    col('Restarts', 'string', (o) =>
      String(
        list(o, 'status', 'containerStatuses').reduce((n: number, s) => n + num(get(s, 'restartCount')), 0),
      ),
    ),
    ageCol,
    col('IP', 'string', (o) => get(o, 'status', 'podIP') ?? '<none>', 1),
    col('Node', 'string', (o) => get(o, 'spec', 'nodeName') ?? '<none>', 1),
  ],
  merge: { lists: podSpecLists('spec') },
  strategy: {
    prepare: (obj, _old, op) => {
      if (op === 'CREATE') obj.status = { phase: 'Pending' };
    },
  },
};
