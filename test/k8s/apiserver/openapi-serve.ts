/** Serves openapi.ts: /openapi/v3 documents, custom resource validation and Tables. */
import { ApiError } from './errors.js';
import { isObject, type KObject } from './objects.js';
import {
  BUILTIN_KINDS,
  customResourceAdmission,
  openApiV3GroupVersion,
  openApiV3Root,
  toTable,
  type PrinterColumn,
  type ServedKind,
} from './openapi.js';
import type { Registry, ResourceType } from './resources.js';
import type { Store } from './store.js';

interface CrdVersionSpec {
  name: string;
  served?: boolean;
  schema?: { openAPIV3Schema?: Record<string, unknown> };
  subresources?: { status?: unknown; scale?: unknown };
  additionalPrinterColumns?: PrinterColumn[];
}

function crdKinds(t: ResourceType, store: Store, registry: Registry): ServedKind[] {
  const crdType = registry.find('apiextensions.k8s.io', 'v1', 'customresourcedefinitions');
  if (!crdType || !t.crd) return [];
  let crd: KObject;
  try {
    crd = store.get(crdType, '', t.crd);
  } catch {
    return [];
  }
  const versions = ((crd.spec as { versions?: CrdVersionSpec[] }).versions ?? []).filter(
    (v) => v.served !== false,
  );
  return versions.map((v) => ({
    group: t.group,
    version: v.name,
    kind: t.kind,
    plural: t.plural,
    namespaced: t.namespaced,
    schema: v.schema?.openAPIV3Schema,
    subresources: {
      status: v.subresources?.status !== undefined,
      scale: v.subresources?.scale !== undefined,
    },
    printerColumns: v.additionalPrinterColumns,
  }));
}

/** Every kind served now, with its schema (built-in schemas from the descriptors in kinds/, CRD schemas from the CRDs). */
export function servedKinds(registry: Registry, store: Store): ServedKind[] {
  const out: ServedKind[] = [];
  for (const t of registry.all()) {
    if (t.crd) {
      out.push(...crdKinds(t, store, registry));
      continue;
    }
    for (const version of t.versions) {
      const known = BUILTIN_KINDS.find(
        (b) => b.group === t.group && b.version === version && b.kind === t.kind,
      );
      out.push(
        known ?? {
          group: t.group,
          version,
          kind: t.kind,
          plural: t.plural,
          namespaced: t.namespaced,
          subresources: { status: t.statusSubresource, scale: t.scale !== undefined },
        },
      );
    }
  }
  return out;
}

/** The OpenAPI v3 document for a path under /openapi/v3, or undefined (404). */
export function openApiDocument(pathname: string, registry: Registry, store: Store): unknown {
  const kinds = servedKinds(registry, store);
  if (pathname === '/openapi/v3' || pathname === '/openapi/v3/') return openApiV3Root(kinds);
  const rest = pathname.replace(/^\/openapi\/v3\//, '').split('/');
  if (rest[0] === 'api' && rest.length === 2) return openApiV3GroupVersion(kinds, '', rest[1]);
  if (rest[0] === 'apis' && rest.length === 3) return openApiV3GroupVersion(kinds, rest[1], rest[2]);
  return undefined;
}

function kindOf(t: ResourceType, version: string, registry: Registry, store: Store): ServedKind | undefined {
  if (t.crd) return crdKinds(t, store, registry).find((k) => k.version === version);
  return servedKinds(registry, store).find(
    (k) => k.group === t.group && k.version === version && k.kind === t.kind,
  );
}

export type ValidationMode = 'Strict' | 'Warn' | 'Ignore';

/**
 * Validates, defaults and prunes a custom resource body; returns the object to store and warnings.
 * Throws 400 (unknown fields under Strict) or 422 (schema violations).
 */
export function validateCustomResourceBody(
  t: ResourceType,
  version: string,
  obj: KObject,
  mode: ValidationMode,
  registry: Registry,
  store: Store,
): { object: KObject; warnings: string[] } {
  const kind = t.crd ? kindOf(t, version, registry, store) : undefined;
  if (!kind) return { object: obj, warnings: [] };
  const result = customResourceAdmission(kind, obj, mode);
  if (!result.ok) {
    const st = result.status as { message?: string; reason?: string; details?: Record<string, unknown> };
    throw new ApiError(
      result.code,
      result.code === 400 ? 'BadRequest' : 'Invalid',
      String(st.message ?? ''),
      st.details,
    );
  }
  return { object: result.object as KObject, warnings: result.warnings };
}

/** A Table for `kubectl get`, from the kind's printer columns. */
export function renderTable(
  t: ResourceType,
  version: string,
  objectOrList: Record<string, unknown>,
  query: URLSearchParams,
  registry: Registry,
  store: Store,
): unknown {
  const kind = kindOf(t, version, registry, store) ?? {
    group: t.group,
    version,
    kind: t.kind,
    plural: t.plural,
    namespaced: t.namespaced,
  };
  const isList = Array.isArray(objectOrList.items);
  const items = isList ? (objectOrList.items as Record<string, unknown>[]) : [objectOrList];
  const meta = (isList && isObject(objectOrList.metadata) ? objectOrList.metadata : {}) as {
    resourceVersion?: string;
    continue?: string;
  };
  const include = query.get('includeObject');
  return toTable(kind, items, {
    includeObject: include === 'None' || include === 'Object' || include === 'Metadata' ? include : undefined,
    resourceVersion: meta.resourceVersion,
    continue: meta.continue,
  });
}
