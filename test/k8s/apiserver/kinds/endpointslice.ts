import { ageCol, col, get, list } from './columns.js';
import type { KindDescriptor } from './descriptor.js';
import { kindSchema, open, str } from './schema.js';

/** kubectl's PORTS and ENDPOINTS columns of EndpointSlices (three at most, then `+ N more...`). */
function sliceColumn(values: string[]): string {
  if (values.length === 0) return '<unset>';
  const shown = values.slice(0, 3).join(',');
  return values.length > 3 ? `${shown} + ${values.length - 3} more...` : shown;
}

export const endpointSlice: KindDescriptor = {
  group: 'discovery.k8s.io',
  version: 'v1',
  kind: 'EndpointSlice',
  resource: {},
  schema: kindSchema(
    'EndpointSlice represents a subset of the endpoints that implement a service.',
    {
      addressType: str(),
      endpoints: { type: 'array', items: open('Endpoint (not modelled in detail)') },
      ports: { type: 'array', items: open('EndpointPort (not modelled in detail)') },
    },
    ['addressType', 'endpoints'],
  ),
  columns: [
    col('AddressType', 'string', (o) => get(o, 'addressType') ?? ''),
    col('Ports', 'string', (o) => sliceColumn(list(o, 'ports').map((p) => String(get(p, 'port'))))),
    col('Endpoints', 'string', (o) =>
      sliceColumn(list(o, 'endpoints').flatMap((e) => list(e, 'addresses').map(String))),
    ),
    ageCol,
  ],
};
