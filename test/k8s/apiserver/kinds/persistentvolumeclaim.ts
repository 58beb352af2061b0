import { ageCol, col, get } from './columns.js';
import type { KindDescriptor } from './descriptor.js';
import { kindSchema, open } from './schema.js';

const ACCESS_MODES: Record<string, string> = {
  ReadWriteOnce: 'RWO',
  ReadOnlyMany: 'ROX',
  ReadWriteMany: 'RWX',
  ReadWriteOncePod: 'RWOP',
};

export const persistentVolumeClaim: KindDescriptor = {
  group: '',
  version: 'v1',
  kind: 'PersistentVolumeClaim',
  resource: { shortNames: ['pvc'], status: true },
  schema: kindSchema("PersistentVolumeClaim is a user's request for and claim to a persistent volume.", {
    spec: open(),
    status: open(),
  }),
  columns: [
    col('Status', 'string', (o) => get(o, 'status', 'phase') ?? 'Pending'),
    col('Volume', 'string', (o) => get(o, 'spec', 'volumeName') ?? ''),
    col('Capacity', 'string', (o) => get(o, 'status', 'capacity', 'storage') ?? ''),
    col('Access Modes', 'string', (o) => {
      const m = get(o, 'status', 'accessModes');
      return Array.isArray(m) ? m.map((x) => ACCESS_MODES[String(x)] ?? String(x)).join(',') : '';
    }),
    col('StorageClass', 'string', (o) => get(o, 'spec', 'storageClassName') ?? '<unset>'),
    ageCol,
  ],
};
