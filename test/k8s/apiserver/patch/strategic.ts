/** Strategic merge patch, as kubectl sends it (lists merge by the keys in the kinds' merge rules). */
import { clone, deepEqual, isObject } from '../objects.js';
import { joinPath, listRule, PatchError, supportsStrategicMerge, type KindInfo, type Obj } from './core.js';
import { mergePatch } from './json-patch.js';

const PATCH_DIRECTIVE = '$patch';
const RETAIN_KEYS = '$retainKeys';
const SET_ORDER = '$setElementOrder/';
const DELETE_PRIMITIVE = '$deleteFromPrimitiveList/';

/**
 * Strategic merge patch as kubectl sends it. Built-in kinds merge lists by the keys in the list
 * table; custom resources fall back to JSON merge patch (the server should answer 415 first, see
 * {@link supportsStrategicMerge}).
 */
export function strategicMergePatch(target: Obj, patch: Obj, kind: KindInfo): Obj {
  if (!supportsStrategicMerge(kind)) return mergePatch(target, patch) as Obj;
  if (!isObject(patch)) throw new PatchError(400, 'strategic merge patch must be an object', 'BadRequest');
  return smpMap(isObject(target) ? target : {}, patch, '', kind) ?? {};
}

/** Merges a patch map into an original map; undefined means "delete this map" ($patch: delete). */
function smpMap(original: Obj, patch: Obj, path: string, kind: KindInfo): Obj | undefined {
  const directive = patch[PATCH_DIRECTIVE];
  if (directive === 'delete') return undefined;
  if (directive === 'replace') {
    const rest = { ...patch };
    delete rest[PATCH_DIRECTIVE];
    return smpMap({}, rest, path, kind);
  }
  if (directive !== undefined && directive !== 'merge') {
    throw new PatchError(400, `unknown $patch directive ${JSON.stringify(directive)}`, 'BadRequest');
  }
  const result = clone(original);
  applyRetainKeys(result, patch[RETAIN_KEYS]);
  applyDeleteFromPrimitiveLists(result, patch);
  for (const [key, value] of Object.entries(patch)) {
    if (key.startsWith('$')) continue;
    if (value === null) {
      delete result[key];
      continue;
    }
    const merged = smpValue(result[key], value, joinPath(path, key), kind);
    if (merged === undefined) delete result[key];
    else result[key] = merged;
  }
  applySetElementOrders(result, patch, path, kind);
  return result;
}

/** `$retainKeys: [...]` drops every key of the original not listed. */
function applyRetainKeys(result: Obj, retain: unknown): void {
  if (retain === undefined) return;
  if (!Array.isArray(retain)) throw new PatchError(400, '$retainKeys must be a list', 'BadRequest');
  for (const key of Object.keys(result)) if (!retain.includes(key)) delete result[key];
}

/** `$deleteFromPrimitiveList/<list>: [...]` removes those values from a list of primitives. */
function applyDeleteFromPrimitiveLists(result: Obj, patch: Obj): void {
  for (const [key, values] of Object.entries(patch)) {
    if (!key.startsWith(DELETE_PRIMITIVE)) continue;
    const field = key.slice(DELETE_PRIMITIVE.length);
    const list = result[field];
    if (!Array.isArray(list) || !Array.isArray(values)) continue;
    result[field] = list.filter((item) => !values.some((value) => deepEqual(value, item)));
  }
}

/** `$setElementOrder/<list>: [...]` orders the merged list; unlisted items keep their order, last. */
function applySetElementOrders(result: Obj, patch: Obj, path: string, kind: KindInfo): void {
  for (const [key, order] of Object.entries(patch)) {
    if (!key.startsWith(SET_ORDER)) continue;
    const field = key.slice(SET_ORDER.length);
    const list = result[field];
    if (!Array.isArray(list) || !Array.isArray(order)) continue;
    const mergeKey = listRule(kind, joinPath(path, field))?.mergeKey;
    const identity = (item: unknown): string =>
      JSON.stringify(mergeKey !== undefined && isObject(item) ? item[mergeKey] : item);
    const wanted = order.map(identity);
    const rank = (item: unknown): number => {
      const at = wanted.indexOf(identity(item));
      return at < 0 ? wanted.length : at;
    };
    result[field] = list
      .map((item, index) => ({ item, index }))
      .sort((a, b) => rank(a.item) - rank(b.item) || a.index - b.index)
      .map(({ item }) => item);
  }
}

/** Merges one patch value (not null) into the original value at `path`. */
function smpValue(original: unknown, patch: unknown, path: string, kind: KindInfo): unknown {
  if (isObject(patch)) return smpMap(isObject(original) ? original : {}, patch, path, kind);
  if (!Array.isArray(patch)) return clone(patch);
  const rule = listRule(kind, path);
  const base = Array.isArray(original) ? original : [];
  if (rule?.mergeKey !== undefined) return smpKeyedList(base, patch, rule.mergeKey, `${path}[]`, kind);
  if (rule?.set) return smpPrimitiveList(base, patch);
  return clone(patch);
}

/** Is this list element the bare `{"$patch": "replace"}` that makes the patch list replace the list? */
function isListReplace(item: unknown): boolean {
  return isObject(item) && item[PATCH_DIRECTIVE] === 'replace' && Object.keys(item).length === 1;
}

/**
 * Merges a list of maps by `mergeKey`: a bare `{$patch: replace}` element replaces the list, an
 * item with `$patch: delete` deletes the item with its key, `$patch: replace` on an item replaces it.
 */
function smpKeyedList(
  original: unknown[],
  patch: unknown[],
  mergeKey: string,
  path: string,
  kind: KindInfo,
): unknown[] {
  const result: unknown[] = patch.some(isListReplace) ? [] : clone(original);
  for (const item of patch) {
    if (!isObject(item)) throw new PatchError(400, `list ${path} must hold objects`, 'BadRequest');
    if (isListReplace(item)) continue;
    const key = item[mergeKey];
    if (key === undefined) {
      throw new PatchError(400, `an item of ${path} has no merge key "${mergeKey}"`, 'BadRequest');
    }
    const at = result.findIndex((existing) => isObject(existing) && deepEqual(existing[mergeKey], key));
    if (item[PATCH_DIRECTIVE] === 'delete') {
      if (at >= 0) result.splice(at, 1);
      continue;
    }
    const merged = smpMap(at >= 0 ? (result[at] as Obj) : {}, item, path, kind);
    if (merged === undefined) continue;
    if (at >= 0) result[at] = merged;
    else result.push(merged);
  }
  return result;
}

/** Merges a list of primitives: the union, original items first (`{$patch: replace}` replaces). */
function smpPrimitiveList(original: unknown[], patch: unknown[]): unknown[] {
  const result = patch.some(isListReplace) ? [] : clone(original);
  for (const item of patch) {
    if (isObject(item)) continue; // directives
    if (!result.some((existing) => deepEqual(existing, item))) result.push(clone(item));
  }
  return result;
}
