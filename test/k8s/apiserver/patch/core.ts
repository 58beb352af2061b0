/**
 * What every part of the patch machinery shares: the error, the kind being patched, and the merge
 * rules of lists and maps (built from the kind descriptors, kinds/).
 */
import { DESCRIPTORS, KUBERNETES_GROUPS, type ListRule } from '../kinds/index.js';

export type { ListRule };

/** A JSON object. */
export type Obj = Record<string, unknown>;

/** A patch that the server must reject; `code` and `reason` map onto a metav1.Status. */
export class PatchError extends Error {
  constructor(
    readonly code: 400 | 409 | 422,
    message: string,
    readonly reason: 'BadRequest' | 'Conflict' | 'Invalid',
  ) {
    super(message);
    this.name = 'PatchError';
  }
}

/** The group/version/kind of the object being patched. */
export interface KindInfo {
  group: string;
  version: string;
  kind: string;
}

export function joinPath(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

/**
 * The list table, keyed `<scope>:<path pattern>`. A path pattern is the dotted field path with `[]`
 * after each list, e.g. `spec.template.spec.containers[].env`. Scope `*` is every kind (ObjectMeta),
 * `builtin` every built-in kind, otherwise one built-in kind (its descriptor's `merge.lists`).
 */
function buildListTable(): Record<string, ListRule> {
  const table: Record<string, ListRule> = {
    '*:metadata.ownerReferences': { mergeKey: 'uid' },
    '*:metadata.finalizers': { set: true },
    'builtin:status.conditions': { mergeKey: 'type' },
  };
  for (const d of DESCRIPTORS) {
    for (const [path, rule] of Object.entries(d.merge?.lists ?? {})) table[`${d.kind}:${path}`] = rule;
  }
  return table;
}

/**
 * Maps that server-side apply owns and replaces as a whole (the descriptors' `merge.atomicMaps`):
 * metav1.LabelSelector is `structType=atomic` wherever it appears, Service and ReplicationController
 * selectors are `mapType=atomic`. Keyed like the list table.
 */
function atomicMapPaths(): Record<string, true> {
  const table: Record<string, true> = {};
  for (const d of DESCRIPTORS)
    for (const path of d.merge?.atomicMaps ?? []) table[`${d.kind}:${path}`] = true;
  return table;
}

const LIST_TABLE = buildListTable();
const ATOMIC_MAPS = atomicMapPaths();

/** True for kinds Kubernetes serves itself; custom resources get 415 for strategic merge patch. */
export function supportsStrategicMerge(kind: KindInfo): boolean {
  return KUBERNETES_GROUPS.has(kind.group);
}

/** The merge rule of the list at `path` (a path pattern) in `kind`; undefined means atomic. */
export function listRule(kind: KindInfo, path: string): ListRule | undefined {
  if (supportsStrategicMerge(kind)) {
    const rule = LIST_TABLE[`${kind.kind}:${path}`] ?? LIST_TABLE[`builtin:${path}`];
    if (rule) return rule;
  }
  return LIST_TABLE[`*:${path}`];
}

export function isAtomicMap(kind: KindInfo, path: string): boolean {
  return supportsStrategicMerge(kind) && ATOMIC_MAPS[`${kind.kind}:${path}`] === true;
}

/**
 * Every merge rule that applies to `kind`, by path pattern, and its atomic maps: for an OpenAPI
 * document that wants to advertise the same `x-kubernetes-patch-merge-key` / `list-type` data.
 */
export function mergeRulesFor(kind: KindInfo): { lists: Record<string, ListRule>; atomicMaps: string[] } {
  const lists: Record<string, ListRule> = {};
  const builtin = supportsStrategicMerge(kind);
  for (const [key, rule] of Object.entries(LIST_TABLE)) {
    const [scope, pattern] = [key.slice(0, key.indexOf(':')), key.slice(key.indexOf(':') + 1)];
    if (scope === '*' || (builtin && (scope === 'builtin' || scope === kind.kind))) lists[pattern] = rule;
  }
  const atomicMaps = Object.keys(ATOMIC_MAPS)
    .filter((key) => builtin && key.startsWith(`${kind.kind}:`))
    .map((key) => key.slice(kind.kind.length + 1));
  return { lists, atomicMaps };
}
