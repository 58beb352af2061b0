/**
 * One test harness for everything that needs a cluster: the API server, optionally the process kubelet,
 * a kubectl helper bound to its kubeconfig, and loopback address blocks that no other test process
 * holds at the same time (pods and Service cluster IPs). Tests used to build these by hand, each with its
 * own `kubectl()` and a subnet derived from `process.pid`, which two test files could share.
 */
import { execFile } from 'node:child_process';
import { closeSync, openSync, readFileSync, unlinkSync, writeSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startApiServer, type ApiServer, type ApiServerOptions } from './apiserver/server.js';
import { loopbackAddresses, startKubelet, type Kubelet, type KubeletOptions } from './kubelet/kubelet.js';

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** kubectl against one kubeconfig: the call resolves stdout and rejects on a non-zero exit. */
export interface Kubectl {
  (args: string[], input?: string): Promise<string>;
  /** Resolves whatever the exit code (to check refusals). */
  run(args: string[], input?: string): Promise<KubectlResult>;
}

export interface KubectlOptions {
  /** Per call (default 60 s). */
  timeoutMs?: number;
  /** The binary (default `kubectl` on PATH). */
  binary?: string;
}

export function kubectlFor(kubeconfig: string, cacheDir: string, opts: KubectlOptions = {}): Kubectl {
  const run = (args: string[], input?: string): Promise<KubectlResult> =>
    new Promise((resolve) => {
      const all = ['--kubeconfig', kubeconfig, '--cache-dir', cacheDir, ...args];
      const child = execFile(
        opts.binary ?? 'kubectl',
        all,
        { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024 },
        (err, stdout, stderr) => {
          const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
          resolve({ code, stdout, stderr: stderr || (err ? err.message : '') });
        },
      );
      child.stdin?.on('error', () => {}); // kubectl may exit before reading its input
      child.stdin?.end(input ?? '');
    });
  const ok = async (args: string[], input?: string): Promise<string> => {
    const r = await run(args, input);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed (exit ${r.code}): ${r.stderr}`);
    return r.stdout;
  };
  return Object.assign(ok, { run });
}

/**
 * Two /24s on loopback for one test process: `podPrefix` (`127.A.B`, pods get `.1`–`.254`) and
 * `serviceRange` (`127.A.B+1.0/24`, the API server's `--service-cluster-ip-range`), plus a third
 * (`clientPrefix`) for test clients that must not look like pods.
 */
export interface AddressBlock {
  /** Which block (the lock file's name). */
  index: number;
  podPrefix: string;
  serviceRange: string;
  /** The first address of the service range, what the API server gives the first Service. */
  serviceBase: string;
  clientPrefix: string;
  /** A fresh `loopbackAddresses` over the pod prefix. */
  podAddresses(): () => string;
  release(): void;
}

export const ADDRESS_LOCKS_DIR = path.join(os.tmpdir(), 'cartero-k8s-testbed-addresses');
/** Blocks of four /24s from 127.100.0.0 to 127.199.255.0 (nothing else in the repository uses them). */
const BLOCKS = 100 * 64;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function blockAt(i: number, release: () => void): AddressBlock {
  const a = 100 + Math.floor(i / 64);
  const b = (i % 64) * 4;
  const podPrefix = `127.${a}.${b}`;
  return {
    index: i,
    podPrefix,
    serviceRange: `127.${a}.${b + 1}.0/24`,
    serviceBase: `127.${a}.${b + 1}`,
    clientPrefix: `127.${a}.${b + 2}`,
    podAddresses: () => loopbackAddresses(podPrefix),
    release,
  };
}

/**
 * Claims a block no live process holds: one lock file per block (created exclusively, holding the
 * owner's pid; a dead owner's lock is taken over). Released by `release()` or when the process exits.
 */
export function allocateAddresses(): AddressBlock {
  mkdirSync(ADDRESS_LOCKS_DIR, { recursive: true });
  const start = (process.pid * 7919) % BLOCKS;
  for (let k = 0; k < BLOCKS; k++) {
    const i = (start + k) % BLOCKS;
    const lock = path.join(ADDRESS_LOCKS_DIR, String(i));
    let fd: number;
    try {
      fd = openSync(lock, 'wx');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      let owner: number;
      try {
        owner = Number(readFileSync(lock, 'utf8'));
      } catch {
        continue; // being written or removed right now: try the next block
      }
      if (!Number.isInteger(owner) || owner <= 0 || alive(owner)) continue;
      try {
        unlinkSync(lock); // a dead owner's block; another process may win the race for it
        fd = openSync(lock, 'wx');
      } catch {
        continue;
      }
    }
    writeSync(fd, String(process.pid));
    closeSync(fd);
    let held = true;
    const release = () => {
      if (!held) return;
      held = false;
      process.off('exit', release);
      try {
        unlinkSync(lock);
      } catch {
        // already gone
      }
    };
    process.on('exit', release);
    return blockAt(i, release);
  }
  throw new Error(`no free address block under ${ADDRESS_LOCKS_DIR}`);
}

export interface TestClusterOptions {
  /** Working directory: the API server's files go to `api/`, pods to `pods/`, kubectl's cache to `cache/`. */
  dir: string;
  api?: Omit<ApiServerOptions, 'dir' | 'serviceClusterIpRange'>;
  /** Start the process kubelet with these options (`server`, `dir` and `podAddresses` are filled in). */
  kubelet?: Omit<KubeletOptions, 'server' | 'dir' | 'podAddresses'>;
  kubectl?: KubectlOptions;
  /**
   * Runs once the API server is up, before the kubelet starts: for store subscriptions that must see
   * every event the kubelet causes.
   */
  beforeKubelet?: (api: ApiServer) => void | Promise<void>;
}

export interface TestCluster {
  api: ApiServer;
  /** Set when `kubelet` options were given. */
  kubelet: Kubelet | undefined;
  kubectl: Kubectl;
  addresses: AddressBlock;
  /** Stops the kubelet (its pods' processes), then the API server, and releases the addresses. */
  stop(opts?: { graceSeconds?: number }): Promise<void>;
}

export async function startTestCluster(opts: TestClusterOptions): Promise<TestCluster> {
  const addresses = allocateAddresses();
  let api: ApiServer | undefined;
  try {
    api = await startApiServer({
      ...opts.api,
      dir: path.join(opts.dir, 'api'),
      serviceClusterIpRange: addresses.serviceRange,
    });
    await opts.beforeKubelet?.(api);
    const kubelet = opts.kubelet
      ? startKubelet({
          ...opts.kubelet,
          server: api,
          dir: path.join(opts.dir, 'pods'),
          podAddresses: addresses.podAddresses(),
        })
      : undefined;
    const started = api;
    return {
      api: started,
      kubelet,
      kubectl: kubectlFor(started.kubeconfig, path.join(opts.dir, 'cache'), opts.kubectl),
      addresses,
      async stop(stopOpts) {
        try {
          await kubelet?.stop(stopOpts);
        } finally {
          await started.stop();
          addresses.release();
        }
      },
    };
  } catch (err) {
    await api?.stop();
    addresses.release();
    throw err;
  }
}

/** kubectl for an API server, with its discovery cache under `<dir>/cache`. */
export function kubectlOf(api: Pick<ApiServer, 'kubeconfig'>, dir: string, opts?: KubectlOptions): Kubectl {
  return kubectlFor(api.kubeconfig, path.join(dir, 'cache'), opts);
}
