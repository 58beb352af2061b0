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
 *
 * Where things live: this file wires the parts (one store subscription, one coalesced sync pass,
 * stop()). Controllers: `statefulsets.ts`, `deployments.ts` (Deployment and ReplicaSet),
 * `serviceaccounts.ts`, `services.ts` (endpoints, EndpointSlices, the proxy); their decisions as pure
 * functions in `decide.ts`; labels, the template hash and conditions in `shared.ts`. The pod runtime
 * is `runtime/`: `pods.ts` (sync, start, spawn, restart), `lifecycle.ts` (preStop, SIGTERM, SIGKILL),
 * `probes.ts`, `volumes.ts`, `env.ts`, `credentials.ts` (ServiceAccount token and kubeconfig),
 * `status.ts` (pod status and finalizer).
 */
import type { StoreEvent } from '../apiserver/store.js';
import { kindsOf, type KubeletServer } from './context.js';
import { deploymentControllers } from './deployments.js';
import { syncPods, podLogSource } from './runtime/pods.js';
import { terminate } from './runtime/lifecycle.js';
import type { ImageCommand, Runtime, RuntimeContext } from './runtime/types.js';
import { refreshVolumes, releaseClaim } from './runtime/volumes.js';
import { serviceAccountController } from './serviceaccounts.js';
import { startServiceProxy, type ServiceProxy } from './services.js';
import { statefulSetController } from './statefulsets.js';

export {
  isRunningAndReady,
  KUBELET_FINALIZER,
  POD_INDEX_LABEL,
  POD_NAME_LABEL,
  REVISION_ANNOTATION,
  REVISION_LABEL,
  revisionOf,
  SERVICEACCOUNT_DIR,
  TEMPLATE_HASH_LABEL,
} from './shared.js';
export type { ImageCommand } from './runtime/types.js';
export type { KubeletServer } from './context.js';

export interface KubeletOptions {
  /**
   * The API server. With `url` and `serviceAccountToken` pods get ServiceAccount credentials (token
   * files, `KUBECONFIG`, `KUBERNETES_SERVICE_HOST`/`_PORT`); `caCert` (PEM) goes to their `ca.crt`.
   */
  server: KubeletServer;
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

/** Hands out `<prefix>.N`, N cycling 1..254 (the kubelet skips addresses its live pods hold). */
export function loopbackAddresses(prefix = '127.0.1'): () => string {
  let n = 0;
  return () => {
    n = (n % 254) + 1;
    return `${prefix}.${n}`;
  };
}

export function startKubelet(opts: KubeletOptions): Kubelet {
  const { store, registry } = opts.server;
  const onError = opts.onError ?? ((err: unknown) => console.error('kubelet:', err));
  const runtimes = new Map<string, Runtime>();
  const ctx: RuntimeContext = {
    store,
    kinds: kindsOf(registry),
    nodeName: opts.nodeName ?? 'cartero-kubelet',
    onError,
    guard: (fn) => {
      try {
        fn();
      } catch (err) {
        if (!ctx.stopped) onError(err);
      }
    },
    stopped: false,
    server: opts.server,
    images: opts.images,
    dir: opts.dir,
    backoff: { initialMs: opts.backoff?.initialMs ?? 200, maxMs: opts.backoff?.maxMs ?? 5_000 },
    allocate: opts.podAddresses ?? loopbackAddresses(),
    runtimes,
    pids: new Set<number>(),
    schedule: () => schedule(),
  };
  const serviceAccounts = opts.serviceAccounts === false ? undefined : serviceAccountController(ctx);
  ctx.ensureServiceAccount = serviceAccounts?.ensure;
  const statefulSets = statefulSetController(ctx);
  const deployments = deploymentControllers(ctx);
  const services = opts.services === false ? undefined : startServiceProxy({ server: opts.server, onError });

  // One sync pass for everything, coalesced: store writes are synchronous, so one event often brings more.
  let scheduled = false;
  const schedule = () => {
    if (scheduled || ctx.stopped) return;
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      if (ctx.stopped) return;
      ctx.guard(statefulSets.sync);
      ctx.guard(deployments.syncDeployments);
      ctx.guard(deployments.syncReplicaSets);
      if (serviceAccounts) ctx.guard(serviceAccounts.sync);
      ctx.guard(() => syncPods(ctx));
    });
  };
  const unsubscribe = store.subscribe((e: StoreEvent) => {
    if (
      e.key === 'apps/statefulsets' ||
      e.key === 'apps/deployments' ||
      e.key === 'apps/replicasets' ||
      e.key === '/pods' ||
      (serviceAccounts && (e.key === '/namespaces' || e.key === '/serviceaccounts'))
    )
      schedule();
    if ((e.key === '/configmaps' || e.key === '/secrets') && !ctx.stopped)
      setImmediate(() => refreshVolumes(ctx, e));
    if (e.key === '/persistentvolumeclaims' && e.type === 'DELETED') releaseClaim(ctx, e);
  });

  schedule();
  opts.server.setPodLogSource?.(podLogSource(ctx));

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
    spawnedPids: () => [...ctx.pids],
    logPath: (namespace, name) =>
      [...runtimes.values()].find((rt) => rt.namespace === namespace && rt.name === name)?.log,
    services,
    async stop(stopOpts = {}) {
      ctx.stopped = true;
      unsubscribe();
      opts.server.setPodLogSource?.(undefined);
      await services?.stop();
      await Promise.all([...runtimes.values()].map((rt) => terminate(ctx, rt, stopOpts.graceSeconds)));
    },
  };
}
