import { isObject, type KObject } from '../objects.js';
import { message, METADATA, STRING, type MessageSpec } from '../protobuf-messages.js';
import { ageCol, col, get } from './columns.js';
import type { KindDescriptor } from './descriptor.js';
import { conditions, kindSchema, str } from './schema.js';

// k8s.io/api/core/v1/generated.proto:
//   Namespace { metadata = 1; spec = 2; status = 3 }  NamespaceSpec { finalizers = 1 }  NamespaceStatus { phase = 1 }
const NAMESPACE: MessageSpec = {
  name: 'Namespace',
  fields: [
    METADATA,
    {
      no: 2,
      json: 'spec',
      type: message({
        name: 'NamespaceSpec',
        fields: [{ no: 1, json: 'finalizers', type: STRING, repeated: true }],
      }),
    },
    {
      no: 3,
      json: 'status',
      type: message({ name: 'NamespaceStatus', fields: [{ no: 1, json: 'phase', type: STRING }] }),
    },
  ],
};

function defaultNamespace(obj: KObject): void {
  const name = obj.metadata.name ?? '';
  obj.metadata.labels = { ...obj.metadata.labels, 'kubernetes.io/metadata.name': name };
  const spec = (isObject(obj.spec) ? obj.spec : {}) as { finalizers?: string[] };
  spec.finalizers ??= ['kubernetes'];
  obj.spec = spec;
  if (!isObject(obj.status) || !obj.status.phase) obj.status = { phase: 'Active' };
}

export const namespace: KindDescriptor = {
  group: '',
  version: 'v1',
  kind: 'Namespace',
  resource: { namespaced: false, shortNames: ['ns'], status: true },
  schema: kindSchema('Namespace provides a scope for Names.', {
    spec: { type: 'object', properties: { finalizers: { type: 'array', items: str() } } },
    status: { type: 'object', properties: { phase: str(), conditions: conditions() } },
  }),
  columns: [col('Status', 'string', (o) => get(o, 'status', 'phase') ?? 'Active'), ageCol],
  protobuf: NAMESPACE,
  strategy: { names: 'label', prepare: defaultNamespace },
};
