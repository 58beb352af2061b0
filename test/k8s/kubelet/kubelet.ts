/**
 * A "process kubelet" for tests: plays kube-controller-manager (the StatefulSet, Deployment,
 * ReplicaSet and ServiceAccount controllers; the endpoints controllers in `services.ts`), a kubelet
 * and kube-proxy (`services.ts`) beside the test API server, so `kubectl apply` of a StatefulSet or
 * Deployment ends in real local processes reachable through their Services.
 *
 * It talks to the server through its in-process store API (the kubelet lives in the test process):
 * it subscribes to store events and reads and writes objects with `store.get/list/create/update/delete`.
 * Store writes are synchronous, so the controller is too; only process handling is asynchronous.
 *
 * Pods it runs carry the finalizer `kubelet.cartero.test/process` (added to pods made without a
 * controller too): deleting a pod sets its deletionTimestamp, the kubelet runs the container's
 * `lifecycle.preStop` hook, sends SIGTERM, then SIGKILL at the end of `terminationGracePeriodSeconds`
 * (the hook's time included; at least 2 s after a hook), and the pod disappears once the process is
 * gone, as with a real kubelet.
 *
 * Mapping a container to a process:
 * - image -> `images[image]`: `command` and `args` act as the image's ENTRYPOINT; the container's
 *   `args` are appended; a container `command` replaces the entrypoint (run as a local executable).
 * - `$(VAR)` in command, args and env values is expanded from the container's environment.
 * - volumes (ConfigMap, Secret, emptyDir; a `subPath` of one of them is a single file) are files
 *   under `<podDir>/mounts/<mountPath>`. A PersistentVolumeClaim (from `volumeClaimTemplates`; the
 *   controller creates the claims, Bound, and keeps them on scale-down) is a symlink there to
 *   `<dir>/volumes/<ns>/<claim>`, which survives pod deletion and recreation.
 * - processes cannot mount, so every command/arg/env value that is a mountPath or lies under one
 *   (as the whole value or after `=`, e.g. `--config=/etc/x/a.yaml`) is rewritten to the host path.
 *   File contents are not rewritten. ConfigMap/Secret changes reach running pods' files (not
 *   `subPath` ones), each file replaced atomically. `CARTERO_POD_ROOT` names `<podDir>/mounts`; cwd is the pod dir.
 * - also projected (serviceAccountToken, configMap, secret, downwardAPI sources) and downwardAPI
 *   volumes.
 * - ServiceAccount: a token for the pod's ServiceAccount (bound to the pod), `namespace` and `ca.crt`
 *   (when the server has a CA) in `<podDir>/mounts/var/run/secrets/kubernetes.io/serviceaccount`
 *   (an implicit mount, so paths under it are rewritten too), and `<podDir>/kubeconfig` with the
 *   server URL and that token file, named by `KUBECONFIG` (see writeServiceAccount).
 * - env: `PATH` and `HOME` from the host, `HOSTNAME`, `POD_NAME`, `POD_NAMESPACE`, `POD_IP`,
 *   `NODE_NAME`, `KUBERNETES_SERVICE_HOST`/`_PORT` (the API server), `KUBECONFIG`, then the
 *   container's `envFrom` and `env` (literals, fieldRef, configMapKeyRef, secretKeyRef).
 * - stdout and stderr go to `<podDir>/<container>.log` (appended across restarts); the API server
 *   serves them as `pods/log` (`kubectl logs`) through the `PodLogSource` registered here.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { appendFile, mkdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { stringify as toYaml } from 'yaml';
import type { ApiServer } from '../apiserver/server.js';
import type { KObject, OwnerReference } from '../apiserver/objects.js';
import { isObject, nowTimestamp } from '../apiserver/objects.js';
import type { ResourceType } from '../apiserver/resources.js';
import type { StoreEvent } from '../apiserver/store.js';
import { ApiError } from '../apiserver/errors.js';
import { startServiceProxy, type ServiceProxy } from './services.js';

export const KUBELET_FINALIZER = 'kubelet.cartero.test/process';
export const POD_NAME_LABEL = 'statefulset.kubernetes.io/pod-name';
export const REVISION_LABEL = 'controller-revision-hash';
export const POD_INDEX_LABEL = 'apps.kubernetes.io/pod-index';
export const TEMPLATE_HASH_LABEL = 'pod-template-hash';
export const REVISION_ANNOTATION = 'deployment.kubernetes.io/revision';
/** Where a real pod finds its ServiceAccount token, namespace and CA (the pod dir holds it here). */
export const SERVICEACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
/** The kubelet's minimum shutdown window after a preStop hook (as kubelet's minimumGracePeriodInSeconds). */
const MIN_GRACE_AFTER_HOOK_MS = 2_000;

export interface ImageCommand {
  command: string;
  args?: string[];
}

export interface KubeletOptions {
  /**
   * The API server. With `url` and `serviceAccountToken` pods get ServiceAccount credentials (token
   * files, `KUBECONFIG`, `KUBERNETES_SERVICE_HOST`/`_PORT`); `caCert` (PEM) goes to their `ca.crt`.
   */
  server: Pick<ApiServer, 'store' | 'registry'> &
    Partial<Pick<ApiServer, 'url' | 'serviceAccountToken' | 'setPodLogSource'>> & { caCert?: string };
  /** image -> local command (the image's entrypoint). */
  images: Record<string, ImageCommand>;
  /** Where pod directories go (`<dir>/<namespace>_<name>_<uid>`). */
  dir: string;
  /** Hands out pod addresses (default 127.0.1.N, N cycling 1..254, skipping live pods' addresses). */
  podAddresses?: () => string;
  /** spec.nodeName of the pods it runs (default `cartero-kubelet`). */
  nodeName?: string;
  /** Restart back-off: first delay and cap (default 200 ms, 5 000 ms). */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Called with errors the controller or kubelet hit (default: console.error). */
  onError?: (err: unknown) => void;
  /**
   * Run the endpoints/EndpointSlice controllers and the Service proxy (`services.ts`; default true):
   * ClusterIP Services answer on their cluster IP.
   */
  services?: boolean;
  /** Play the ServiceAccount controller: a `default` ServiceAccount in every namespace (default true). */
  serviceAccounts?: boolean;
}

export interface PodProcess {
  namespace: string;
  name: string;
  uid: string;
  ip: string;
  dir: string;
  pid: number | undefined;
  restartCount: number;
  ready: boolean;
}

export interface Kubelet {
  /** The pods with a runtime (running, restarting or terminating). */
  pods(): PodProcess[];
  /** Every pid the kubelet ever spawned (to check nothing is left behind). */
  spawnedPids(): number[];
  /** Path of a pod's container log (first container). */
  logPath(namespace: string, name: string): string | undefined;
  /** The Service proxy (undefined with `services: false`). */
  services: ServiceProxy | undefined;
  /**
   * Terminates all processes (SIGTERM, then SIGKILL after the pod's grace period, or `graceSeconds`
   * when given) and drops its finalizers from the pods left in the store.
   */
  stop(opts?: { graceSeconds?: number }): Promise<void>;
}

interface Container {
  name?: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  envFrom?: { prefix?: string; configMapRef?: NameRef; secretRef?: NameRef }[];
  ports?: { name?: string; containerPort?: number }[];
  volumeMounts?: { name: string; mountPath: string; subPath?: string; readOnly?: boolean }[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  lifecycle?: { preStop?: LifecycleHandler };
}

interface LifecycleHandler {
  exec?: { command?: string[] };
  httpGet?: {
    path?: string;
    port: number | string;
    host?: string;
    scheme?: string;
    httpHeaders?: { name: string; value: string }[];
  };
  sleep?: { seconds: number };
}

interface NameRef {
  name?: string;
  optional?: boolean;
}

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: {
    fieldRef?: { fieldPath: string };
    configMapKeyRef?: NameRef & { key: string };
    secretKeyRef?: NameRef & { key: string };
  };
}

interface Probe {
  httpGet?: { path?: string; port: number | string; host?: string; scheme?: string };
  tcpSocket?: { port: number | string; host?: string };
  initialDelaySeconds?: number;
  periodSeconds?: number;
  timeoutSeconds?: number;
  successThreshold?: number;
  failureThreshold?: number;
}

interface Volume {
  name: string;
  configMap?: { name?: string; items?: KeyPath[]; optional?: boolean; defaultMode?: number };
  secret?: { secretName?: string; items?: KeyPath[]; optional?: boolean; defaultMode?: number };
  emptyDir?: object;
  persistentVolumeClaim?: { claimName: string };
  projected?: { sources?: ProjectedSource[]; defaultMode?: number };
  downwardAPI?: { items?: DownwardItem[]; defaultMode?: number };
}

interface DownwardItem {
  path: string;
  fieldRef?: { fieldPath: string };
  mode?: number;
}

interface ProjectedSource {
  serviceAccountToken?: { path: string; audience?: string; expirationSeconds?: number };
  configMap?: { name?: string; items?: KeyPath[]; optional?: boolean };
  secret?: { name?: string; items?: KeyPath[]; optional?: boolean };
  downwardAPI?: { items?: DownwardItem[] };
}

interface KeyPath {
  key: string;
  path: string;
  mode?: number;
}

interface VolumeFile {
  path: string;
  content: string;
  mode?: number;
}

interface PodSpec {
  containers?: Container[];
  volumes?: Volume[];
  nodeName?: string;
  restartPolicy?: string;
  terminationGracePeriodSeconds?: number;
  hostname?: string;
  subdomain?: string;
  serviceAccountName?: string;
  serviceAccount?: string;
  automountServiceAccountToken?: boolean;
}

interface Condition {
  type: string;
  status: string;
  lastTransitionTime?: string;
  lastProbeTime?: null;
}

interface Runtime {
  uid: string;
  namespace: string;
  name: string;
  ip: string;
  dir: string;
  log: string;
  container: Container;
  child?: ChildProcess;
  pid?: number;
  startedAt?: string;
  restartCount: number;
  ready: boolean;
  successes: number;
  failures: number;
  /** Why the container is not running: ErrImagePull, CrashLoopBackOff, ContainerCreating. */
  waiting?: { reason: string; message?: string };
  lastTerminated?: { exitCode: number; signal?: string; startedAt?: string; finishedAt: string };
  terminating: boolean;
  graceSeconds: number;
  restartPolicy: string;
  timers: Set<NodeJS.Timeout>;
  /** Resolves when the current process has exited (or at once when none runs). */
  exited: Promise<void>;
  done?: Promise<void>;
  startMs: number;
  /** Files written per ConfigMap/Secret mount target (to remove keys that go away). */
  volumeFiles: Map<string, Set<string>>;
  volumesWritten: boolean;
  volumeUpdates: Promise<void>;
  /** The environment the process was last started with (preStop exec hooks get it too). */
  env?: Record<string, string>;
  /** The per-pod kubeconfig (ServiceAccount credentials), when the token is mounted. */
  kubeconfig?: string;
  /** Mount paths the kubelet adds itself (the ServiceAccount directory). */
  implicitMounts: string[];
  /** The ServiceAccount token issued for the pod. */
  saToken?: string;
  /** Set while a container is being stopped (preStop, SIGTERM, SIGKILL) for one process. */
  killing?: { child: ChildProcess; done: Promise<void> };
}

/** JSON with sorted keys: the basis of the template hash. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (isObject(v))
    return `{${Object.keys(v)
      .filter((k) => v[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`)
      .join(',')}}`;
  return JSON.stringify(v);
}

/** The controller-revision-hash of a pod template (`<sts>-<hash>`). */
export function revisionOf(stsName: string, template: unknown): string {
  return `${stsName}-${createHash('sha256').update(canonical(template)).digest('hex').slice(0, 10)}`;
}

function condition(pod: KObject, type: string): Condition | undefined {
  const status = pod.status as { conditions?: Condition[] } | undefined;
  return status?.conditions?.find((c) => c.type === type);
}

export function isRunningAndReady(pod: KObject): boolean {
  const phase = (pod.status as { phase?: string } | undefined)?.phase;
  return phase === 'Running' && condition(pod, 'Ready')?.status === 'True' && !pod.metadata.deletionTimestamp;
}

/** Hands out `<prefix>.N`, N cycling 1..254 (the kubelet skips addresses its live pods hold). */
export function loopbackAddresses(prefix = '127.0.1'): () => string {
  let n = 0;
  return () => {
    n = (n % 254) + 1;
    return `${prefix}.${n}`;
  };
}

/** SIGKILLs what is left of a process group (never a lone pid: it may have been reused). */
function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // none left
  }
}

function expand(text: string, env: Record<string, string>): string {
  return text.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (m, name: string | undefined) =>
    name === undefined ? '$' : (env[name] ?? m),
  );
}

/** Signals a pod's process group (its process leads one: spawned detached). */
function signalOf(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig);
  } catch {
    // gone
  }
}

export function startKubelet(opts: KubeletOptions): Kubelet {
  const { store, registry } = opts.server;
  const podT = registry.find('', 'v1', 'pods') as ResourceType;
  const stsT = registry.find('apps', 'v1', 'statefulsets') as ResourceType;
  const cmT = registry.find('', 'v1', 'configmaps') as ResourceType;
  const secretT = registry.find('', 'v1', 'secrets') as ResourceType;
  const pvcT = registry.find('', 'v1', 'persistentvolumeclaims') as ResourceType;
  const deployT = registry.find('apps', 'v1', 'deployments') as ResourceType;
  const rsT = registry.find('apps', 'v1', 'replicasets') as ResourceType;
  const nodeName = opts.nodeName ?? 'cartero-kubelet';
  const initialBackoff = opts.backoff?.initialMs ?? 200;
  const maxBackoff = opts.backoff?.maxMs ?? 5_000;
  const onError = opts.onError ?? ((err: unknown) => console.error('kubelet:', err));
  const runtimes = new Map<string, Runtime>();
  const pids = new Set<number>();
  let stopped = false;
  const allocate = opts.podAddresses ?? loopbackAddresses();
  const saT = registry.find('', 'v1', 'serviceaccounts') as ResourceType;
  const nsT = registry.find('', 'v1', 'namespaces') as ResourceType;
  const apiUrl = opts.server.url ? new URL(opts.server.url) : undefined;
  const services = opts.services === false ? undefined : startServiceProxy({ server: opts.server, onError });

  const guard = (fn: () => void) => {
    try {
      fn();
    } catch (err) {
      if (!stopped) onError(err);
    }
  };

  // ---------------------------------------------------------------- scheduling of sync passes
  let scheduled = false;
  const schedule = () => {
    if (scheduled || stopped) return;
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      if (stopped) return;
      guard(reconcileAll);
      guard(reconcileDeployments);
      guard(reconcileReplicaSets);
      guard(ensureServiceAccounts);
      guard(syncPods);
    });
  };
  const unsubscribe = store.subscribe((e: StoreEvent) => {
    if (
      e.key === 'apps/statefulsets' ||
      e.key === 'apps/deployments' ||
      e.key === 'apps/replicasets' ||
      e.key === '/pods' ||
      (opts.serviceAccounts !== false && (e.key === '/namespaces' || e.key === '/serviceaccounts'))
    )
      schedule();
    if ((e.key === '/configmaps' || e.key === '/secrets') && !stopped) setImmediate(() => refreshVolumes(e));
    // A deleted claim releases its volume (dynamic provisioning, reclaimPolicy Delete).
    if (e.key === '/persistentvolumeclaims' && e.type === 'DELETED') {
      const claimDir = path.join(opts.dir, 'volumes', e.namespace, e.object.metadata.name ?? '');
      void rm(claimDir, { recursive: true, force: true }).catch(() => undefined);
    }
  });

  // ---------------------------------------------------------------- ServiceAccount controller
  /** A `default` ServiceAccount in every namespace that is not terminating. */
  function ensureServiceAccounts(): void {
    if (opts.serviceAccounts === false) return;
    for (const ns of store.list(nsT).items)
      if (!ns.metadata.deletionTimestamp) ensureServiceAccount(ns.metadata.name ?? '', 'default');
  }

  function ensureServiceAccount(ns: string, name: string): void {
    try {
      store.get(saT, ns, name);
      return;
    } catch {
      // create it
    }
    try {
      store.create(saT, ns, { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name } });
    } catch (err) {
      // Lost a race, or the namespace is going away.
      if (!(err instanceof ApiError && [403, 404, 409].includes(err.code))) throw err;
    }
  }

  // ---------------------------------------------------------------- StatefulSet controller
  function ownedPods(sts: KObject): Map<number, KObject> {
    const name = sts.metadata.name ?? '';
    const byOrdinal = new Map<number, KObject>();
    const re = new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}-(\\d+)$`);
    for (const pod of store.list(podT, { namespace: sts.metadata.namespace }).items) {
      if (!pod.metadata.ownerReferences?.some((r) => r.uid === sts.metadata.uid && r.controller)) continue;
      const m = re.exec(pod.metadata.name ?? '');
      if (m) byOrdinal.set(Number(m[1]), pod);
    }
    return byOrdinal;
  }

  function podFor(sts: KObject, ordinal: number, revision: string): KObject {
    const spec = sts.spec as {
      template?: { metadata?: KObject['metadata']; spec?: PodSpec };
      serviceName?: string;
    };
    const tmpl = structuredClone(spec.template ?? {});
    const name = `${sts.metadata.name}-${ordinal}`;
    const podSpec: PodSpec & Record<string, unknown> = { ...(tmpl.spec ?? {}) };
    podSpec.hostname = name;
    if (spec.serviceName) podSpec.subdomain = spec.serviceName;
    podSpec.nodeName = nodeName;
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
        ownerReferences: [
          {
            apiVersion: 'apps/v1',
            kind: 'StatefulSet',
            name: sts.metadata.name ?? '',
            uid: sts.metadata.uid ?? '',
            controller: true,
            blockOwnerDeletion: true,
          },
        ],
        finalizers: [KUBELET_FINALIZER],
      },
      spec: podSpec,
    };
  }

  function retention(sts: KObject): { whenDeleted: string; whenScaled: string } {
    const p = (
      sts.spec as { persistentVolumeClaimRetentionPolicy?: { whenDeleted?: string; whenScaled?: string } }
    ).persistentVolumeClaimRetentionPolicy;
    return { whenDeleted: p?.whenDeleted ?? 'Retain', whenScaled: p?.whenScaled ?? 'Retain' };
  }

  function ownerRef(owner: KObject, controller: boolean): OwnerReference {
    return {
      apiVersion: owner.apiVersion ?? '',
      kind: owner.kind ?? '',
      name: owner.metadata.name ?? '',
      uid: owner.metadata.uid ?? '',
      ...(controller ? { controller: true } : {}),
      blockOwnerDeletion: true,
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
    const templates = (sts.spec as { volumeClaimTemplates?: KObject[] }).volumeClaimTemplates ?? [];
    for (const tmpl of templates) {
      const claimName = `${tmpl.metadata?.name ?? ''}-${sts.metadata.name}-${ordinal}`;
      let claim: KObject;
      try {
        claim = store.get(pvcT, ns, claimName);
      } catch {
        continue;
      }
      // the pod replaces the StatefulSet as owner, so the claim goes with the pod (as the real controller does)
      const refs = (claim.metadata.ownerReferences ?? []).filter((r) => r.uid !== sts.metadata.uid);
      if (refs.some((r) => r.uid === pod.metadata.uid)) continue;
      store.update(pvcT, ns, claimName, {
        ...claim,
        metadata: { ...claim.metadata, ownerReferences: [...refs, ownerRef(pod, false)] },
      });
    }
  }

  /** Creates the PersistentVolumeClaims of `volumeClaimTemplates` for an ordinal (retention: see condemnClaims). */
  function ensureClaims(sts: KObject, ordinal: number): { volume: string; claimName: string }[] {
    const spec = sts.spec as {
      volumeClaimTemplates?: KObject[];
      selector?: { matchLabels?: Record<string, string> };
    };
    const ns = sts.metadata.namespace ?? '';
    const out: { volume: string; claimName: string }[] = [];
    for (const tmpl of spec.volumeClaimTemplates ?? []) {
      const volume = tmpl.metadata?.name ?? '';
      const claimName = `${volume}-${sts.metadata.name}-${ordinal}`;
      out.push({ volume, claimName });
      try {
        store.get(pvcT, ns, claimName);
        continue;
      } catch {
        // create it
      }
      const pvcSpec = (tmpl.spec ?? {}) as { accessModes?: string[]; resources?: { requests?: object } };
      const whenDeleted = retention(sts).whenDeleted;
      store.create(pvcT, ns, {
        apiVersion: 'v1',
        kind: 'PersistentVolumeClaim',
        metadata: {
          name: claimName,
          labels: { ...(tmpl.metadata?.labels ?? {}), ...(spec.selector?.matchLabels ?? {}) },
          // persistentVolumeClaimRetentionPolicy.whenDeleted: Delete -> collected with the StatefulSet
          ...(whenDeleted === 'Delete' ? { ownerReferences: [ownerRef(sts, false)] } : {}),
        },
        spec: { ...pvcSpec, volumeName: `pv-${claimName}` },
      });
      const created = store.get(pvcT, ns, claimName);
      store.update(
        pvcT,
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

  function exists(ns: string, name: string): boolean {
    try {
      store.get(podT, ns, name);
      return true;
    } catch {
      return false;
    }
  }

  function deletePod(pod: KObject): void {
    try {
      store.delete(podT, pod.metadata.namespace ?? '', pod.metadata.name ?? '', {
        preconditions: { uid: pod.metadata.uid },
      });
    } catch (err) {
      if (!(err instanceof ApiError && (err.code === 404 || err.code === 409))) throw err;
    }
  }

  function reconcileAll(): void {
    for (const sts of store.list(stsT).items) guard(() => reconcile(sts));
  }

  function reconcile(sts: KObject): void {
    if (sts.metadata.deletionTimestamp) return; // owner GC deletes the pods
    const spec = sts.spec as {
      replicas?: number;
      podManagementPolicy?: string;
      template?: unknown;
      updateStrategy?: { type?: string; rollingUpdate?: { partition?: number } };
    };
    const replicas = spec.replicas ?? 1;
    const parallel = spec.podManagementPolicy === 'Parallel';
    const updateRevision = revisionOf(sts.metadata.name ?? '', spec.template);
    const ns = sts.metadata.namespace ?? '';
    let pods = ownedPods(sts);
    const terminating = (p: KObject) => !!p.metadata.deletionTimestamp;

    // Failed pods are replaced.
    for (const pod of pods.values())
      if ((pod.status as { phase?: string } | undefined)?.phase === 'Failed' && !terminating(pod))
        deletePod(pod);

    // Create missing pods: in order, each after the previous is Ready (OrderedReady), or all at once.
    let blocked = false;
    for (let o = 0; o < replicas; o++) {
      const pod = pods.get(o);
      if (!pod) {
        // A pod of that name it does not own (no adoption yet) blocks the ordinal.
        if (!exists(ns, `${sts.metadata.name}-${o}`)) store.create(podT, ns, podFor(sts, o, updateRevision));
        if (!parallel) {
          blocked = true;
          break;
        }
        continue;
      }
      if (!parallel && (terminating(pod) || !isRunningAndReady(pod))) {
        blocked = true;
        break;
      }
    }

    // Scale down: highest ordinal first, one at a time (all at once when Parallel).
    const extra = [...pods.keys()].filter((o) => o >= replicas).sort((a, b) => b - a);
    for (const o of extra) condemnClaims(sts, pods.get(o)!, o);
    if (parallel) {
      for (const o of extra) if (!terminating(pods.get(o)!)) deletePod(pods.get(o)!);
    } else if (extra.length && !extra.some((o) => terminating(pods.get(o)!))) {
      deletePod(pods.get(extra[0])!);
    }

    // Rolling update: when everything is in place and Ready, replace the highest outdated pod.
    pods = ownedPods(sts);
    const strategy = spec.updateStrategy?.type ?? 'RollingUpdate';
    const partition = spec.updateStrategy?.rollingUpdate?.partition ?? 0;
    const settled =
      !blocked &&
      [...pods.values()].every((p) => !terminating(p)) &&
      Array.from({ length: replicas }, (_, o) => pods.get(o)).every((p) => p && isRunningAndReady(p));
    if (strategy === 'RollingUpdate' && settled)
      for (let o = replicas - 1; o >= partition; o--) {
        const pod = pods.get(o);
        if (pod && pod.metadata.labels?.[REVISION_LABEL] !== updateRevision) {
          deletePod(pod);
          break;
        }
      }

    writeStsStatus(sts, ownedPods(sts), replicas, updateRevision);
  }

  function writeStsStatus(
    sts: KObject,
    pods: Map<number, KObject>,
    replicas: number,
    updateRevision: string,
  ): void {
    const old = (sts.status ?? {}) as Record<string, unknown>;
    let currentRevision = typeof old.currentRevision === 'string' ? old.currentRevision : updateRevision;
    let created = 0;
    let ready = 0;
    let current = 0;
    let updated = 0;
    for (const pod of pods.values()) {
      created++;
      if (isRunningAndReady(pod)) ready++;
      if (pod.metadata.deletionTimestamp) continue;
      const rev = pod.metadata.labels?.[REVISION_LABEL];
      if (rev === currentRevision) current++;
      if (rev === updateRevision) updated++;
    }
    if (updated === replicas && ready === replicas && created === replicas) {
      currentRevision = updateRevision;
      current = updated;
    }
    const status = {
      ...old,
      observedGeneration: sts.metadata.generation,
      replicas: created,
      readyReplicas: ready,
      currentReplicas: current,
      updatedReplicas: updated,
      availableReplicas: ready,
      currentRevision,
      updateRevision,
      collisionCount: (old.collisionCount as number | undefined) ?? 0,
    };
    store.update(
      stsT,
      sts.metadata.namespace ?? '',
      sts.metadata.name ?? '',
      { ...sts, metadata: { ...sts.metadata, resourceVersion: undefined }, status },
      { subresource: 'status' },
    );
  }

  // ---------------------------------------------------------------- Deployment and ReplicaSet controllers
  type RsSpec = { replicas?: number; template?: { metadata?: KObject['metadata']; spec?: PodSpec } };
  const specReplicas = (o: KObject) => (o.spec as { replicas?: number } | undefined)?.replicas ?? 1;
  const ownedBy = (owner: KObject) => (o: KObject) =>
    !!o.metadata.ownerReferences?.some((r) => r.uid === owner.metadata.uid && r.controller);
  const isFailed = (p: KObject) => (p.status as { phase?: string } | undefined)?.phase === 'Failed';

  /** Percent (of `replicas`) or absolute value of maxSurge/maxUnavailable. */
  function intOrPercent(v: number | string | undefined, dflt: string, replicas: number, up: boolean): number {
    const val = v ?? dflt;
    if (typeof val === 'number') return val;
    const m = /^(\d+)%$/.exec(val);
    if (!m) return Number(val) || 0;
    const raw = (Number(m[1]) * replicas) / 100;
    return up ? Math.ceil(raw) : Math.floor(raw);
  }

  function reconcileDeployments(): void {
    for (const d of store.list(deployT).items) guard(() => reconcileDeployment(d));
  }

  function reconcileReplicaSets(): void {
    for (const rs of store.list(rsT).items) guard(() => reconcileReplicaSet(rs));
  }

  function scaleRs(rs: KObject, replicas: number): void {
    if (specReplicas(rs) === replicas) return;
    const next = structuredClone(rs);
    (next.spec as RsSpec).replicas = replicas;
    store.update(rsT, rs.metadata.namespace ?? '', rs.metadata.name ?? '', {
      ...next,
      metadata: { ...next.metadata, resourceVersion: undefined },
    });
  }

  function reconcileDeployment(d: KObject): void {
    if (d.metadata.deletionTimestamp) return; // owner GC deletes the ReplicaSets
    const ns = d.metadata.namespace ?? '';
    const spec = d.spec as {
      replicas?: number;
      paused?: boolean;
      template?: { metadata?: KObject['metadata']; spec?: PodSpec };
      selector?: { matchLabels?: Record<string, string>; matchExpressions?: unknown[] };
      strategy?: {
        type?: string;
        rollingUpdate?: { maxSurge?: number | string; maxUnavailable?: number | string };
      };
    };
    const replicas = spec.replicas ?? 1;
    const hash = createHash('sha256').update(canonical(spec.template)).digest('hex').slice(0, 10);
    const all = store.list(rsT, { namespace: ns }).items.filter(ownedBy(d));
    let newRs = all.find((rs) => rs.metadata.labels?.[TEMPLATE_HASH_LABEL] === hash);
    const revisionOfRs = (rs: KObject) => Number(rs.metadata.annotations?.[REVISION_ANNOTATION] ?? 0);
    const maxRevision = Math.max(0, ...all.map(revisionOfRs));
    const rolling = (spec.strategy?.type ?? 'RollingUpdate') === 'RollingUpdate';
    let maxSurge = rolling ? intOrPercent(spec.strategy?.rollingUpdate?.maxSurge, '25%', replicas, true) : 0;
    const maxUnavailable = rolling
      ? intOrPercent(spec.strategy?.rollingUpdate?.maxUnavailable, '25%', replicas, false)
      : replicas;
    if (maxSurge === 0 && maxUnavailable === 0) maxSurge = 1;
    if (!newRs && !spec.paused) {
      const name = `${d.metadata.name}-${hash}`;
      const tmpl = structuredClone(spec.template ?? {});
      const labels = { ...(tmpl.metadata?.labels ?? {}), [TEMPLATE_HASH_LABEL]: hash };
      store.create(rsT, ns, {
        apiVersion: 'apps/v1',
        kind: 'ReplicaSet',
        metadata: {
          name,
          labels,
          annotations: {
            [REVISION_ANNOTATION]: String(maxRevision + 1),
            'deployment.kubernetes.io/desired-replicas': String(replicas),
            'deployment.kubernetes.io/max-replicas': String(replicas + maxSurge),
          },
          ownerReferences: [
            {
              apiVersion: 'apps/v1',
              kind: 'Deployment',
              name: d.metadata.name ?? '',
              uid: d.metadata.uid ?? '',
              controller: true,
              blockOwnerDeletion: true,
            },
          ],
        },
        spec: {
          replicas: 0,
          selector: {
            ...(spec.selector ?? {}),
            matchLabels: { ...(spec.selector?.matchLabels ?? {}), [TEMPLATE_HASH_LABEL]: hash },
          },
          template: { ...tmpl, metadata: { ...(tmpl.metadata ?? {}), labels } },
        },
      });
      newRs = store.get(rsT, ns, name);
    }
    const olds = () =>
      store
        .list(rsT, { namespace: ns })
        .items.filter(ownedBy(d))
        .filter((rs) => rs.metadata.uid !== newRs?.metadata.uid)
        .sort((a, b) => revisionOfRs(a) - revisionOfRs(b));
    // Available pods per ReplicaSet, counted from the pods (fresher than the ReplicaSets' status).
    const availableOf = (rs: KObject) =>
      Math.min(
        specReplicas(rs),
        rsPods(rs).filter((p) => !p.metadata.deletionTimestamp && isRunningAndReady(p)).length,
      );
    const existingOf = (rs: KObject) => rsPods(rs).length; // terminating pods included

    if (newRs && !spec.paused) {
      if (!rolling) {
        // Recreate: old pods all gone first, then the new ReplicaSet scales up.
        for (const rs of olds()) scaleRs(rs, 0);
        if (olds().every((rs) => existingOf(rs) === 0)) scaleRs(newRs, replicas);
      } else {
        // Scale up the new ReplicaSet within maxSurge.
        const total = () => [newRs!, ...olds()].reduce((n, rs) => n + specReplicas(rs), 0);
        const newReplicas = specReplicas(newRs);
        if (newReplicas > replicas) scaleRs(newRs, replicas);
        else if (newReplicas < replicas) {
          const room = replicas + maxSurge - total();
          if (room > 0) scaleRs(newRs, Math.min(replicas, newReplicas + room));
        }
        newRs = store.get(rsT, ns, newRs.metadata.name ?? '');
        // Scale down old ReplicaSets: unavailable replicas first, then within maxUnavailable.
        let oldSets = olds();
        for (const rs of oldSets) {
          const unhealthy = specReplicas(rs) - availableOf(rs);
          if (unhealthy > 0) scaleRs(rs, specReplicas(rs) - unhealthy);
        }
        oldSets = olds();
        const minAvailable = replicas - maxUnavailable;
        const available = [newRs, ...oldSets].reduce((n, rs) => n + availableOf(rs), 0);
        let canScaleDown = Math.max(0, available - minAvailable);
        for (const rs of oldSets) {
          if (canScaleDown <= 0) break;
          const n = Math.min(canScaleDown, specReplicas(rs));
          if (n > 0) scaleRs(rs, specReplicas(rs) - n);
          canScaleDown -= n;
        }
      }
    }
    writeDeploymentStatus(d, newRs, replicas, maxUnavailable);
  }

  function rsPods(rs: KObject): KObject[] {
    return store.list(podT, { namespace: rs.metadata.namespace }).items.filter(ownedBy(rs));
  }

  function writeDeploymentStatus(
    d: KObject,
    newRs: KObject | undefined,
    replicas: number,
    maxUnavailable: number,
  ) {
    const ns = d.metadata.namespace ?? '';
    const sets = store.list(rsT, { namespace: ns }).items.filter(ownedBy(d));
    let total = 0;
    let ready = 0;
    let available = 0;
    let updated = 0;
    for (const rs of sets) {
      const pods = rsPods(rs).filter((p) => !p.metadata.deletionTimestamp);
      total += pods.length;
      const r = pods.filter(isRunningAndReady).length;
      ready += r;
      available += r;
      if (rs.metadata.uid === newRs?.metadata.uid) updated = pods.length;
    }
    const newAvailable = newRs
      ? rsPods(newRs).filter((p) => !p.metadata.deletionTimestamp && isRunningAndReady(p)).length
      : 0;
    const old = (d.status ?? {}) as { conditions?: Record<string, unknown>[] };
    const now = nowTimestamp();
    const cond = (type: string, ok: boolean, reason: string, message: string) => {
      const status = ok ? 'True' : 'False';
      const prev = old.conditions?.find((c) => c.type === type);
      const same = prev?.status === status && prev.reason === reason;
      return {
        type,
        status,
        lastUpdateTime: same ? prev.lastUpdateTime : now,
        lastTransitionTime: prev?.status === status ? prev.lastTransitionTime : now,
        reason,
        message,
      };
    };
    const complete = !!newRs && updated === replicas && total === replicas && newAvailable === replicas;
    const availableOk = available >= replicas - maxUnavailable;
    const status: Record<string, unknown> = {
      observedGeneration: d.metadata.generation,
      replicas: total,
      updatedReplicas: updated,
      readyReplicas: ready,
      availableReplicas: available,
      conditions: [
        cond(
          'Available',
          availableOk,
          availableOk ? 'MinimumReplicasAvailable' : 'MinimumReplicasUnavailable',
          availableOk
            ? 'Deployment has minimum availability.'
            : 'Deployment does not have minimum availability.',
        ),
        cond(
          'Progressing',
          true,
          complete ? 'NewReplicaSetAvailable' : 'ReplicaSetUpdated',
          complete
            ? `ReplicaSet "${newRs?.metadata.name}" has successfully progressed.`
            : `ReplicaSet "${newRs?.metadata.name}" is progressing.`,
        ),
      ],
    };
    if (replicas > available) status.unavailableReplicas = replicas - available;
    store.update(
      deployT,
      ns,
      d.metadata.name ?? '',
      { ...d, metadata: { ...d.metadata, resourceVersion: undefined }, status },
      { subresource: 'status' },
    );
  }

  const RAND_CHARS = 'bcdfghjklmnpqrstvwxz2456789';
  const randomSuffix = () =>
    Array.from({ length: 5 }, () => RAND_CHARS[Math.floor(Math.random() * RAND_CHARS.length)]).join('');

  function reconcileReplicaSet(rs: KObject): void {
    if (rs.metadata.deletionTimestamp) return;
    const ns = rs.metadata.namespace ?? '';
    const replicas = specReplicas(rs);
    for (const p of rsPods(rs)) if (isFailed(p) && !p.metadata.deletionTimestamp) deletePod(p);
    let active = rsPods(rs).filter((p) => !p.metadata.deletionTimestamp);
    const tmpl = structuredClone((rs.spec as RsSpec).template ?? {});
    for (let i = active.length; i < replicas; i++) {
      let name = `${rs.metadata.name}-${randomSuffix()}`;
      while (exists(ns, name)) name = `${rs.metadata.name}-${randomSuffix()}`;
      store.create(podT, ns, {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: {
          name,
          labels: { ...(tmpl.metadata?.labels ?? {}) },
          ...(tmpl.metadata?.annotations ? { annotations: tmpl.metadata.annotations } : {}),
          ownerReferences: [
            {
              apiVersion: 'apps/v1',
              kind: 'ReplicaSet',
              name: rs.metadata.name ?? '',
              uid: rs.metadata.uid ?? '',
              controller: true,
              blockOwnerDeletion: true,
            },
          ],
          finalizers: [KUBELET_FINALIZER],
        },
        spec: { ...(tmpl.spec ?? {}), nodeName },
      });
    }
    if (active.length > replicas) {
      // Not-ready pods first, then the newest.
      const order = [...active].sort((a, b) => {
        const ra = isRunningAndReady(a) ? 1 : 0;
        const rb = isRunningAndReady(b) ? 1 : 0;
        if (ra !== rb) return ra - rb;
        return (b.metadata.creationTimestamp ?? '').localeCompare(a.metadata.creationTimestamp ?? '');
      });
      for (const p of order.slice(0, active.length - replicas)) deletePod(p);
    }
    active = rsPods(rs).filter((p) => !p.metadata.deletionTimestamp);
    const ready = active.filter(isRunningAndReady).length;
    const status = {
      ...((rs.status ?? {}) as Record<string, unknown>),
      observedGeneration: rs.metadata.generation,
      replicas: active.length,
      fullyLabeledReplicas: active.length,
      readyReplicas: ready,
      availableReplicas: ready,
    };
    store.update(
      rsT,
      ns,
      rs.metadata.name ?? '',
      { ...rs, metadata: { ...rs.metadata, resourceVersion: undefined }, status },
      { subresource: 'status' },
    );
  }

  // ---------------------------------------------------------------- kubelet: pods -> processes
  function mine(pod: KObject): boolean {
    const spec = pod.spec as PodSpec | undefined;
    return spec?.nodeName === nodeName;
  }

  function syncPods(): void {
    const seen = new Set<string>();
    for (const pod of store.list(podT).items) {
      if (!mine(pod)) continue;
      const uid = pod.metadata.uid ?? '';
      seen.add(uid);
      const rt = runtimes.get(uid);
      if (pod.metadata.deletionTimestamp) {
        if (rt) void terminate(rt, undefined, true);
        else dropFinalizer(pod);
      } else if (!rt) {
        // Pods made without a controller (kubectl run/apply) get the finalizer too, so their
        // deletion waits for the process (preStop, SIGTERM, SIGKILL) as a graceful deletion does.
        if (!pod.metadata.finalizers?.includes(KUBELET_FINALIZER)) addFinalizer(pod);
        start(pod);
      }
    }
    for (const rt of runtimes.values()) if (!seen.has(rt.uid)) void terminate(rt);
  }

  function addFinalizer(pod: KObject): void {
    const next = structuredClone(pod);
    next.metadata.finalizers = [...(next.metadata.finalizers ?? []), KUBELET_FINALIZER];
    try {
      store.update(podT, pod.metadata.namespace ?? '', pod.metadata.name ?? '', next);
    } catch (err) {
      // Changed meanwhile: the next pass sees the new version (the runtime exists by then).
      if (!(err instanceof ApiError && (err.code === 404 || err.code === 409))) throw err;
    }
  }

  function dropFinalizer(pod: KObject): void {
    if (!pod.metadata.finalizers?.includes(KUBELET_FINALIZER)) return;
    const next = structuredClone(pod);
    next.metadata.finalizers = (next.metadata.finalizers ?? []).filter((f) => f !== KUBELET_FINALIZER);
    try {
      store.update(podT, pod.metadata.namespace ?? '', pod.metadata.name ?? '', {
        ...next,
        metadata: { ...next.metadata, resourceVersion: undefined },
      });
    } catch (err) {
      if (!(err instanceof ApiError && err.code === 404)) throw err;
    }
  }

  function currentPod(rt: Runtime): KObject | undefined {
    try {
      const pod = store.get(podT, rt.namespace, rt.name);
      return pod.metadata.uid === rt.uid ? pod : undefined;
    } catch {
      return undefined;
    }
  }

  function writePodStatus(rt: Runtime): void {
    if (stopped) return;
    const pod = currentPod(rt);
    if (!pod) return;
    const old = (pod.status ?? {}) as { conditions?: Condition[]; startTime?: string };
    const now = nowTimestamp();
    const cond = (type: string, ok: boolean): Condition => {
      const status = ok ? 'True' : 'False';
      const prev = old.conditions?.find((c) => c.type === type);
      return {
        type,
        status,
        lastProbeTime: null,
        lastTransitionTime: prev?.status === status ? prev.lastTransitionTime : now,
      };
    };
    const running = rt.child !== undefined && rt.child.exitCode === null && rt.child.signalCode === null;
    const c = rt.container;
    const containerStatus: Record<string, unknown> = {
      name: c.name ?? 'main',
      image: c.image ?? '',
      imageID: '',
      containerID: rt.pid ? `process://${rt.pid}` : '',
      ready: rt.ready,
      started: running,
      restartCount: rt.restartCount,
      state: running
        ? { running: { startedAt: rt.startedAt } }
        : { waiting: rt.waiting ?? { reason: 'ContainerCreating' } },
    };
    if (rt.lastTerminated)
      containerStatus.lastState = {
        terminated: {
          exitCode: rt.lastTerminated.exitCode,
          reason: rt.lastTerminated.exitCode === 0 ? 'Completed' : 'Error',
          ...(rt.lastTerminated.signal ? { signal: rt.lastTerminated.signal } : {}),
          startedAt: rt.lastTerminated.startedAt,
          finishedAt: rt.lastTerminated.finishedAt,
        },
      };
    const reason = rt.waiting?.reason;
    const phase =
      reason === 'Completed'
        ? 'Succeeded'
        : reason === 'Error'
          ? 'Failed'
          : reason === 'ErrImagePull' || rt.startedAt === undefined
            ? 'Pending'
            : 'Running';
    const status = {
      phase,
      conditions: [
        cond('PodReadyToStartContainers', true),
        cond('Initialized', true),
        cond('Ready', rt.ready),
        cond('ContainersReady', rt.ready),
        cond('PodScheduled', true),
      ],
      hostIP: '127.0.0.1',
      hostIPs: [{ ip: '127.0.0.1' }],
      podIP: rt.ip,
      podIPs: [{ ip: rt.ip }],
      startTime: old.startTime ?? now,
      containerStatuses: [containerStatus],
      qosClass: 'BestEffort',
    };
    try {
      store.update(podT, rt.namespace, rt.name, { ...pod, status }, { subresource: 'status' });
    } catch (err) {
      if (!(err instanceof ApiError && err.code === 404)) throw err;
    }
  }

  function lookupKey(
    t: ResourceType,
    ns: string,
    ref: NameRef & { key?: string },
    kind: string,
  ): Record<string, string> | undefined {
    try {
      const obj = store.get(t, ns, ref.name ?? '');
      const out: Record<string, string> = {};
      for (const [k, v] of Object.entries((obj.data ?? {}) as Record<string, string>))
        out[k] = t === secretT ? Buffer.from(v, 'base64').toString('utf8') : v;
      return out;
    } catch (err) {
      if (ref.optional) return undefined;
      throw new Error(`${kind} ${ns}/${ref.name} not found`, { cause: err });
    }
  }

  /** The value of a downward API `fieldRef` (env and downwardAPI volumes). */
  function fieldRefValue(pod: KObject, rt: Runtime, p: string): string {
    const spec = pod.spec as PodSpec;
    const m = /^metadata\.(labels|annotations)\['([^']+)'\]$/.exec(p);
    if (m) return (pod.metadata[m[1]] as Record<string, string> | undefined)?.[m[2]] ?? '';
    switch (p) {
      case 'metadata.name':
        return rt.name;
      case 'metadata.namespace':
        return rt.namespace;
      case 'metadata.uid':
        return rt.uid;
      case 'metadata.labels':
      case 'metadata.annotations': {
        const map = (p === 'metadata.labels' ? pod.metadata.labels : pod.metadata.annotations) ?? {};
        return Object.keys(map)
          .sort()
          .map((k) => `${k}=${JSON.stringify(map[k])}`)
          .join('\n');
      }
      case 'status.podIP':
        return rt.ip;
      case 'status.hostIP':
        return '127.0.0.1';
      case 'spec.nodeName':
        return nodeName;
      case 'spec.serviceAccountName':
        return serviceAccountName(spec);
      default:
        throw new Error(`unsupported fieldRef ${p}`);
    }
  }

  function buildEnv(pod: KObject, rt: Runtime): Record<string, string> {
    const ns = rt.namespace;
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/',
      HOSTNAME: rt.name,
      POD_NAME: rt.name,
      POD_NAMESPACE: ns,
      POD_IP: rt.ip,
      NODE_NAME: nodeName,
      CARTERO_POD_ROOT: path.join(rt.dir, 'mounts'),
      // Where the API server is (a real pod gets the `kubernetes` Service's address here).
      ...(apiUrl ? { KUBERNETES_SERVICE_HOST: apiUrl.hostname, KUBERNETES_SERVICE_PORT: apiUrl.port } : {}),
      // client-node's loadFromDefault() reads this before it would try the in-cluster files.
      ...(rt.kubeconfig ? { KUBECONFIG: rt.kubeconfig } : {}),
    };
    for (const from of rt.container.envFrom ?? []) {
      const data = from.configMapRef
        ? lookupKey(cmT, ns, from.configMapRef, 'configmap')
        : from.secretRef
          ? lookupKey(secretT, ns, from.secretRef, 'secret')
          : undefined;
      for (const [k, v] of Object.entries(data ?? {})) env[`${from.prefix ?? ''}${k}`] = v;
    }
    const field = (p: string) => fieldRefValue(pod, rt, p);
    for (const e of rt.container.env ?? []) {
      const from = e.valueFrom;
      if (!from) env[e.name] = expand(e.value ?? '', env);
      else if (from.fieldRef) env[e.name] = field(from.fieldRef.fieldPath);
      else if (from.configMapKeyRef) {
        const v = lookupKey(cmT, ns, from.configMapKeyRef, 'configmap')?.[from.configMapKeyRef.key];
        if (v !== undefined) env[e.name] = v;
        else if (!from.configMapKeyRef.optional)
          throw new Error(`configmap key ${from.configMapKeyRef.key} missing`);
      } else if (from.secretKeyRef) {
        const v = lookupKey(secretT, ns, from.secretKeyRef, 'secret')?.[from.secretKeyRef.key];
        if (v !== undefined) env[e.name] = v;
        else if (!from.secretKeyRef.optional) throw new Error(`secret key ${from.secretKeyRef.key} missing`);
      }
    }
    return env;
  }

  /** The files of a ConfigMap or Secret (`items` or every key). */
  function keyFiles(
    data: Record<string, string> | undefined,
    items: KeyPath[] | undefined,
    mode: number | undefined,
  ): VolumeFile[] {
    const entries = items ?? Object.keys(data ?? {}).map((key) => ({ key, path: key, mode: undefined }));
    return entries
      .filter((e) => data?.[e.key] !== undefined)
      .map((e) => ({ path: e.path, content: data?.[e.key] ?? '', mode: e.mode ?? mode }));
  }

  function downwardFiles(pod: KObject, rt: Runtime, items: DownwardItem[] | undefined, mode?: number) {
    return (items ?? [])
      .filter((i) => i.fieldRef)
      .map((i) => ({
        path: i.path,
        content: fieldRefValue(pod, rt, i.fieldRef?.fieldPath ?? ''),
        mode: i.mode ?? mode,
      }));
  }

  /** The files of a projected volume (ServiceAccount token, ConfigMap, Secret, downward API sources). */
  function projectedFiles(pod: KObject, rt: Runtime, vol: NonNullable<Volume['projected']>): VolumeFile[] {
    const out: VolumeFile[] = [];
    const mode = vol.defaultMode;
    for (const src of vol.sources ?? []) {
      if (src.serviceAccountToken)
        out.push({
          path: src.serviceAccountToken.path,
          content: podToken(pod, rt, src.serviceAccountToken.audience),
          mode,
        });
      else if (src.configMap)
        out.push(
          ...keyFiles(lookupKey(cmT, rt.namespace, src.configMap, 'configmap'), src.configMap.items, mode),
        );
      else if (src.secret)
        out.push(...keyFiles(lookupKey(secretT, rt.namespace, src.secret, 'secret'), src.secret.items, mode));
      else if (src.downwardAPI) out.push(...downwardFiles(pod, rt, src.downwardAPI.items, mode));
    }
    return out;
  }

  // ---------------------------------------------------------------- ServiceAccount credentials
  const serviceAccountName = (spec: PodSpec) => spec.serviceAccountName ?? spec.serviceAccount ?? 'default';

  /** The pod's ServiceAccount (`default` is created when missing, as its controller would). */
  function serviceAccountOf(pod: KObject, rt: Runtime): KObject {
    const name = serviceAccountName(pod.spec as PodSpec);
    if (name === 'default' && opts.serviceAccounts !== false) ensureServiceAccount(rt.namespace, name);
    try {
      return store.get(saT, rt.namespace, name);
    } catch (err) {
      throw new Error(`serviceaccount ${rt.namespace}/${name} not found`, { cause: err });
    }
  }

  /** A token for the pod's ServiceAccount, bound to the pod (one per pod, or per audience). */
  function podToken(pod: KObject, rt: Runtime, audience?: string): string {
    const issue = opts.server.serviceAccountToken;
    if (!issue) throw new Error('the kubelet was given no way to issue ServiceAccount tokens');
    const sa = serviceAccountOf(pod, rt);
    const bind = { pod: { name: rt.name, uid: rt.uid } };
    if (audience) return issue(rt.namespace, sa.metadata.name ?? '', { ...bind, audiences: [audience] });
    rt.saToken ??= issue(rt.namespace, sa.metadata.name ?? '', bind);
    return rt.saToken;
  }

  /**
   * ServiceAccount credentials, as the ServiceAccount admission plugin and a kubelet provide them:
   * unless `automountServiceAccountToken` is false (pod, then ServiceAccount), `token`, `namespace`
   * and (when the server has one) `ca.crt` in `<podDir>/mounts/var/run/secrets/kubernetes.io/serviceaccount`
   * (unless the container mounts a volume there itself), and a kubeconfig `<podDir>/kubeconfig` with
   * the API server's URL and that token file, named by `KUBECONFIG`: the in-cluster loaders read the
   * fixed path and use https, which local processes cannot share, while `loadFromDefault()` reads
   * `KUBECONFIG` first, so the same program runs here and in a real cluster.
   */
  async function writeServiceAccount(pod: KObject, rt: Runtime): Promise<void> {
    rt.kubeconfig = undefined;
    rt.implicitMounts = [];
    if (!opts.server.serviceAccountToken || !opts.server.url) return;
    const spec = pod.spec as PodSpec;
    const sa = serviceAccountOf(pod, rt);
    const automount = spec.automountServiceAccountToken ?? sa.automountServiceAccountToken ?? true;
    if (automount === false) return;
    const saDir = path.join(rt.dir, 'mounts', SERVICEACCOUNT_DIR);
    const own = (rt.container.volumeMounts ?? []).some(
      (m) => m.mountPath.replace(/\/+$/, '') === SERVICEACCOUNT_DIR,
    );
    if (!own) {
      await mkdir(saDir, { recursive: true });
      await writeFile(path.join(saDir, 'token'), podToken(pod, rt), { mode: 0o600 });
      await writeFile(path.join(saDir, 'namespace'), rt.namespace);
      if (opts.server.caCert) await writeFile(path.join(saDir, 'ca.crt'), opts.server.caCert);
      rt.implicitMounts = [SERVICEACCOUNT_DIR];
    }
    const tokenFile = path.join(saDir, 'token');
    const cluster: Record<string, unknown> = { server: opts.server.url };
    if (opts.server.caCert && opts.server.url.startsWith('https:'))
      cluster['certificate-authority'] = path.join(saDir, 'ca.crt');
    else cluster['insecure-skip-tls-verify'] = true; // client-node needs it for http
    const user = sa.metadata.name ?? 'default';
    const kubeconfig = path.join(rt.dir, 'kubeconfig');
    await writeFile(
      kubeconfig,
      toYaml({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'in-cluster', cluster }],
        // `tokenFile` is client-go's spelling, `token-file` client-node 1.4's.
        users: [{ name: user, user: { tokenFile, 'token-file': tokenFile } }],
        contexts: [{ name: 'in-cluster', context: { cluster: 'in-cluster', user, namespace: rt.namespace } }],
        'current-context': 'in-cluster',
        preferences: {},
      }),
      { mode: 0o600 },
    );
    rt.kubeconfig = kubeconfig;
  }

  /**
   * Writes ConfigMap/Secret/projected/downwardAPI volumes as files under `<podDir>/mounts/<mountPath>`
   * (one file for a `subPath`), makes emptyDirs, and links PersistentVolumeClaims to
   * `<dir>/volumes/<ns>/<claim>`, which outlives the pod.
   */
  async function writeVolumes(pod: KObject, rt: Runtime, refresh = false): Promise<void> {
    const spec = pod.spec as PodSpec;
    for (const mount of rt.container.volumeMounts ?? []) {
      const vol = spec.volumes?.find((v) => v.name === mount.name);
      if (!vol) throw new Error(`volume ${mount.name} not found`);
      const target = path.join(rt.dir, 'mounts', mount.mountPath);
      if (refresh && (mount.subPath || !(vol.configMap || vol.secret))) continue;
      if (rt.terminating) return;
      await mkdir(path.dirname(target), { recursive: true });
      if (vol.persistentVolumeClaim) {
        const claimDir = path.join(opts.dir, 'volumes', rt.namespace, vol.persistentVolumeClaim.claimName);
        const source = mount.subPath ? path.join(claimDir, mount.subPath) : claimDir;
        await mkdir(source, { recursive: true });
        await symlink(source, target);
        continue;
      }
      let files: VolumeFile[] = [];
      if (vol.configMap) {
        const data = lookupKey(cmT, rt.namespace, vol.configMap, 'configmap');
        files = keyFiles(data, vol.configMap.items, vol.configMap.defaultMode);
      } else if (vol.secret) {
        const data = lookupKey(
          secretT,
          rt.namespace,
          { name: vol.secret.secretName, optional: vol.secret.optional },
          'secret',
        );
        files = keyFiles(data, vol.secret.items, vol.secret.defaultMode);
      } else if (vol.projected) files = projectedFiles(pod, rt, vol.projected);
      else if (vol.downwardAPI)
        files = downwardFiles(pod, rt, vol.downwardAPI.items, vol.downwardAPI.defaultMode);
      if (mount.subPath) {
        const file = files.find((f) => f.path === mount.subPath);
        if (file) await writeFile(target, file.content, { mode: file.mode ?? 0o644 });
        else await mkdir(target, { recursive: true });
        continue;
      }
      await mkdir(target, { recursive: true });
      const written = new Set<string>();
      for (const f of files) {
        const file = path.join(target, f.path);
        written.add(file);
        await mkdir(path.dirname(file), { recursive: true });
        // Atomic replacement, so a process never reads a half-written file.
        const tmp = `${file}.${process.pid}.tmp`;
        await writeFile(tmp, f.content, { mode: f.mode ?? 0o644 });
        await rename(tmp, file);
      }
      for (const file of rt.volumeFiles.get(target) ?? [])
        if (!written.has(file)) await rm(file, { force: true });
      rt.volumeFiles.set(target, written);
    }
  }

  /** Rewrites the ConfigMap/Secret volumes of running pods that use a changed object. */
  function refreshVolumes(e: StoreEvent): void {
    const name = e.object.metadata.name;
    for (const rt of runtimes.values()) {
      if (rt.terminating || !rt.volumesWritten || rt.namespace !== e.namespace) continue;
      const pod = currentPod(rt);
      const uses = ((pod?.spec as PodSpec | undefined)?.volumes ?? []).some((v) =>
        e.key === '/configmaps' ? v.configMap?.name === name : v.secret?.secretName === name,
      );
      if (!pod || !uses) continue;
      rt.volumeUpdates = rt.volumeUpdates
        .then(() => writeVolumes(pod, rt, true))
        .catch((err: unknown) => {
          if (!stopped && !rt.terminating) onError(err);
        });
    }
  }

  /** Rewrites values that are mountPaths (or lie under one) to their host paths. */
  function rewritePaths(value: string, rt: Runtime): string {
    const mounts = [...(rt.container.volumeMounts ?? []).map((m) => m.mountPath), ...rt.implicitMounts].sort(
      (a, b) => b.length - a.length,
    );
    const one = (v: string): string => {
      for (const m of mounts) {
        const mp = m.replace(/\/+$/, '');
        if (v === mp || v.startsWith(`${mp}/`)) return path.join(rt.dir, 'mounts', mp) + v.slice(mp.length);
      }
      return v;
    };
    const eq = value.indexOf('=');
    if (eq > 0 && value.slice(eq + 1).startsWith('/'))
      return value.slice(0, eq + 1) + one(value.slice(eq + 1));
    return one(value);
  }

  function start(pod: KObject): void {
    const spec = pod.spec as PodSpec;
    const container = spec.containers?.[0] ?? {};
    const uid = pod.metadata.uid ?? '';
    const name = pod.metadata.name ?? '';
    const namespace = pod.metadata.namespace ?? '';
    let ip = allocate();
    const used = new Set([...runtimes.values()].map((r) => r.ip));
    for (let i = 0; i < 254 && used.has(ip); i++) ip = allocate();
    const dir = path.join(opts.dir, `${namespace}_${name}_${uid.slice(0, 8)}`);
    const rt: Runtime = {
      uid,
      namespace,
      name,
      ip,
      dir,
      log: path.join(dir, `${container.name ?? 'main'}.log`),
      container,
      restartCount: 0,
      ready: false,
      successes: 0,
      failures: 0,
      terminating: false,
      graceSeconds: spec.terminationGracePeriodSeconds ?? 30,
      restartPolicy: spec.restartPolicy ?? 'Always',
      timers: new Set(),
      exited: Promise.resolve(),
      startMs: 0,
      volumeFiles: new Map(),
      volumesWritten: false,
      volumeUpdates: Promise.resolve(),
      implicitMounts: [],
    };
    runtimes.set(uid, rt);
    const image = container.image ? opts.images[container.image] : undefined;
    if (!image) {
      rt.waiting = { reason: 'ErrImagePull', message: `no local command for image ${container.image ?? ''}` };
      writePodStatus(rt);
      return;
    }
    // Prepares volumes and starts the process; retried every second while that fails (a missing
    // ConfigMap, say), as a kubelet does.
    const prepare = async (current: KObject) => {
      await rm(path.join(dir, 'mounts'), { recursive: true, force: true });
      await mkdir(dir, { recursive: true });
      await writeVolumes(current, rt);
      await writeServiceAccount(current, rt);
      rt.volumesWritten = true;
      // A ConfigMap or Secret change that came while the volumes were first written was skipped by
      // refreshVolumes: write them once more from the store's current data.
      rt.volumeUpdates = rt.volumeUpdates
        .then(() => writeVolumes(current, rt, true))
        .catch((err: unknown) => {
          if (!stopped && !rt.terminating) onError(err);
        });
      if (rt.terminating || stopped) return;
      spawnProcess(current, rt, image);
      startProbes(rt);
    };
    const attempt = (current: KObject) =>
      prepare(current).catch((err: unknown) => {
        if (rt.terminating || stopped) return;
        rt.waiting = { reason: 'CreateContainerConfigError', message: String(err) };
        guard(() => writePodStatus(rt));
        const timer = setTimeout(() => {
          rt.timers.delete(timer);
          const latest = currentPod(rt);
          if (latest && !rt.terminating && !stopped) void attempt(latest);
        }, 1_000);
        rt.timers.add(timer);
      });
    void attempt(pod);
  }

  function spawnProcess(pod: KObject, rt: Runtime, image: ImageCommand): void {
    if (rt.terminating || stopped) return;
    const env = buildEnv(pod, rt);
    const c = rt.container;
    const fix = (s: string) => rewritePaths(expand(s, env), rt);
    const argv = c.command?.length
      ? [...c.command, ...(c.args ?? [])].map(fix)
      : [image.command, ...(image.args ?? []), ...(c.args ?? []).map(fix)];
    for (const [k, v] of Object.entries(env)) env[k] = rewritePaths(v, rt);
    rt.env = env;
    const fd = openSync(rt.log, 'a');
    let child: ChildProcess;
    try {
      child = spawn(argv[0], argv.slice(1), { cwd: rt.dir, env, stdio: ['ignore', fd, fd], detached: true });
    } finally {
      closeSync(fd);
    }
    rt.child = child;
    rt.pid = child.pid;
    if (child.pid) pids.add(child.pid);
    rt.startMs = Date.now();
    const startedAt = nowTimestamp();
    let resolveExit!: () => void;
    rt.exited = new Promise<void>((resolve) => (resolveExit = resolve));
    child.on('error', (err) => {
      rt.waiting = { reason: 'RunContainerError', message: err.message };
    });
    child.on('spawn', () => {
      rt.startedAt = startedAt;
      rt.waiting = undefined;
      if (!c.readinessProbe) rt.ready = true;
      guard(() => writePodStatus(rt));
    });
    child.on('close', (code, signal) => {
      if (child.pid) killGroup(child.pid); // leftovers of the process group
      rt.ready = false;
      rt.successes = 0;
      rt.lastTerminated = {
        exitCode: code ?? 128 + (signal ? 9 : 0),
        ...(signal ? { signal } : {}),
        startedAt,
        finishedAt: nowTimestamp(),
      };
      rt.child = undefined;
      resolveExit();
      if (rt.terminating || stopped) return;
      const restart = rt.restartPolicy === 'Always' || (rt.restartPolicy === 'OnFailure' && code !== 0);
      if (!restart) {
        rt.waiting = { reason: code === 0 ? 'Completed' : 'Error' };
        guard(() => writePodStatus(rt));
        return;
      }
      const ranMs = Date.now() - rt.startMs;
      const delay =
        ranMs > 10_000
          ? initialBackoff
          : Math.min(maxBackoff, initialBackoff * 2 ** Math.min(rt.restartCount, 20));
      rt.restartCount++;
      rt.waiting = { reason: 'CrashLoopBackOff', message: `back-off ${delay}ms restarting failed container` };
      guard(() => writePodStatus(rt));
      const timer = setTimeout(() => {
        rt.timers.delete(timer);
        const current = currentPod(rt);
        if (current && !rt.terminating) guard(() => spawnProcess(current, rt, image));
      }, delay);
      rt.timers.add(timer);
    });
  }

  /** A probe's or hook's port: a number, or the name of one of the container's ports. */
  const containerPort = (rt: Runtime, p: number | string) =>
    typeof p === 'number' ? p : (rt.container.ports?.find((x) => x.name === p)?.containerPort ?? Number(p));

  function probeOnce(rt: Runtime, probe: Probe): Promise<boolean> {
    const portOf = (p: number | string) => containerPort(rt, p);
    const timeoutMs = (probe.timeoutSeconds ?? 1) * 1000;
    return new Promise<boolean>((resolve) => {
      if (probe.httpGet) {
        const req = http.get(
          {
            host: probe.httpGet.host ?? rt.ip,
            port: portOf(probe.httpGet.port),
            path: probe.httpGet.path ?? '/',
            agent: false,
            timeout: timeoutMs,
          },
          (res) => {
            res.resume();
            resolve((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 400);
          },
        );
        req.on('timeout', () => req.destroy());
        req.on('error', () => resolve(false));
      } else if (probe.tcpSocket) {
        const sock = net.connect({ host: probe.tcpSocket.host ?? rt.ip, port: portOf(probe.tcpSocket.port) });
        sock.setTimeout(timeoutMs, () => sock.destroy());
        sock.on('connect', () => (sock.destroy(), resolve(true)));
        sock.on('error', () => resolve(false));
        sock.on('close', () => resolve(false));
      } else resolve(true); // exec probes are not supported: treated as passing
    });
  }

  /** Runs `fn` every `periodSeconds` (after `initialDelaySeconds`) until the pod terminates. */
  function every(rt: Runtime, probe: Probe, fn: () => Promise<void>): void {
    const periodMs = Math.max(100, (probe.periodSeconds ?? 10) * 1000);
    const tick = async () => {
      if (rt.terminating || stopped) return;
      await fn().catch((err: unknown) => onError(err));
      if (rt.terminating || stopped) return;
      const timer = setTimeout(() => {
        rt.timers.delete(timer);
        void tick();
      }, periodMs);
      rt.timers.add(timer);
    };
    const first = setTimeout(
      () => {
        rt.timers.delete(first);
        void tick();
      },
      (probe.initialDelaySeconds ?? 0) * 1000,
    );
    rt.timers.add(first);
  }

  const isRunning = (child: ChildProcess | undefined): child is ChildProcess =>
    child !== undefined && child.exitCode === null && child.signalCode === null;

  function startProbes(rt: Runtime): void {
    const readiness = rt.container.readinessProbe;
    if (readiness)
      every(rt, readiness, async () => {
        const child = rt.child;
        if (!isRunning(child)) return;
        const ok = await probeOnce(rt, readiness);
        if (rt.terminating || stopped || rt.child !== child) return;
        if (ok && isRunning(child)) {
          rt.failures = 0;
          if (++rt.successes >= (readiness.successThreshold ?? 1)) rt.ready = true;
        } else {
          rt.successes = 0;
          if (++rt.failures >= (readiness.failureThreshold ?? 3) || !isRunning(child)) rt.ready = false;
        }
        guard(() => writePodStatus(rt));
      });
    const liveness = rt.container.livenessProbe;
    let probed: ChildProcess | undefined;
    let failures = 0;
    if (liveness)
      every(rt, liveness, async () => {
        const child = rt.child;
        if (!isRunning(child) || !child.pid) return;
        if (child !== probed) {
          probed = child;
          failures = 0;
        }
        if (Date.now() - rt.startMs < (liveness.initialDelaySeconds ?? 0) * 1000) return;
        const ok = await probeOnce(rt, liveness);
        if (rt.terminating || stopped || rt.child !== child || !isRunning(child)) return;
        if (ok) failures = 0;
        else if (++failures >= (liveness.failureThreshold ?? 3)) {
          // Like a kubelet: kill the container (preStop included); the restart policy brings it back.
          failures = 0;
          void killContainer(rt, child, rt.graceSeconds, true);
        }
      });
  }

  /** Appends a line to the pod's container log (what a kubelet would report as an event). */
  function note(rt: Runtime, line: string): void {
    void appendFile(rt.log, `[kubelet] ${line}\n`).catch(() => undefined);
  }

  /**
   * Runs a container's preStop hook until it finishes or `deadline` (ms) passes: exec (the command
   * with the process's environment and cwd, mount paths rewritten as for commands; no `$(VAR)`
   * expansion, as in Kubernetes), httpGet (GET to the pod IP unless `host` is given) or sleep.
   * Failures are noted in the container log; termination goes on either way.
   */
  async function runPreStop(rt: Runtime, hook: LifecycleHandler, deadline: number): Promise<void> {
    const left = () => Math.max(0, deadline - Date.now());
    if (hook.exec?.command?.length) {
      const argv = hook.exec.command.map((a) => rewritePaths(a, rt));
      const fd = openSync(rt.log, 'a');
      let child: ChildProcess;
      try {
        child = spawn(argv[0], argv.slice(1), {
          cwd: rt.dir,
          env: rt.env ?? {},
          stdio: ['ignore', fd, fd],
          detached: true,
        });
      } finally {
        closeSync(fd);
      }
      if (child.pid) pids.add(child.pid);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          note(rt, `preStop hook ${JSON.stringify(argv)} still running at the end of the grace period`);
          if (child.pid) killGroup(child.pid);
          resolve();
        }, left());
        child.on('error', (err) => {
          clearTimeout(timer);
          note(rt, `preStop hook ${JSON.stringify(argv)} failed: ${err.message}`);
          resolve();
        });
        child.on('close', (code, signal) => {
          clearTimeout(timer);
          if (child.pid) killGroup(child.pid);
          if (code !== 0) note(rt, `preStop hook ${JSON.stringify(argv)} exited with ${code ?? signal}`);
          resolve();
        });
      });
    } else if (hook.httpGet) {
      const get = hook.httpGet;
      await new Promise<void>((resolve) => {
        const req = http.get(
          {
            host: get.host ?? rt.ip,
            port: containerPort(rt, get.port),
            path: get.path ?? '/',
            headers: Object.fromEntries((get.httpHeaders ?? []).map((h) => [h.name, h.value])),
            agent: false,
          },
          (res) => {
            if ((res.statusCode ?? 0) >= 400)
              note(rt, `preStop hook GET ${get.path ?? '/'}: ${res.statusCode}`);
            res.resume();
          },
        );
        const timer = setTimeout(() => req.destroy(new Error('timed out')), left());
        req.on('error', (err) => note(rt, `preStop hook GET ${get.path ?? '/'} failed: ${err.message}`));
        req.on('close', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    } else if (hook.sleep)
      await new Promise<void>((resolve) => setTimeout(resolve, Math.min(hook.sleep!.seconds * 1000, left())));
  }

  /**
   * Stops a container's process as a kubelet does: the preStop hook (when `hook`), then SIGTERM, then
   * SIGKILL at the deadline: `graceSeconds` after the start, the hook's time included, but at least
   * 2 s after a hook (the kubelet's minimum shutdown window).
   */
  function killContainer(
    rt: Runtime,
    child: ChildProcess,
    graceSeconds: number,
    hook: boolean,
  ): Promise<void> {
    if (rt.killing?.child === child) return rt.killing.done;
    const exited = rt.child === child ? rt.exited : Promise.resolve();
    const done = (async () => {
      const deadline = Date.now() + graceSeconds * 1000;
      let killAt = deadline;
      const preStop = rt.container.lifecycle?.preStop;
      if (hook && preStop && isRunning(child)) {
        await runPreStop(rt, preStop, deadline);
        killAt = Math.max(deadline, Date.now() + MIN_GRACE_AFTER_HOOK_MS);
      }
      const pid = child.pid;
      if (!pid || !isRunning(child)) return;
      signalOf(pid, 'SIGTERM');
      const kill = setTimeout(() => signalOf(pid, 'SIGKILL'), Math.max(0, killAt - Date.now()));
      await exited;
      clearTimeout(kill);
    })();
    rt.killing = { child, done };
    return done;
  }

  /**
   * preStop (when `hooks`), SIGTERM, SIGKILL after the grace period; then removes the pod dir and the
   * finalizer.
   */
  function terminate(rt: Runtime, graceSeconds?: number, hooks = false): Promise<void> {
    if (rt.done) return rt.done;
    rt.terminating = true;
    rt.ready = false;
    for (const t of rt.timers) clearTimeout(t);
    rt.timers.clear();
    rt.done = (async () => {
      const child = rt.child;
      if (child?.pid && isRunning(child))
        await killContainer(rt, child, graceSeconds ?? rt.graceSeconds, hooks);
      await rm(rt.dir, { recursive: true, force: true, maxRetries: 3 }).catch(() => undefined);
      runtimes.delete(rt.uid);
      const pod = currentPod(rt);
      if (pod?.metadata.deletionTimestamp || (pod && stopped)) guard(() => dropFinalizer(pod));
      if (!stopped) schedule();
    })();
    return rt.done;
  }

  schedule();

  // `kubectl logs`: the API server reads the log files named here (`<podDir>/<container>.log`).
  opts.server.setPodLogSource?.({
    logFile: (pod, container) => {
      const rt = runtimes.get(pod.uid);
      return rt && path.join(rt.dir, `${container}.log`);
    },
    running: (pod, container) => {
      const rt = runtimes.get(pod.uid);
      return rt?.child !== undefined && (rt.container.name ?? 'main') === container;
    },
  });

  return {
    pods: () =>
      [...runtimes.values()].map((rt) => ({
        namespace: rt.namespace,
        name: rt.name,
        uid: rt.uid,
        ip: rt.ip,
        dir: rt.dir,
        pid: rt.child?.pid,
        restartCount: rt.restartCount,
        ready: rt.ready,
      })),
    spawnedPids: () => [...pids],
    logPath: (namespace, name) =>
      [...runtimes.values()].find((rt) => rt.namespace === namespace && rt.name === name)?.log,
    services,
    async stop(stopOpts = {}) {
      stopped = true;
      unsubscribe();
      opts.server.setPodLogSource?.(undefined);
      await services?.stop();
      await Promise.all([...runtimes.values()].map((rt) => terminate(rt, stopOpts.graceSeconds)));
    },
  };
}
