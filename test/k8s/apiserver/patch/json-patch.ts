/** JSON merge patch (RFC 7386) and JSON patch (RFC 6902). */
import { clone, deepEqual, isObject, mergePatch as objectsMergePatch } from '../objects.js';
import { PatchError, type Obj } from './core.js';

/** RFC 7386 JSON merge patch: objects merge recursively, `null` deletes, anything else replaces (on copies). */
export function mergePatch(target: unknown, patch: unknown): unknown {
  return clone(objectsMergePatch(target, patch));
}

/** Splits an RFC 6901 JSON pointer into unescaped reference tokens. */
export function parsePointer(pointer: unknown): string[] {
  if (typeof pointer !== 'string') throw new PatchError(422, 'JSON pointer must be a string', 'Invalid');
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) {
    throw new PatchError(422, `invalid JSON pointer ${JSON.stringify(pointer)}`, 'Invalid');
  }
  return pointer
    .slice(1)
    .split('/')
    .map((token) => token.replace(/~1/g, '/').replace(/~0/g, '~'));
}

/** The array index a token names; `allowEnd` accepts `-` and `length` (for add). */
function arrayIndex(list: unknown[], token: string, allowEnd: boolean, pointer: string): number {
  const end = allowEnd ? list.length : list.length - 1;
  if (token === '-' && allowEnd) return list.length;
  if (!/^(0|[1-9][0-9]*)$/.test(token) || Number(token) > end) {
    throw new PatchError(422, `array index ${JSON.stringify(token)} out of range in ${pointer}`, 'Invalid');
  }
  return Number(token);
}

/** The container holding the last token of `tokens` (which must exist). */
function parentOf(doc: unknown, tokens: string[], pointer: string): Obj | unknown[] {
  let node = doc;
  for (const token of tokens.slice(0, -1)) {
    if (Array.isArray(node)) node = node[arrayIndex(node, token, false, pointer)];
    else if (isObject(node) && token in node) node = node[token];
    else throw new PatchError(422, `path ${pointer} does not exist`, 'Invalid');
  }
  if (!isObject(node) && !Array.isArray(node)) {
    throw new PatchError(422, `path ${pointer} does not exist`, 'Invalid');
  }
  return node;
}

function pointerGet(doc: unknown, pointer: string): unknown {
  const tokens = parsePointer(pointer);
  if (tokens.length === 0) return doc;
  const parent = parentOf(doc, tokens, pointer);
  const last = tokens[tokens.length - 1];
  if (Array.isArray(parent)) return parent[arrayIndex(parent, last, false, pointer)];
  if (!(last in parent)) throw new PatchError(422, `path ${pointer} does not exist`, 'Invalid');
  return parent[last];
}

/** Adds (or for objects, sets) `value` at `pointer`; returns the new document. */
function pointerAdd(doc: unknown, pointer: string, value: unknown): unknown {
  const tokens = parsePointer(pointer);
  if (tokens.length === 0) return value;
  const parent = parentOf(doc, tokens, pointer);
  const last = tokens[tokens.length - 1];
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, true, pointer), 0, value);
  else parent[last] = value;
  return doc;
}

function pointerRemove(doc: unknown, pointer: string): void {
  const tokens = parsePointer(pointer);
  if (tokens.length === 0) throw new PatchError(422, 'cannot remove the whole document', 'Invalid');
  const parent = parentOf(doc, tokens, pointer);
  const last = tokens[tokens.length - 1];
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, false, pointer), 1);
  else if (last in parent) delete parent[last];
  else throw new PatchError(422, `path ${pointer} does not exist`, 'Invalid');
}

interface JsonPatchOp {
  op: string;
  path: string;
  from?: string;
  value?: unknown;
}

function validateOp(raw: unknown, index: number): JsonPatchOp {
  const bad = (why: string): PatchError =>
    new PatchError(422, `json patch operation ${index}: ${why}`, 'Invalid');
  if (!isObject(raw)) throw bad('not an object');
  if (typeof raw.op !== 'string') throw bad('missing "op"');
  if (typeof raw.path !== 'string') throw bad('missing "path"');
  if (['add', 'replace', 'test'].includes(raw.op) && !('value' in raw)) throw bad('missing "value"');
  if (['move', 'copy'].includes(raw.op) && typeof raw.from !== 'string') throw bad('missing "from"');
  if (!['add', 'remove', 'replace', 'move', 'copy', 'test'].includes(raw.op))
    throw bad(`unknown op ${raw.op}`);
  return raw as unknown as JsonPatchOp;
}

/** Applies one validated operation to `doc` (mutating it); returns the new document. */
function applyOp(doc: unknown, op: JsonPatchOp): unknown {
  switch (op.op) {
    case 'add':
      return pointerAdd(doc, op.path, clone(op.value));
    case 'remove':
      pointerRemove(doc, op.path);
      return doc;
    case 'replace':
      pointerGet(doc, op.path);
      if (op.path === '') return clone(op.value);
      pointerRemove(doc, op.path);
      return pointerAdd(doc, op.path, clone(op.value));
    case 'move': {
      const from = op.from as string;
      if (op.path.startsWith(`${from}/`)) {
        throw new PatchError(422, `cannot move ${from} into its own child ${op.path}`, 'Invalid');
      }
      const value = pointerGet(doc, from);
      if (from === op.path) return doc;
      pointerRemove(doc, from);
      return pointerAdd(doc, op.path, value);
    }
    case 'copy':
      return pointerAdd(doc, op.path, clone(pointerGet(doc, op.from as string)));
    default: {
      const actual = pointerGet(doc, op.path);
      if (!deepEqual(actual, op.value)) {
        throw new PatchError(422, `test operation failed at ${op.path}`, 'Invalid');
      }
      return doc;
    }
  }
}

/**
 * RFC 6902 JSON patch. As in Kubernetes, a body that is not a list of operations is 400 and every
 * failure while applying (bad op, missing path, failed `test`) is 422.
 */
export function jsonPatch(target: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops))
    throw new PatchError(400, 'json patch must be an array of operations', 'BadRequest');
  const validated = ops.map(validateOp);
  let doc = clone(target);
  for (const op of validated) doc = applyOp(doc, op);
  return doc;
}
