/** Server-side apply and managedFields bookkeeping for every write. */
import { failureStatus } from '../errors.js';
import { clone, deepEqual, isObject } from '../objects.js';
import { isAtomicMap, joinPath, listRule, PatchError, type KindInfo, type Obj } from './core.js';
import {
  displayPath,
  fieldSetOf,
  fromFieldsV1,
  keyElement,
  matchesKey,
  removeAt,
  toFieldsV1,
  valueAt,
  type ManagedFieldsEntry,
  type PathSet,
} from './fields.js';

/** Options for {@link serverSideApply}. */
export interface ApplyOptions {
  manager: string;
  force: boolean;
  kind: KindInfo;
  /** RFC 3339 time recorded in managedFields. */
  now: string;
  /** 'status' when applying to the /status subresource: only status is applied and owned. */
  subresource?: 'status';
  /** Whether the main resource ignores status, as for kinds with a status subresource (default true). */
  statusSubresource?: boolean;
}

/** A field another manager owns that this apply would change. */
export interface ApplyConflict {
  manager: string;
  /** Field path as Kubernetes prints it, e.g. `.spec.replicas`. */
  field: string;
  /** The owner as Kubernetes describes it: `"helm"`, or `"kubectl-edit" using apps/v1 at <time>`. */
  by: string;
}

/** How Kubernetes names a manager in conflict messages (see fieldmanager's printManager). */
function describeManager(entry: ManagedFieldsEntry): string {
  let text = JSON.stringify(entry.manager);
  if (entry.subresource) text += ` with subresource ${JSON.stringify(entry.subresource)}`;
  if (entry.operation !== 'Update') return text;
  return entry.time
    ? `${text} using ${entry.apiVersion} at ${entry.time}`
    : `${text} using ${entry.apiVersion}`;
}

/** The 409 metav1.Status the API server returns for apply conflicts (message format as Kubernetes). */
export function applyConflictStatus(conflicts: ApplyConflict[]): Obj {
  let message: string;
  if (conflicts.length === 1) {
    message = `Apply failed with 1 conflict: conflict with ${conflicts[0].by}: ${conflicts[0].field}`;
  } else {
    const byManager = new Map<string, string[]>();
    for (const { by, field } of conflicts) byManager.set(by, [...(byManager.get(by) ?? []), field]);
    const lines = [...byManager.keys()]
      .sort()
      .flatMap((by) => [`conflicts with ${by}:`, ...(byManager.get(by) ?? []).map((field) => `- ${field}`)]);
    message = `Apply failed with ${conflicts.length} conflicts: ${lines.join('\n')}`;
  }
  // metav1.StatusCause's Type is serialized as `reason`.
  const causes = conflicts.map(({ by, field }) => ({
    reason: 'FieldManagerConflict',
    message: `conflict with ${by}`,
    field,
  }));
  return failureStatus(409, 'Conflict', message, { causes }) as unknown as Obj;
}

function apiVersionOf(kind: KindInfo): string {
  return kind.group === '' ? kind.version : `${kind.group}/${kind.version}`;
}

/** The managedFields entries of an object (invalid entries are dropped). */
export function managedFieldsOf(obj: Obj | undefined): ManagedFieldsEntry[] {
  const entries = isObject(obj?.metadata) ? obj.metadata.managedFields : undefined;
  if (!Array.isArray(entries)) return [];
  return clone(entries).filter(
    (entry): entry is ManagedFieldsEntry => isObject(entry) && typeof entry.manager === 'string',
  );
}

/** A copy of `obj` without metadata.managedFields (metadata created if missing). */
function withoutManagedFields(obj: Obj | undefined): Obj & { metadata: Obj } {
  const copy = (clone(obj) ?? {}) as Obj;
  const metadata = isObject(copy.metadata) ? copy.metadata : {};
  delete metadata.managedFields;
  copy.metadata = metadata;
  return copy as Obj & { metadata: Obj };
}

/** Drops null values recursively (SSA treats an explicit null as "not set by this config"). */
function dropNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(dropNulls);
  if (!isObject(value)) return value;
  const out: Obj = {};
  for (const [key, child] of Object.entries(value)) if (child !== null) out[key] = dropNulls(child);
  return out;
}

/** Merges an applied configuration into the live object: keyed/set lists merge, the rest replaces. */
function mergeApplied(live: unknown, applied: unknown, pattern: string, kind: KindInfo): unknown {
  if (isObject(applied) && isObject(live) && !isAtomicMap(kind, pattern)) {
    const result = clone(live);
    for (const [key, value] of Object.entries(applied)) {
      result[key] = mergeApplied(live[key], value, joinPath(pattern, key), kind);
    }
    return result;
  }
  const rule = listRule(kind, pattern);
  if (!Array.isArray(applied) || !Array.isArray(live) || rule === undefined) return clone(applied);
  const result = clone(live);
  for (const item of applied) {
    const at = rule.set
      ? result.findIndex((existing) => deepEqual(existing, item))
      : result.findIndex((existing) => isObject(item) && matchesKey(existing, keyElement(item, rule), rule));
    if (at < 0) result.push(clone(item));
    else if (!rule.set) result[at] = mergeApplied(result[at], item, `${pattern}[]`, kind);
  }
  return result;
}

/** True when `set` holds `encoded` or anything beneath it. */
function ownsAtOrBelow(set: PathSet, encoded: string): boolean {
  const prefix = encoded.slice(0, -1);
  for (const member of set) if (member === encoded || member.startsWith(`${prefix},`)) return true;
  return false;
}

/** Leaves (and atomic values) whose value the apply changes, with the other managers owning them. */
function findConflicts(
  live: Obj,
  merged: Obj,
  appliedSet: PathSet,
  others: { entry: ManagedFieldsEntry; set: PathSet }[],
  kind: KindInfo,
): (ApplyConflict & { encoded: string })[] {
  const conflicts: (ApplyConflict & { encoded: string })[] = [];
  for (const encoded of appliedSet) {
    const elements = JSON.parse(encoded) as string[];
    if (!elements[elements.length - 1].startsWith('f:')) continue; // list items: their fields decide
    const before = valueAt(live, elements, kind);
    const after = valueAt(merged, elements, kind);
    if (before.found && deepEqual(before.value, after.value)) continue;
    for (const { entry, set } of others) {
      if (!set.has(encoded)) continue;
      conflicts.push({
        manager: entry.manager,
        field: displayPath(elements),
        by: describeManager(entry),
        encoded,
      });
    }
  }
  return conflicts;
}

/** Key fields of a keyed list item must survive while the item does. */
function isKeyField(elements: string[]): boolean {
  const parent = elements[elements.length - 2];
  const last = elements[elements.length - 1];
  return parent?.startsWith('k:') === true && last.slice(2) in (JSON.parse(parent.slice(2)) as Obj);
}

/**
 * The applied configuration as apply sees it: no nulls, and only the part the endpoint owns
 * (status alone on /status; no status on the main resource of kinds with a status subresource).
 * A configuration carrying managedFields is a 400, as in Kubernetes.
 */
function applyConfiguration(applied: Obj, opts: ApplyOptions): Obj {
  if (!isObject(applied)) throw new PatchError(400, 'apply configuration must be an object', 'BadRequest');
  const fields = isObject(applied.metadata) ? applied.metadata.managedFields : undefined;
  if (Array.isArray(fields) && fields.length > 0) {
    throw new PatchError(400, 'metadata.managedFields must be nil', 'BadRequest');
  }
  const config = dropNulls(withoutManagedFields(applied)) as Obj & { metadata: Obj };
  if (opts.subresource === 'status') {
    const { name, namespace } = config.metadata;
    return {
      apiVersion: config.apiVersion,
      kind: config.kind,
      metadata: { name, namespace },
      status: config.status,
    };
  }
  if (opts.statusSubresource !== false) delete config.status;
  return config;
}

/**
 * Server-side apply of `applied` by `opts.manager` onto `live` (undefined on create). Returns the
 * new object with managedFields, or — when another manager owns a field whose value would change
 * and `force` is false — the unchanged live object and the conflicts (the server answers 409).
 */
export function serverSideApply(
  live: Obj | undefined,
  applied: Obj,
  opts: ApplyOptions,
): { object: Obj; conflicts: ApplyConflict[] } {
  const { kind, manager } = opts;
  const base = withoutManagedFields(live);
  const config = applyConfiguration(applied, opts);
  const includeStatus = opts.subresource === 'status' || opts.statusSubresource === false;
  const appliedSet = fieldSetOf(config, kind, { includeStatus, strict: true });
  const entries = managedFieldsOf(live);
  const own = entries.find(
    (entry) =>
      entry.manager === manager && entry.operation === 'Apply' && entry.subresource === opts.subresource,
  );
  const others = entries
    .filter((entry) => entry !== own)
    .map((entry) => ({ entry, set: fromFieldsV1(entry.fieldsV1) }));
  const merged = mergeApplied(base, config, '', kind) as Obj;

  const conflicts = findConflicts(base, merged, appliedSet, others, kind);
  if (conflicts.length > 0 && !opts.force) {
    return {
      object: clone(live) ?? {},
      conflicts: conflicts.map(({ manager: m, field, by }) => ({ manager: m, field, by })),
    };
  }
  for (const { encoded } of conflicts) for (const other of others) other.set.delete(encoded);

  const ownedByOthers: PathSet = new Set(others.flatMap(({ set }) => [...set]));
  const previous = own ? fromFieldsV1(own.fieldsV1) : new Set<string>();
  const dropped = [...previous].filter(
    (encoded) => !appliedSet.has(encoded) && !ownsAtOrBelow(ownedByOthers, encoded),
  );
  const keep = (encoded: string): boolean => appliedSet.has(encoded) || ownedByOthers.has(encoded);
  for (const encoded of dropped) {
    const elements = JSON.parse(encoded) as string[];
    if (!isKeyField(elements)) removeAt(merged, elements, kind, keep);
  }

  const fieldsV1 = toFieldsV1(appliedSet);
  const unchanged = own !== undefined && deepEqual(merged, base) && deepEqual(own.fieldsV1, fieldsV1);
  const ownEntry: ManagedFieldsEntry = {
    manager,
    operation: 'Apply',
    apiVersion: apiVersionOf(kind),
    time: unchanged ? own.time : opts.now,
    fieldsType: 'FieldsV1',
    fieldsV1,
    ...(opts.subresource ? { subresource: opts.subresource } : {}),
  };
  const next = entries
    .map((entry) => {
      if (entry === own) return ownEntry;
      const other = others.find((o) => o.entry === entry);
      return other ? { ...entry, fieldsV1: toFieldsV1(other.set) } : entry;
    })
    .filter((entry) => Object.keys(entry.fieldsV1).length > 0);
  if (!own) next.push(ownEntry);
  if (next.length > 0) (merged.metadata as Obj).managedFields = next;
  return { object: merged, conflicts: [] };
}

/**
 * The managedFields a write asks for explicitly: a non-empty list that differs from the stored one
 * (kubectl rewrites them this way when it moves client-side apply to server-side apply; `[{}]`
 * resets them). Undefined means "keep the stored ones".
 */
function requestedManagedFields(old: Obj | undefined, next: Obj): ManagedFieldsEntry[] | undefined {
  const requested = isObject(next.metadata) ? next.metadata.managedFields : undefined;
  if (!Array.isArray(requested) || requested.length === 0) return undefined;
  const stored = isObject(old?.metadata) ? old.metadata.managedFields : undefined;
  return deepEqual(requested, stored) ? undefined : managedFieldsOf(next);
}

/**
 * Records a non-apply write (PUT, PATCH, create) by `manager`: the fields whose value it changed
 * move to its `Update` entry, other managers lose them, and fields that no longer exist are
 * dropped from every entry. Returns a copy of `next` carrying the new metadata.managedFields.
 */
export function updateManagedFields(
  old: Obj | undefined,
  next: Obj,
  manager: string,
  operation: 'Update',
  kind: KindInfo,
  now: string,
  subresource?: string,
): Obj {
  const before = withoutManagedFields(old);
  const after = withoutManagedFields(next);
  const nextSet = fieldSetOf(after, kind, { includeStatus: true });
  const changed = [...nextSet].filter((encoded) => {
    const elements = JSON.parse(encoded) as string[];
    const previous = valueAt(before, elements, kind);
    if (!elements[elements.length - 1].startsWith('f:')) return !previous.found;
    return !previous.found || !deepEqual(previous.value, valueAt(after, elements, kind).value);
  });
  const entries = requestedManagedFields(old, next) ?? managedFieldsOf(old);
  let own = entries.find(
    (entry) =>
      entry.manager === manager && entry.operation === operation && entry.subresource === subresource,
  );
  if (!own && changed.length > 0) {
    own = {
      manager,
      operation,
      apiVersion: apiVersionOf(kind),
      time: now,
      fieldsType: 'FieldsV1',
      fieldsV1: {},
      ...(subresource ? { subresource } : {}),
    };
    entries.push(own);
  }
  const result = entries
    .map((entry) => {
      const set = fromFieldsV1(entry.fieldsV1);
      for (const encoded of changed) {
        if (entry === own) set.add(encoded);
        else set.delete(encoded);
      }
      for (const encoded of set) if (!nextSet.has(encoded)) set.delete(encoded);
      const fieldsV1 = toFieldsV1(set);
      const touched = entry === own && changed.length > 0;
      return { ...entry, fieldsV1, ...(touched ? { time: now, apiVersion: apiVersionOf(kind) } : {}) };
    })
    .filter((entry) => Object.keys(entry.fieldsV1).length > 0);
  if (result.length > 0) after.metadata.managedFields = result;
  return after;
}
