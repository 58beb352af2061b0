import { BOOL, BYTES_MAP, METADATA, STRING_MAP, type MessageSpec } from '../protobuf-messages.js';
import { ageCol, col, count } from './columns.js';
import type { KindDescriptor } from './descriptor.js';
import { immutableDataCauses } from './immutable.js';
import { bool, kindSchema, strMap } from './schema.js';

// k8s.io/api/core/v1/generated.proto: ConfigMap { metadata = 1; data = 2 (map<string, string>);
//   binaryData = 3 (map<string, bytes>); immutable = 4 }
const CONFIG_MAP: MessageSpec = {
  name: 'ConfigMap',
  fields: [
    METADATA,
    { no: 4, json: 'immutable', type: BOOL },
    { no: 2, json: 'data', type: STRING_MAP },
    { no: 3, json: 'binaryData', type: BYTES_MAP },
  ],
};

export const configMap: KindDescriptor = {
  group: '',
  version: 'v1',
  kind: 'ConfigMap',
  resource: { shortNames: ['cm'] },
  schema: kindSchema('ConfigMap holds configuration data for pods to consume.', {
    data: strMap(),
    binaryData: strMap('byte'),
    immutable: bool(),
  }),
  columns: [col('Data', 'integer', (o) => count(o.data) + count(o.binaryData)), ageCol],
  protobuf: CONFIG_MAP,
  strategy: { validateUpdate: immutableDataCauses },
};
