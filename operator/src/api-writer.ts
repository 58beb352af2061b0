/**
 * The API writes both controllers make: server-side apply of what differs from the informer cache,
 * status only when it changed (so a fleet at rest costs no writes), merge patches and deletes, and
 * which optional kinds (ServiceMonitor, Cilium egress policies) the cluster has.
 */
import {
  ApiException,
  CoreV1Api,
  CustomObjectsApi,
  KubernetesObjectApi,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type KubernetesObject,
} from '@kubernetes/client-node';
import { FIELD_MANAGER, GROUP, VERSION } from './constants.js';
import type { KObject } from './objects.js';
import type { Caches } from './cache.js';
import { isSubset, mergePatchFor, stableJson } from './objects.js';

/** The kinds the operator has an informer for: apply compares with the cache. */
const INFORMED: Record<string, keyof Caches> = {
  ConfigMap: 'configmaps',
  Secret: 'secrets',
  Service: 'services',
  StatefulSet: 'statefulsets',
  PodDisruptionBudget: 'pdbs',
};

export class ApiWriter {
  readonly objects: KubernetesObjectApi;
  readonly core: CoreV1Api;
  private readonly custom: CustomObjectsApi;
  /** Objects of kinds without an informer, as last applied by this process. */
  private readonly applied = new Map<string, string>();
  optionalKinds = { serviceMonitor: false, ciliumEgress: false, checkedAt: 0 };

  constructor(
    kc: KubeConfig,
    private readonly caches: () => Caches,
  ) {
    this.objects = KubernetesObjectApi.makeApiClient(kc);
    this.custom = kc.makeApiClient(CustomObjectsApi);
    this.core = kc.makeApiClient(CoreV1Api);
  }

  /** Server-side apply of `obj` unless the cached object already has every field we set. */
  async apply(obj: KObject): Promise<boolean> {
    const inf = INFORMED[obj.kind];
    const cached = inf ? this.caches()[inf].get(obj.metadata.namespace, obj.metadata.name) : undefined;
    if (cached && isSubset(obj, cached)) return false;
    // kinds without an informer (ServiceMonitor, Cilium policies): skip what this process applied last
    const key = `${obj.apiVersion}/${obj.kind}/${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
    const json = stableJson(obj);
    if (!inf && this.applied.get(key) === json) return false;
    await this.objects.patch(
      obj as KubernetesObject,
      undefined,
      undefined,
      FIELD_MANAGER,
      true,
      PatchStrategy.ServerSideApply,
    );
    if (!inf) this.applied.set(key, json);
    return true;
  }

  /** Creates `obj`; an object of that name that exists already is left as it is. Returns whether it created it. */
  async createIfAbsent(obj: KObject): Promise<boolean> {
    try {
      await this.objects.create(obj as KubernetesObject, undefined, undefined, FIELD_MANAGER);
      return true;
    } catch (e) {
      if (e instanceof ApiException && e.code === 409) return false;
      throw e;
    }
  }

  /** A JSON merge patch of `obj` (apiVersion, kind, metadata name and namespace, and what changes). */
  async mergePatch(obj: KubernetesObject): Promise<void> {
    await this.objects.patch(obj, undefined, undefined, FIELD_MANAGER, undefined, PatchStrategy.MergePatch);
  }

  /** Writes `status` unless it equals the object's (condition times aside). */
  async writeStatus(
    obj: KubernetesObject & { status?: object },
    plural: string,
    status: object,
  ): Promise<void> {
    if (stableJson(stripTimes(obj.status ?? {})) === stableJson(stripTimes(status))) return;
    await this.custom.patchNamespacedCustomObjectStatus(
      {
        group: GROUP,
        version: VERSION,
        namespace: obj.metadata!.namespace!,
        plural,
        name: obj.metadata!.name!,
        // keys the new status drops are sent as null, or a merge patch would leave them in place
        body: { status: mergePatchFor(obj.status ?? {}, JSON.parse(JSON.stringify(status))) },
      },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  }

  /** Deletes the Service `name` if the cache has it (the feedback Service once spec.feedback is gone). */
  async deleteServiceIfPresent(namespace: string, name: string): Promise<void> {
    if (!this.caches().services.get(namespace, name)) return;
    await this.objects
      .delete({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace } })
      .catch(() => undefined);
  }

  /** Deletes the PodDisruptionBudget `name` if the cache has it. */
  async deletePdbIfPresent(namespace: string, name: string): Promise<void> {
    if (!this.caches().pdbs.get(namespace, name)) return;
    await this.objects
      .delete({ apiVersion: 'policy/v1', kind: 'PodDisruptionBudget', metadata: { name, namespace } })
      .catch(() => undefined);
  }

  async deleteEgressPolicies(relay: { metadata: { name?: string; namespace?: string } }): Promise<void> {
    if (!this.optionalKinds.ciliumEgress) return;
    const list = await this.objects
      .list(
        'cilium.io/v2',
        'CiliumEgressGatewayPolicy',
        undefined,
        undefined,
        undefined,
        undefined,
        undefined,
        `app.kubernetes.io/instance=${relay.metadata.name},cartero.io/relay-namespace=${relay.metadata.namespace}`,
      )
      .catch(() => undefined);
    for (const p of list?.items ?? []) await this.objects.delete(p).catch(() => undefined);
  }

  /** Looks again, at most once a minute, which optional CRDs are installed. */
  async refreshOptionalKinds(): Promise<void> {
    if (Date.now() - this.optionalKinds.checkedAt < 60_000) return;
    const has = async (name: string) => {
      try {
        await this.objects.read({
          apiVersion: 'apiextensions.k8s.io/v1',
          kind: 'CustomResourceDefinition',
          metadata: { name },
        });
        return true;
      } catch {
        return false;
      }
    };
    this.optionalKinds = {
      serviceMonitor: await has('servicemonitors.monitoring.coreos.com'),
      ciliumEgress: await has('ciliumegressgatewaypolicies.cilium.io'),
      checkedAt: Date.now(),
    };
  }

  /** Forgets what was applied for a relay that is gone. */
  forgetRelay(ns: string, name: string): void {
    for (const k of [...this.applied.keys()])
      if (k.endsWith(`/${ns}/${name}`) || k.includes(`/cartero-${ns}-${name}-`)) this.applied.delete(k);
  }
}

function stripTimes(status: object): unknown {
  return JSON.parse(JSON.stringify(status), (k, v) => (k === 'lastTransitionTime' ? undefined : v));
}
