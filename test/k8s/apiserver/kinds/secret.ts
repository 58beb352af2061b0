import { isObject, type KObject } from '../objects.js';
import { BOOL, BYTES_MAP, METADATA, STRING, STRING_MAP, type MessageSpec } from '../protobuf-messages.js';
import { ageCol, col, count } from './columns.js';
import type { KindDescriptor } from './descriptor.js';
import { immutableDataCauses } from './immutable.js';
import { bool, kindSchema, str, strMap } from './schema.js';

// k8s.io/api/core/v1/generated.proto: Secret { metadata = 1; data = 2 (map<string, bytes>); type = 3;
//   stringData = 4 (map<string, string>); immutable = 5 }
const SECRET: MessageSpec = {
  name: 'Secret',
  fields: [
    METADATA,
    { no: 5, json: 'immutable', type: BOOL },
    { no: 2, json: 'data', type: BYTES_MAP },
    { no: 4, json: 'stringData', type: STRING_MAP },
    { no: 3, json: 'type', type: STRING, omitEmpty: true },
  ],
};

/** `type` defaults to Opaque; `stringData` is folded into `data` (base64) and never stored. */
function defaultSecret(obj: KObject): void {
  obj.type ??= 'Opaque';
  if (isObject(obj.stringData)) {
    const data = (isObject(obj.data) ? obj.data : {}) as Record<string, string>;
    for (const [k, v] of Object.entries(obj.stringData)) data[k] = Buffer.from(String(v)).toString('base64');
    obj.data = data;
  }
  delete obj.stringData;
}

export const secret: KindDescriptor = {
  group: '',
  version: 'v1',
  kind: 'Secret',
  resource: {},
  schema: kindSchema('Secret holds secret data of a certain type.', {
    data: strMap('byte'),
    stringData: strMap(),
    type: str(),
    immutable: bool(),
  }),
  columns: [
    col('Type', 'string', (o) => o.type ?? 'Opaque'),
    col('Data', 'integer', (o) => count(o.data)),
    ageCol,
  ],
  protobuf: SECRET,
  strategy: { validateUpdate: immutableDataCauses, prepare: defaultSecret },
};
