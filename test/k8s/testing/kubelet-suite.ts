/**
 * The set-up the process kubelet's tests share. `kubeletSuite()`, called inside a `describe`, gives that
 * block one API server and one process kubelet (`startTestCluster` from harness.ts, with an address block
 * of its own and its files in a fresh temporary folder), collects the kubelet's errors, and at the end
 * stops it and checks that no process it spawned is left and that it hit no error. Its getters read the
 * store (`get`, `pod`, `ready`) and its `k`/`apply` run kubectl against the server.
 *
 * The podserver fixture (`fixtures/podserver.ts`) is the image most of these tests run: every suite's
 * kubelet maps `PODSERVER_IMAGE` to it (`podserver`), and `askPodserver` reads the JSON description it
 * answers with at `/`.
 */
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import type { KObject } from '../apiserver/objects.js';
import type { ResourceType } from '../apiserver/resources.js';
import type { ApiServer } from '../apiserver/server.js';
import { startTestCluster, type AddressBlock, type Kubectl, type TestCluster } from '../harness.js';
import { processAlive } from '../helpers/ports.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';
import {
  isRunningAndReady,
  type ImageCommand,
  type Kubelet,
  type KubeletOptions,
} from '../kubelet/kubelet.js';

/** A fixture program, by its name in `fixtures/` (`podserver`, `hook`, `kubeclient`), as built. */
export const fixturePath = (name: string) =>
  fileURLToPath(new URL(`../fixtures/${name}.js`, import.meta.url));

export const PODSERVER_IMAGE = 'cartero.test/podserver:1';
/** The podserver fixture as an image's command. */
export const podserver: ImageCommand = { command: process.execPath, args: [fixturePath('podserver')] };

/** What the podserver answers at `/`. */
export interface PodserverAnswer {
  pid: number;
  env: Record<string, string>;
  argv: string[];
  cwd: string;
  /** The client's address as the pod saw it. */
  remote: string;
  /** The content of `--file` (when given). */
  content?: string;
  /** `--state`'s starts.log (when given). */
  starts?: string;
}

export const podIP = (p: KObject) => (p.status as { podIP: string }).podIP;

/** GET / of a podserver at `ip:port`. */
export async function askPodserver(ip: string, port = 8080): Promise<PodserverAnswer> {
  const res = await fetch(`http://${ip}:${port}/`);
  return (await res.json()) as PodserverAnswer;
}

export interface KubeletSuiteOptions {
  /** Prefix of the suite's temporary folder. */
  tmpPrefix: string;
  /**
   * The kubelet's options (`server`, `dir`, `podAddresses` and `onError` are the suite's); `images` adds
   * to `PODSERVER_IMAGE`, which runs the podserver.
   */
  kubelet?: Partial<Omit<KubeletOptions, 'server' | 'dir' | 'podAddresses' | 'onError'>>;
  /** Runs once the API server is up, before the kubelet starts (subscriptions that must see every pod). */
  beforeKubelet?: (api: ApiServer) => void;
  /** The grace period of the pods still running at the end (default: each pod's own). */
  stopGraceSeconds?: number;
}

export interface KubeletSuite {
  /** The suite's temporary folder: the API server's files in `api/`, the pods' in `pods/`. */
  readonly dir: string;
  readonly cluster: TestCluster;
  readonly server: ApiServer;
  readonly kubelet: Kubelet;
  readonly addresses: AddressBlock;
  readonly kubectl: Kubectl;
  /** `kubectl <args>`: stdout; rejects on a non-zero exit. */
  k(...args: string[]): Promise<string>;
  /** `kubectl apply -f -` of `yaml`. */
  apply(yaml: string): Promise<string>;
  /** A resource type the server serves (throws if it does not). */
  resource(group: string, version: string, plural: string): ResourceType;
  /** An object from the store, undefined when there is none. */
  get(type: ResourceType, name: string, namespace?: string): KObject | undefined;
  /** The objects of a type in a namespace. */
  list(type: ResourceType, namespace?: string): KObject[];
  pod(name: string, namespace?: string): KObject | undefined;
  /** The pod exists, runs and is Ready. */
  ready(name: string, namespace?: string): boolean;
}

/** Registers the suite's `before` and `after` hooks in the enclosing `describe`; see the module comment. */
export function kubeletSuite(opts: KubeletSuiteOptions): KubeletSuite {
  let dir: string | undefined;
  let cluster: TestCluster | undefined;
  const errors: unknown[] = [];
  const started = (): TestCluster => {
    if (!cluster) throw new Error('the kubelet suite has not started: use it in its tests and hooks');
    return cluster;
  };

  before(async () => {
    dir = await makeTmpDir(opts.tmpPrefix);
    cluster = await startTestCluster({
      dir,
      kubelet: {
        ...opts.kubelet,
        images: { [PODSERVER_IMAGE]: podserver, ...opts.kubelet?.images },
        onError: (err) => errors.push(err),
      },
      beforeKubelet: opts.beforeKubelet,
    });
  });

  after(async () => {
    const pids = cluster?.kubelet?.spawnedPids() ?? [];
    try {
      await cluster?.stop({ graceSeconds: opts.stopGraceSeconds });
    } finally {
      if (dir) await removeTmpDir(dir);
    }
    for (const pid of pids) assert.ok(!processAlive(pid), `process ${pid} is gone`);
    assert.deepEqual(errors, [], 'the kubelet hit no errors');
  });

  const suite: KubeletSuite = {
    get dir() {
      started();
      return dir!;
    },
    get cluster() {
      return started();
    },
    get server() {
      return started().api;
    },
    get kubelet() {
      return started().kubelet!;
    },
    get addresses() {
      return started().addresses;
    },
    get kubectl() {
      return started().kubectl;
    },
    k: (...args) => started().kubectl(args),
    apply: (yaml) => started().kubectl(['apply', '-f', '-'], yaml),
    resource(group, version, plural) {
      const t = started().api.registry.find(group, version, plural);
      if (!t) throw new Error(`no resource ${plural}.${group || 'core'}/${version}`);
      return t;
    },
    get(type, name, namespace = 'default') {
      try {
        return started().api.store.get(type, namespace, name);
      } catch {
        return undefined;
      }
    },
    list: (type, namespace = 'default') => started().api.store.list(type, { namespace }).items,
    pod: (name, namespace = 'default') => suite.get(suite.resource('', 'v1', 'pods'), name, namespace),
    ready(name, namespace = 'default') {
      const p = suite.pod(name, namespace);
      return !!p && isRunningAndReady(p);
    },
  };
  return suite;
}
