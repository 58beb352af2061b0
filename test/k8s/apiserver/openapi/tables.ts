/** Server-side Tables (`kubectl get`): CRD printer columns, the built-in kinds' columns (kinds/). */
import { descriptorOf } from '../kinds/index.js';
import { age, ageCol, get } from '../kinds/columns.js';
import type { Column } from '../kinds/descriptor.js';
import { isObject } from '../objects.js';
import type { ServedKind } from '../openapi.js';
import { evalJsonPath, parseJsonPath } from './jsonpath.js';

type Json = Record<string, unknown>;

function cellFor(type: string, value: unknown, now: number): unknown {
  if (value === undefined || value === null) return null;
  switch (type) {
    case 'integer':
      return typeof value === 'number' ? Math.trunc(value) : null;
    case 'number':
      return typeof value === 'number' ? value : null;
    case 'boolean':
      return typeof value === 'boolean' ? value : null;
    case 'date':
      return typeof value === 'string' ? age(value, now) : null;
    case 'string':
      return typeof value === 'string'
        ? value
        : isObject(value) || Array.isArray(value)
          ? JSON.stringify(value)
          : String(value);
    default:
      return null;
  }
}

const NAME_COLUMN = {
  name: 'Name',
  type: 'string',
  format: 'name',
  description:
    'Name must be unique within a namespace. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names',
  priority: 0,
};

const DEFAULT_COLUMNS: Column[] = [ageCol];

/**
 * A meta.k8s.io/v1 Table (what `kubectl get` asks for with `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`).
 * CRD kinds use their printerColumns (Name first; Name + Age when none). includeObject defaults to Metadata
 * (the API server's default); `None` leaves `object` out of the rows.
 */
export function toTable(
  kind: ServedKind,
  objects: Record<string, unknown>[],
  opts: {
    includeObject?: 'None' | 'Object' | 'Metadata';
    now?: number;
    resourceVersion?: string;
    continue?: string;
    noHeaders?: boolean;
  } = {},
): Record<string, unknown> {
  const now = opts.now ?? Date.now();
  const include = opts.includeObject ?? 'Metadata';
  const builtin = descriptorOf(kind.group, kind.kind);
  let columns: Column[];
  if (kind.printerColumns && kind.printerColumns.length > 0) {
    columns = kind.printerColumns.map((pc) => {
      const segs = parseJsonPath(pc.jsonPath);
      return {
        def: {
          name: pc.name,
          type: pc.type,
          ...(pc.format ? { format: pc.format } : {}),
          description: pc.description ?? '',
          priority: pc.priority ?? 0,
        },
        cell: (o: Json, n: number) => {
          const found = evalJsonPath(segs, o);
          return found.length === 0 ? null : cellFor(pc.type, found[0], n);
        },
      };
    });
  } else {
    columns = builtin?.columns ?? DEFAULT_COLUMNS;
  }
  // kubectl's Event table has no Name column up front: Name comes last, as a wide column
  const withName = builtin?.nameColumnLast !== true;
  const defs = [...(withName ? [NAME_COLUMN] : []), ...columns.map((c) => c.def)];
  if (!withName) defs.push({ ...NAME_COLUMN, priority: 1 });
  const rows = objects.map((o) => {
    const name = get(o, 'metadata', 'name') ?? '';
    const cells = columns.map((c) => {
      const v = c.cell(o, now);
      return v === undefined ? null : v;
    });
    const row: Json = { cells: withName ? [name, ...cells] : [...cells, name] };
    if (include === 'Object') row.object = o;
    else if (include === 'Metadata') {
      row.object = {
        kind: 'PartialObjectMetadata',
        apiVersion: 'meta.k8s.io/v1',
        metadata: o.metadata ?? {},
      };
    }
    return row;
  });
  const metadata: Json = {};
  if (opts.resourceVersion !== undefined) metadata.resourceVersion = opts.resourceVersion;
  if (opts.continue) metadata.continue = opts.continue;
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata,
    ...(opts.noHeaders ? {} : { columnDefinitions: defs }),
    rows,
  };
}
