/** What the kubelet's controllers and pod runtime share: the store, the kinds, error handling. */
import { ApiError } from '../apiserver/errors.js';
import type { KObject } from '../apiserver/objects.js';
import type { ResourceType } from '../apiserver/resources.js';
import type { ApiServer } from '../apiserver/server.js';

/** The parts of the API server the kubelet uses (`url` etc. for pods' ServiceAccount credentials). */
export type KubeletServer = Pick<ApiServer, 'store' | 'registry'> &
  Partial<Pick<ApiServer, 'url' | 'serviceAccountToken' | 'setPodLogSource'>> & { caCert?: string };

export type Store = ApiServer['store'];

export interface Kinds {
  pod: ResourceType;
  statefulSet: ResourceType;
  deployment: ResourceType;
  replicaSet: ResourceType;
  configMap: ResourceType;
  secret: ResourceType;
  claim: ResourceType;
  serviceAccount: ResourceType;
  namespace: ResourceType;
}

export function kindsOf(registry: ApiServer['registry']): Kinds {
  const find = (group: string, resource: string) => registry.find(group, 'v1', resource) as ResourceType;
  return {
    pod: find('', 'pods'),
    statefulSet: find('apps', 'statefulsets'),
    deployment: find('apps', 'deployments'),
    replicaSet: find('apps', 'replicasets'),
    configMap: find('', 'configmaps'),
    secret: find('', 'secrets'),
    claim: find('', 'persistentvolumeclaims'),
    serviceAccount: find('', 'serviceaccounts'),
    namespace: find('', 'namespaces'),
  };
}

export interface Context {
  store: Store;
  kinds: Kinds;
  /** spec.nodeName of the pods the kubelet runs. */
  nodeName: string;
  onError: (err: unknown) => void;
  /** Runs `fn`, handing what it throws to onError (unless stopped). */
  guard: (fn: () => void) => void;
  /** Set once `stop()` was called. */
  stopped: boolean;
}

export function podExists(ctx: Context, ns: string, name: string): boolean {
  try {
    ctx.store.get(ctx.kinds.pod, ns, name);
    return true;
  } catch {
    return false;
  }
}

/** Deletes a pod (that very one: uid precondition); gone or replaced meanwhile is fine. */
export function deletePod(ctx: Context, pod: KObject): void {
  try {
    ctx.store.delete(ctx.kinds.pod, pod.metadata.namespace ?? '', pod.metadata.name ?? '', {
      preconditions: { uid: pod.metadata.uid },
    });
  } catch (err) {
    if (!(err instanceof ApiError && (err.code === 404 || err.code === 409))) throw err;
  }
}

/** Writes an object's status subresource (`status` replaces the whole status). */
export function writeStatus(ctx: Context, t: ResourceType, obj: KObject, status: unknown): void {
  ctx.store.update(
    t,
    obj.metadata.namespace ?? '',
    obj.metadata.name ?? '',
    { ...obj, metadata: { ...obj.metadata, resourceVersion: undefined }, status },
    { subresource: 'status' },
  );
}
