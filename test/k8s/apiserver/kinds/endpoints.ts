import { ageCol, col, get, list } from './columns.js';
import type { Json, KindDescriptor } from './descriptor.js';
import { kindSchema, open } from './schema.js';

/** kubectl's ENDPOINTS column of Endpoints: ready `ip:port`s, three at most, then `+ N more...`. */
function endpointsColumn(o: Json): string {
  const subsets = list(o, 'subsets');
  if (subsets.length === 0) return '<none>';
  const shown: string[] = [];
  let count = 0;
  for (const ss of subsets) {
    const addresses = list(ss, 'addresses').map((a) => String(get(a, 'ip')));
    const ports = list(ss, 'ports');
    const entries = ports.length
      ? ports.flatMap((p) => addresses.map((ip) => `${ip}:${String(get(p, 'port'))}`))
      : addresses;
    count += entries.length;
    for (const e of entries) if (shown.length < 3) shown.push(e);
  }
  return count > 3 ? `${shown.join(',')} + ${count - 3} more...` : shown.join(',');
}

export const endpoints: KindDescriptor = {
  group: '',
  version: 'v1',
  kind: 'Endpoints',
  resource: { plural: 'endpoints', shortNames: ['ep'] },
  schema: kindSchema('Endpoints is a collection of endpoints that implement the actual service.', {
    subsets: { type: 'array', items: open('EndpointSubset (not modelled in detail)') },
  }),
  columns: [col('Endpoints', 'string', endpointsColumn), ageCol],
};
