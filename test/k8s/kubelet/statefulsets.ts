/**
 * The StatefulSet controller: pods `<sts>-<ordinal>` (OrderedReady or Parallel), the
 * PersistentVolumeClaims of `volumeClaimTemplates` (Bound at once; retention policy), rolling updates
 * by `controller-revision-hash` (with `partition`) and the status. The decisions are in `decide.ts`.
 */
import type { KObject, OwnerReference } from '../apiserver/objects.js';
import type { Context } from './context.js';
import { deletePod, podExists, writeStatus } from './context.js';
import { planStatefulSetScale, planStatefulSetUpdate, statefulSetStatus } from './decide.js';
import type { PodSpec } from './runtime/types.js';
import {
  controlledBy,
  controllerRef,
  KUBELET_FINALIZER,
  POD_INDEX_LABEL,
  POD_NAME_LABEL,
  REVISION_LABEL,
  revisionOf,
} from './shared.js';

interface StatefulSetSpec {
  replicas?: number;
  podManagementPolicy?: string;
  serviceName?: string;
  template?: { metadata?: KObject['metadata']; spec?: PodSpec };
  selector?: { matchLabels?: Record<string, string> };
  volumeClaimTemplates?: KObject[];
  updateStrategy?: { type?: string; rollingUpdate?: { partition?: number } };
  persistentVolumeClaimRetentionPolicy?: { whenDeleted?: string; whenScaled?: string };
}

const specOf = (sts: KObject) => (sts.spec ?? {}) as StatefulSetSpec;

function retention(sts: KObject): { whenDeleted: string; whenScaled: string } {
  const p = specOf(sts).persistentVolumeClaimRetentionPolicy;
  return { whenDeleted: p?.whenDeleted ?? 'Retain', whenScaled: p?.whenScaled ?? 'Retain' };
}

function ownerRef(owner: KObject): OwnerReference {
  return {
    apiVersion: owner.apiVersion ?? '',
    kind: owner.kind ?? '',
    name: owner.metadata.name ?? '',
    uid: owner.metadata.uid ?? '',
    blockOwnerDeletion: true,
  };
}

export function statefulSetController(ctx: Context): { sync(): void } {
  const { store, kinds } = ctx;

  /** The StatefulSet's pods by ordinal. */
  function ownedPods(sts: KObject): Map<number, KObject> {
    const name = sts.metadata.name ?? '';
    const byOrdinal = new Map<number, KObject>();
    const re = new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}-(\\d+)$`);
    for (const pod of store.list(kinds.pod, { namespace: sts.metadata.namespace }).items) {
      if (!controlledBy(sts)(pod)) continue;
      const m = re.exec(pod.metadata.name ?? '');
      if (m) byOrdinal.set(Number(m[1]), pod);
    }
    return byOrdinal;
  }

  function podFor(sts: KObject, ordinal: number, revision: string): KObject {
    const spec = specOf(sts);
    const tmpl = structuredClone(spec.template ?? {});
    const name = `${sts.metadata.name}-${ordinal}`;
    const podSpec: PodSpec & Record<string, unknown> = { ...(tmpl.spec ?? {}) };
    podSpec.hostname = name;
    if (spec.serviceName) podSpec.subdomain = spec.serviceName;
    podSpec.nodeName = ctx.nodeName;
    const volumes = [...(podSpec.volumes ?? [])];
    for (const claim of ensureClaims(sts, ordinal))
      if (!volumes.some((v) => v.name === claim.volume))
        volumes.push({ name: claim.volume, persistentVolumeClaim: { claimName: claim.claimName } });
    if (volumes.length) podSpec.volumes = volumes;
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name,
        namespace: sts.metadata.namespace,
        labels: {
          ...(tmpl.metadata?.labels ?? {}),
          [POD_NAME_LABEL]: name,
          [REVISION_LABEL]: revision,
          [POD_INDEX_LABEL]: String(ordinal),
        },
        ...(tmpl.metadata?.annotations ? { annotations: tmpl.metadata.annotations } : {}),
        ownerReferences: [controllerRef(sts, 'StatefulSet')],
        finalizers: [KUBELET_FINALIZER],
      },
      spec: podSpec,
    };
  }

  /**
   * persistentVolumeClaimRetentionPolicy.whenScaled: Delete: like the real controller, the claims of a
   * condemned pod get an owner reference to that pod instead of the StatefulSet, so garbage collection
   * deletes them once the pod is gone.
   */
  function condemnClaims(sts: KObject, pod: KObject, ordinal: number): void {
    if (retention(sts).whenScaled !== 'Delete') return;
    const ns = sts.metadata.namespace ?? '';
    for (const tmpl of specOf(sts).volumeClaimTemplates ?? []) {
      const claimName = `${tmpl.metadata?.name ?? ''}-${sts.metadata.name}-${ordinal}`;
      let claim: KObject;
      try {
        claim = store.get(kinds.claim, ns, claimName);
      } catch {
        continue;
      }
      // the pod replaces the StatefulSet as owner, so the claim goes with the pod (as the real controller does)
      const refs = (claim.metadata.ownerReferences ?? []).filter((r) => r.uid !== sts.metadata.uid);
      if (refs.some((r) => r.uid === pod.metadata.uid)) continue;
      store.update(kinds.claim, ns, claimName, {
        ...claim,
        metadata: { ...claim.metadata, ownerReferences: [...refs, ownerRef(pod)] },
      });
    }
  }

  /** Creates the PersistentVolumeClaims of `volumeClaimTemplates` for an ordinal (retention: see condemnClaims). */
  function ensureClaims(sts: KObject, ordinal: number): { volume: string; claimName: string }[] {
    const spec = specOf(sts);
    const ns = sts.metadata.namespace ?? '';
    const out: { volume: string; claimName: string }[] = [];
    for (const tmpl of spec.volumeClaimTemplates ?? []) {
      const volume = tmpl.metadata?.name ?? '';
      const claimName = `${volume}-${sts.metadata.name}-${ordinal}`;
      out.push({ volume, claimName });
      try {
        store.get(kinds.claim, ns, claimName);
        continue;
      } catch {
        // create it
      }
      const pvcSpec = (tmpl.spec ?? {}) as { accessModes?: string[]; resources?: { requests?: object } };
      const whenDeleted = retention(sts).whenDeleted;
      store.create(kinds.claim, ns, {
        apiVersion: 'v1',
        kind: 'PersistentVolumeClaim',
        metadata: {
          name: claimName,
          labels: { ...(tmpl.metadata?.labels ?? {}), ...(spec.selector?.matchLabels ?? {}) },
          // persistentVolumeClaimRetentionPolicy.whenDeleted: Delete -> collected with the StatefulSet
          ...(whenDeleted === 'Delete' ? { ownerReferences: [ownerRef(sts)] } : {}),
        },
        spec: { ...pvcSpec, volumeName: `pv-${claimName}` },
      });
      const created = store.get(kinds.claim, ns, claimName);
      store.update(
        kinds.claim,
        ns,
        claimName,
        {
          ...created,
          status: {
            phase: 'Bound',
            accessModes: pvcSpec.accessModes ?? ['ReadWriteOnce'],
            capacity: pvcSpec.resources?.requests ?? {},
          },
        },
        { subresource: 'status' },
      );
    }
    return out;
  }

  function reconcile(sts: KObject): void {
    if (sts.metadata.deletionTimestamp) return; // owner GC deletes the pods
    const spec = specOf(sts);
    const replicas = spec.replicas ?? 1;
    const updateRevision = revisionOf(sts.metadata.name ?? '', spec.template);
    const ns = sts.metadata.namespace ?? '';
    let pods = ownedPods(sts);

    const plan = planStatefulSetScale(pods, replicas, spec.podManagementPolicy === 'Parallel');
    for (const pod of plan.deleteFailed) deletePod(ctx, pod);
    // A pod of that name it does not own (no adoption yet) blocks the ordinal.
    for (const o of plan.create)
      if (!podExists(ctx, ns, `${sts.metadata.name}-${o}`))
        store.create(kinds.pod, ns, podFor(sts, o, updateRevision));
    for (const o of plan.condemn) condemnClaims(sts, pods.get(o)!, o);
    for (const o of plan.remove) deletePod(ctx, pods.get(o)!);

    pods = ownedPods(sts);
    const replace = planStatefulSetUpdate(pods, {
      replicas,
      strategy: spec.updateStrategy?.type ?? 'RollingUpdate',
      partition: spec.updateStrategy?.rollingUpdate?.partition ?? 0,
      updateRevision,
      blocked: plan.blocked,
    });
    if (replace !== undefined) deletePod(ctx, pods.get(replace)!);

    const old = (sts.status ?? {}) as Record<string, unknown>;
    writeStatus(
      ctx,
      kinds.statefulSet,
      sts,
      statefulSetStatus(old, sts.metadata.generation, ownedPods(sts), replicas, updateRevision),
    );
  }

  return {
    sync() {
      for (const sts of store.list(kinds.statefulSet).items) ctx.guard(() => reconcile(sts));
    },
  };
}
