/** Plugs the patch machinery (patch.ts) and the protobuf reader (protobuf.ts) into the server's seams. */
import { ApiError, badRequest, notFound, unsupportedMediaType, type StatusDetails } from './errors.js';
import type { BodyDecoder, FieldTracker, Patcher } from './http.js';
import { isObject, nowTimestamp, type KObject } from './objects.js';
import {
  applyConflictStatus,
  jsonPatch,
  mergePatch,
  PatchError,
  serverSideApply,
  strategicMergePatch,
  supportsStrategicMerge,
  updateManagedFields,
} from './patch.js';
import {
  decodeK8sProtobuf,
  K8S_PROTOBUF_CONTENT_TYPE,
  K8sProtobufDecodeError,
  K8sProtobufUnsupportedKindError,
} from './protobuf.js';
import { parse as parseYaml } from 'yaml';

const SMP = 'application/strategic-merge-patch+json';

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw badRequest(`error decoding patch: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** Runs patch.ts code, turning its PatchErrors into Status answers. */
function guarded<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof PatchError) throw new ApiError(err.code, err.reason, err.message);
    throw err;
  }
}

const patchers: [string, Patcher][] = [
  [
    'application/merge-patch+json',
    (current, body, { t }) => {
      if (!current) throw notFound(t, '');
      return guarded(() => mergePatch(current, parseJson(body)) as KObject);
    },
  ],
  [
    'application/json-patch+json',
    (current, body, { t }) => {
      if (!current) throw notFound(t, '');
      return guarded(() => jsonPatch(current, parseJson(body)) as KObject);
    },
  ],
  [
    SMP,
    (current, body, { t, version }) => {
      const kind = { group: t.group, version, kind: t.kind };
      if (!supportsStrategicMerge(kind) || t.crd)
        throw unsupportedMediaType(SMP, ['application/merge-patch+json']);
      if (!current) throw notFound(t, '');
      const patch = parseJson(body);
      if (!isObject(patch)) throw badRequest('strategic merge patch must be an object');
      return guarded(() => strategicMergePatch(current, patch, kind) as KObject);
    },
  ],
  [
    'application/apply-patch+yaml',
    (current, body, { t, version, query, subresource }) => {
      const manager = query.get('fieldManager');
      if (!manager) throw badRequest('PATCH with apply requires the fieldManager query parameter');
      const applied = guarded(() => parseYaml(body.toString('utf8')) as unknown);
      if (!isObject(applied)) throw badRequest('the apply body must be an object');
      const result = guarded(() =>
        serverSideApply(current, applied, {
          manager,
          force: query.get('force') === 'true',
          kind: { group: t.group, version, kind: t.kind },
          now: nowTimestamp(),
          statusSubresource: t.statusSubresource,
          subresource: subresource === 'status' ? 'status' : undefined,
        }),
      );
      if (result.conflicts.length) {
        const status = applyConflictStatus(result.conflicts);
        throw new ApiError(409, 'Conflict', String(status.message), status.details as StatusDetails);
      }
      return result.object as KObject;
    },
  ],
];

/** Adds JSON patch, strategic merge patch for built-in kinds and server-side apply. */
export function installPatchers(target: Map<string, Patcher>): void {
  for (const [type, patcher] of patchers) target.set(type, patcher);
}

const protobufDecoder: BodyDecoder = (body) => {
  try {
    return decodeK8sProtobuf(body);
  } catch (err) {
    if (err instanceof K8sProtobufUnsupportedKindError)
      throw new ApiError(415, 'UnsupportedMediaType', err.message);
    if (err instanceof K8sProtobufDecodeError) throw badRequest(err.message);
    throw err;
  }
};

/** Adds `application/vnd.kubernetes.protobuf` bodies (Secret, ConfigMap, Namespace, ServiceAccount, DeleteOptions, TokenRequest). */
export function installProtobuf(target: Map<string, BodyDecoder>): void {
  target.set(K8S_PROTOBUF_CONTENT_TYPE, protobufDecoder);
}

/** Records non-apply writes in metadata.managedFields (operation Update), as kube-apiserver does. */
export const managedFieldsTracker: FieldTracker = (t, version, old, next, manager, subresource) =>
  guarded(
    () =>
      updateManagedFields(
        old,
        next,
        manager,
        'Update',
        { group: t.group, version, kind: t.kind },
        nowTimestamp(),
        subresource,
      ) as KObject,
  );
