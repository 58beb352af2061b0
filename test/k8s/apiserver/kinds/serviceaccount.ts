import { BOOL, message, METADATA, stringsMessage, type MessageSpec } from '../protobuf-messages.js';
import { ageCol, col, count } from './columns.js';
import type { KindDescriptor } from './descriptor.js';
import { bool, kindSchema, open } from './schema.js';

// k8s.io/api/core/v1/generated.proto:
//   ServiceAccount { metadata = 1; secrets = 2; imagePullSecrets = 3; automountServiceAccountToken = 4 }
//   ObjectReference { kind = 1; namespace = 2; name = 3; uid = 4; apiVersion = 5; resourceVersion = 6; fieldPath = 7 }
//   LocalObjectReference { name = 1 }
const OBJECT_REFERENCE = stringsMessage('ObjectReference', [
  [1, 'kind'],
  [2, 'namespace'],
  [3, 'name'],
  [4, 'uid'],
  [5, 'apiVersion'],
  [6, 'resourceVersion'],
  [7, 'fieldPath'],
]);

const SERVICE_ACCOUNT: MessageSpec = {
  name: 'ServiceAccount',
  fields: [
    METADATA,
    { no: 2, json: 'secrets', type: message(OBJECT_REFERENCE), repeated: true },
    {
      no: 3,
      json: 'imagePullSecrets',
      type: message(stringsMessage('LocalObjectReference', [[1, 'name']])),
      repeated: true,
    },
    { no: 4, json: 'automountServiceAccountToken', type: BOOL },
  ],
};

export const serviceAccount: KindDescriptor = {
  group: '',
  version: 'v1',
  kind: 'ServiceAccount',
  resource: { shortNames: ['sa'] },
  schema: kindSchema('ServiceAccount binds together a name, a principal and a set of secrets.', {
    secrets: { type: 'array', items: open() },
    imagePullSecrets: { type: 'array', items: open() },
    automountServiceAccountToken: bool(),
  }),
  columns: [col('Secrets', 'integer', (o) => count(o.secrets)), ageCol],
  protobuf: SERVICE_ACCOUNT,
};
