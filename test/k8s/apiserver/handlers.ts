/** Handlers for resource requests: get, list, create, update, patch, delete, deletecollection, status and scale. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ApiError, badRequest, methodNotAllowed, notFound, unsupportedMediaType } from './errors.js';
import {
  decodeBody,
  mediaType,
  readBody,
  sendJson,
  sendStatusSuccess,
  type Patcher,
  type ServerContext,
} from './http.js';
import { isObject, mergePatch, type KObject } from './objects.js';
import { apiVersionOf, type ResourceType } from './resources.js';
import { FieldSelector, LabelSelector } from './selectors.js';
import type { DeleteOptions, PropagationPolicy } from './store.js';
import { handleWatch } from './watch.js';

export type Verb = 'get' | 'list' | 'watch' | 'create' | 'update' | 'patch' | 'delete' | 'deletecollection';

/** A parsed resource URL. */
export interface ResourceRequest {
  group: string;
  version: string;
  plural: string;
  namespace: string;
  name?: string;
  subresource?: string;
  /** The legacy `/watch/` path prefix was used. */
  watchPath: boolean;
}

export interface Call {
  ctx: ServerContext;
  req: IncomingMessage;
  res: ServerResponse;
  rr: ResourceRequest;
  t: ResourceType;
  query: URLSearchParams;
  user: string;
}

/** The verb a request maps to, as audit logs and RBAC name it. */
export function verbOf(method: string, rr: ResourceRequest, query: URLSearchParams): Verb | undefined {
  const watch = rr.watchPath || query.get('watch') === 'true' || query.get('watch') === '1';
  switch (method) {
    case 'GET':
      if (watch) return 'watch';
      return rr.name ? 'get' : 'list';
    case 'POST':
      return rr.name ? undefined : 'create';
    case 'PUT':
      return rr.name ? 'update' : undefined;
    case 'PATCH':
      return rr.name ? 'patch' : undefined;
    case 'DELETE':
      return rr.name ? 'delete' : 'deletecollection';
    default:
      return undefined;
  }
}

/** Gives a stored object the apiVersion and kind of the version it is read in. */
export function present(t: ResourceType, version: string, obj: KObject): KObject {
  obj.apiVersion = apiVersionOf(t.group, version);
  obj.kind = t.kind;
  return obj;
}

function wantsTable(call: Call): boolean {
  return Boolean(call.ctx.tableRenderer) && /as=Table/.test(call.req.headers.accept ?? '');
}

function sendObject(call: Call, code: number, obj: Record<string, unknown>): void {
  if (wantsTable(call) && call.ctx.tableRenderer && !call.rr.subresource) {
    const table = call.ctx.tableRenderer(call.t, call.rr.version, obj, call.query);
    sendJson(call.res, code, table, 'application/json;as=Table;v=v1;g=meta.k8s.io');
    return;
  }
  sendJson(call.res, code, obj);
}

function dryRun(query: URLSearchParams): boolean {
  return query.getAll('dryRun').includes('All');
}

/**
 * A body without a namespace takes the request's (before validation, as kube-apiserver's
 * EnsureObjectNamespaceMatchesRequestNamespace does); a different one is a 400.
 */
function fillNamespace(call: Call, obj: KObject): void {
  const ns = obj.metadata.namespace;
  if (!call.t.namespaced || !call.rr.namespace) return;
  if (!ns) obj.metadata.namespace = call.rr.namespace;
  else if (ns !== call.rr.namespace)
    throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
}

async function readObject(call: Call): Promise<KObject> {
  const body = decodeBody(call.ctx, call.req, await readBody(call.req), call.t, call.rr.version);
  if (!isObject(body)) throw badRequest('the request body must be a JSON object');
  const obj = body as KObject;
  if (!isObject(obj.metadata)) obj.metadata = {};
  if (obj.kind !== undefined && obj.kind !== call.t.kind && !call.rr.subresource)
    throw badRequest(`the kind ${String(obj.kind)} in the body does not match ${call.t.kind}`);
  fillNamespace(call, obj);
  if (call.rr.name && obj.metadata.name && obj.metadata.name !== call.rr.name && !call.rr.subresource)
    throw badRequest('the name of the object does not match the name on the URL');
  return obj;
}

function handleGet(call: Call): void {
  const { ctx, rr, t } = call;
  const obj = ctx.store.get(t, rr.namespace, rr.name ?? '');
  sendObject(call, 200, present(t, rr.version, obj));
}

function selectors(query: URLSearchParams): { labelSelector: LabelSelector; fieldSelector: FieldSelector } {
  return {
    labelSelector: LabelSelector.parse(query.get('labelSelector')),
    fieldSelector: FieldSelector.parse(query.get('fieldSelector')),
  };
}

function handleList(call: Call): void {
  const { ctx, rr, t, query } = call;
  const limit = Number(query.get('limit') ?? 0);
  if (!Number.isInteger(limit) || limit < 0) throw badRequest(`invalid limit: ${query.get('limit')}`);
  const result = ctx.store.list(t, {
    namespace: rr.namespace,
    ...selectors(query),
    limit,
    continue: query.get('continue') ?? undefined,
  });
  const metadata: Record<string, unknown> = { resourceVersion: result.resourceVersion };
  if (result.continue) metadata.continue = result.continue;
  if (result.remainingItemCount !== undefined) metadata.remainingItemCount = result.remainingItemCount;
  sendObject(call, 200, {
    kind: t.listKind,
    apiVersion: apiVersionOf(t.group, rr.version),
    metadata,
    items: result.items.map((o) => present(t, rr.version, o)),
  });
}

/** The field manager of a write: `fieldManager`, else the user agent's program name. */
function managerOf(call: Call): string {
  const given = call.query.get('fieldManager');
  if (given) return given;
  const ua = call.req.headers['user-agent'] ?? '';
  return ua.split('/')[0] || 'unknown';
}

/** Runs the body validator (schema validation of custom resources); warnings become Warning headers. */
function validated(call: Call, obj: KObject): KObject {
  const validator = call.ctx.validator;
  if (!validator) return obj;
  const { object, warnings } = validator(call.t, call.rr.version, obj, call.query);
  if (warnings.length)
    call.res.setHeader(
      'Warning',
      warnings.map((w) => `299 - ${JSON.stringify(w)}`),
    );
  return object;
}

/** Lets the field tracker (managedFields) see a non-apply write. */
function track(call: Call, old: KObject | undefined, next: KObject): KObject {
  const tracker = call.ctx.fieldTracker;
  if (!tracker) return next;
  return tracker(call.t, call.rr.version, old, next, managerOf(call), call.rr.subresource);
}

function currentOrUndefined(call: Call): KObject | undefined {
  try {
    return present(
      call.t,
      call.rr.version,
      call.ctx.store.get(call.t, call.rr.namespace, call.rr.name ?? ''),
    );
  } catch (err) {
    if (err instanceof ApiError && err.code === 404) return undefined;
    throw err;
  }
}

async function handleCreate(call: Call): Promise<void> {
  const { ctx, rr, t, query } = call;
  const obj = track(call, undefined, validated(call, await readObject(call)));
  const created = ctx.store.create(t, rr.namespace, obj, { dryRun: dryRun(query) });
  sendObject(call, 201, present(t, rr.version, created));
}

async function handleUpdate(call: Call): Promise<void> {
  const { ctx, rr, t, query } = call;
  const body = await readObject(call);
  if (rr.subresource === 'scale') return writeScale(call, body);
  const obj = validated(call, body);
  const old = currentOrUndefined(call);
  const updated = ctx.store.update(t, rr.namespace, rr.name ?? '', old ? track(call, old, obj) : obj, {
    subresource: rr.subresource === 'status' ? 'status' : undefined,
    dryRun: dryRun(query),
  });
  sendObject(call, 200, present(t, rr.version, updated));
}

/** Strategic merge patch for kinds without lists (ConfigMap, Secret): merge patch minus the `$` directives. */
function strategicAsMerge(patch: unknown): unknown {
  if (Array.isArray(patch)) return patch.map(strategicAsMerge);
  if (!isObject(patch)) return patch;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(patch)) if (!k.startsWith('$')) out[k] = strategicAsMerge(v);
  return out;
}

const NO_LIST_KINDS = new Set(['ConfigMap', 'Secret']);

function parsePatchJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw badRequest(`error decoding patch: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** The patchers built in: JSON merge patch for every kind, strategic merge patch for ConfigMap and Secret. */
export function defaultPatchers(): Map<string, Patcher> {
  return new Map<string, Patcher>([
    [
      'application/merge-patch+json',
      (current, body, { t }) => {
        if (!current) throw notFound(t, '');
        return mergePatch(current, parsePatchJson(body)) as KObject;
      },
    ],
    [
      'application/strategic-merge-patch+json',
      (current, body, { t }) => {
        if (t.group !== '' || !NO_LIST_KINDS.has(t.kind))
          throw unsupportedMediaType('application/strategic-merge-patch+json', [
            'application/merge-patch+json',
          ]);
        if (!current) throw notFound(t, '');
        return mergePatch(current, strategicAsMerge(parsePatchJson(body))) as KObject;
      },
    ],
  ]);
}

async function handlePatch(call: Call): Promise<void> {
  const { ctx, req, rr, t, query, user } = call;
  const type = mediaType(req.headers['content-type']);
  const patcher = ctx.patchers.get(type);
  if (!patcher) throw unsupportedMediaType(type, [...ctx.patchers.keys()]);
  const body = await readBody(req);
  const name = rr.name ?? '';
  const current = currentOrUndefined(call);
  if (rr.subresource === 'scale') {
    if (!current) throw notFound(t, name);
    const scale = patcher(scaleOf(t, current), body, { t, version: rr.version, query, user });
    return writeScale(call, scale);
  }
  let patched: KObject;
  try {
    patched = patcher(current, body, { t, version: rr.version, query, user, subresource: rr.subresource });
  } catch (err) {
    if (err instanceof ApiError && err.code === 404) throw notFound(t, name);
    throw err;
  }
  if (!isObject(patched.metadata)) patched.metadata = {};
  if (patched.metadata.name && patched.metadata.name !== name)
    throw badRequest('the name of the object cannot be changed by a patch');
  patched.metadata.name = name;
  fillNamespace(call, patched);
  patched = validated(call, patched);
  if (type !== 'application/apply-patch+yaml') patched = track(call, current, patched);
  const opts = {
    subresource: rr.subresource === 'status' ? ('status' as const) : undefined,
    dryRun: dryRun(query),
  };
  const result = current
    ? ctx.store.update(t, rr.namespace, name, patched, opts)
    : ctx.store.create(t, rr.namespace, patched, opts);
  sendObject(call, current ? 200 : 201, present(t, rr.version, result));
}

async function deleteOptions(call: Call): Promise<DeleteOptions> {
  const { req, query } = call;
  const body = await readBody(req);
  let opts: Record<string, unknown> = {};
  if (body.length) {
    const decoded = decodeBody(call.ctx, req, body);
    if (isObject(decoded)) opts = decoded;
  }
  const policy = (opts.propagationPolicy ?? query.get('propagationPolicy') ?? undefined) as
    PropagationPolicy | undefined;
  if (policy && !['Background', 'Foreground', 'Orphan'].includes(policy))
    throw badRequest(`propagationPolicy: Unsupported value: "${policy}"`);
  const orphan = opts.orphanDependents ?? query.get('orphanDependents');
  const dry = Array.isArray(opts.dryRun) ? opts.dryRun.includes('All') : dryRun(query);
  return {
    propagationPolicy: policy ?? (orphan === true || orphan === 'true' ? 'Orphan' : undefined),
    preconditions: isObject(opts.preconditions)
      ? (opts.preconditions as DeleteOptions['preconditions'])
      : undefined,
    dryRun: dry,
  };
}

async function handleDelete(call: Call): Promise<void> {
  const { ctx, rr, t } = call;
  const opts = await deleteOptions(call);
  const obj = ctx.store.delete(t, rr.namespace, rr.name ?? '', opts);
  sendObject(call, 200, present(t, rr.version, obj));
}

async function handleDeleteCollection(call: Call): Promise<void> {
  const { ctx, rr, t, query } = call;
  const opts = await deleteOptions(call);
  const { items } = ctx.store.list(t, { namespace: rr.namespace, ...selectors(query) });
  for (const obj of items) {
    try {
      ctx.store.delete(t, obj.metadata.namespace ?? '', obj.metadata.name ?? '', opts);
    } catch (err) {
      if (!(err instanceof ApiError && err.code === 404)) throw err;
    }
  }
  sendStatusSuccess(call.res);
}

function readPath(obj: unknown, path: string): unknown {
  return path
    .split('.')
    .filter((p) => p)
    .reduce<unknown>((cur, p) => (isObject(cur) ? cur[p] : undefined), obj);
}

function writePath(obj: Record<string, unknown>, path: string, value: unknown): void {
  const parts = path.split('.').filter((p) => p);
  let cur = obj;
  for (const p of parts.slice(0, -1)) {
    if (!isObject(cur[p])) cur[p] = {};
    cur = cur[p] as Record<string, unknown>;
  }
  cur[parts[parts.length - 1]] = value;
}

/** The autoscaling/v1 Scale view of an object. */
function scaleOf(t: ResourceType, obj: KObject): KObject {
  const s = t.scale ?? { specReplicasPath: '.spec.replicas', statusReplicasPath: '.status.replicas' };
  const selector = s.labelSelectorPath ? readPath(obj, s.labelSelectorPath) : undefined;
  const m = obj.metadata;
  return {
    kind: 'Scale',
    apiVersion: 'autoscaling/v1',
    metadata: {
      name: m.name,
      namespace: m.namespace,
      uid: m.uid,
      resourceVersion: m.resourceVersion,
      creationTimestamp: m.creationTimestamp,
    },
    spec: { replicas: Number(readPath(obj, s.specReplicasPath) ?? 0) },
    status: {
      replicas: Number(readPath(obj, s.statusReplicasPath) ?? 0),
      ...(typeof selector === 'string' ? { selector } : {}),
    },
  };
}

function handleGetScale(call: Call): void {
  const { ctx, rr, t } = call;
  sendJson(call.res, 200, scaleOf(t, ctx.store.get(t, rr.namespace, rr.name ?? '')));
}

function writeScale(call: Call, scale: KObject): void {
  const { ctx, rr, t, query } = call;
  const replicas = (scale.spec as { replicas?: unknown } | undefined)?.replicas;
  if (typeof replicas !== 'number' || !Number.isInteger(replicas) || replicas < 0)
    throw new ApiError(
      422,
      'Invalid',
      `Scale "${rr.name}" is invalid: spec.replicas: Invalid value: must be a non-negative integer`,
    );
  const obj = ctx.store.get(t, rr.namespace, rr.name ?? '');
  if (scale.metadata?.resourceVersion) obj.metadata.resourceVersion = scale.metadata.resourceVersion;
  writePath(obj, (t.scale?.specReplicasPath ?? '.spec.replicas').slice(1), replicas);
  const updated = ctx.store.update(t, rr.namespace, rr.name ?? '', obj, { dryRun: dryRun(query) });
  sendJson(call.res, 200, scaleOf(t, updated));
}

function checkSubresource(t: ResourceType, sub: string | undefined, verb: Verb): void {
  if (!sub) return;
  const served = (sub === 'status' && t.statusSubresource) || (sub === 'scale' && t.scale !== undefined);
  if (!served) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
  if (!['get', 'update', 'patch'].includes(verb)) throw methodNotAllowed();
}

/** Dispatches one resource request by verb. */
export async function handleResource(call: Call, verb: Verb): Promise<void> {
  checkSubresource(call.t, call.rr.subresource, verb);
  switch (verb) {
    case 'get':
      return call.rr.subresource === 'scale' ? handleGetScale(call) : handleGet(call);
    case 'list':
      return handleList(call);
    case 'watch':
      return handleWatch(call);
    case 'create':
      return handleCreate(call);
    case 'update':
      return handleUpdate(call);
    case 'patch':
      return handlePatch(call);
    case 'delete':
      return handleDelete(call);
    case 'deletecollection':
      return handleDeleteCollection(call);
  }
}
