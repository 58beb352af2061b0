/** The pod runtime's types: the parts of a pod spec it reads, and a pod's runtime state. */
import type { ChildProcess } from 'node:child_process';
import type { Context, KubeletServer } from '../context.js';

export interface ImageCommand {
  command: string;
  args?: string[];
}

export interface Container {
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

export interface LifecycleHandler {
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

export interface NameRef {
  name?: string;
  optional?: boolean;
}

export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: {
    fieldRef?: { fieldPath: string };
    configMapKeyRef?: NameRef & { key: string };
    secretKeyRef?: NameRef & { key: string };
  };
}

export interface Probe {
  httpGet?: { path?: string; port: number | string; host?: string; scheme?: string };
  tcpSocket?: { port: number | string; host?: string };
  initialDelaySeconds?: number;
  periodSeconds?: number;
  timeoutSeconds?: number;
  successThreshold?: number;
  failureThreshold?: number;
}

export interface Volume {
  name: string;
  configMap?: { name?: string; items?: KeyPath[]; optional?: boolean; defaultMode?: number };
  secret?: { secretName?: string; items?: KeyPath[]; optional?: boolean; defaultMode?: number };
  emptyDir?: object;
  persistentVolumeClaim?: { claimName: string };
  projected?: { sources?: ProjectedSource[]; defaultMode?: number };
  downwardAPI?: { items?: DownwardItem[]; defaultMode?: number };
}

export interface DownwardItem {
  path: string;
  fieldRef?: { fieldPath: string };
  mode?: number;
}

export interface ProjectedSource {
  serviceAccountToken?: { path: string; audience?: string; expirationSeconds?: number };
  configMap?: { name?: string; items?: KeyPath[]; optional?: boolean };
  secret?: { name?: string; items?: KeyPath[]; optional?: boolean };
  downwardAPI?: { items?: DownwardItem[] };
}

export interface KeyPath {
  key: string;
  path: string;
  mode?: number;
}

export interface VolumeFile {
  path: string;
  content: string;
  mode?: number;
}

export interface PodSpec {
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

export interface Runtime {
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

/** What the runtime's modules share (one per kubelet). */
export interface RuntimeContext extends Context {
  server: KubeletServer;
  /** image -> local command. */
  images: Record<string, ImageCommand>;
  /** Where pod directories (and claim volumes, `volumes/`) go. */
  dir: string;
  backoff: { initialMs: number; maxMs: number };
  /** Hands out pod addresses. */
  allocate: () => string;
  /** The pods with a runtime, by uid. */
  runtimes: Map<string, Runtime>;
  /** Every pid spawned. */
  pids: Set<number>;
  /** Asks for a sync pass (controllers and pods). */
  schedule: () => void;
  /** Creates a ServiceAccount when missing (undefined when the kubelet plays no ServiceAccount controller). */
  ensureServiceAccount?: (ns: string, name: string) => void;
}

/** A probe's or hook's port: a number, or the name of one of the container's ports. */
export const containerPort = (rt: Runtime, p: number | string) =>
  typeof p === 'number' ? p : (rt.container.ports?.find((x) => x.name === p)?.containerPort ?? Number(p));

export const isRunning = (child: ChildProcess | undefined): child is ChildProcess =>
  child !== undefined && child.exitCode === null && child.signalCode === null;
