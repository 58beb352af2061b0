/**
 * What the operator's end-to-end tests share: a test cluster (API server + process kubelet running the
 * relay image as real relay processes), a test MX, the CRDs and one namespace applied, the Operator
 * started in-process, and the hooks that stop it all; plus reading SmtpRelays, pod IPs, the fleet's
 * admin token and the relays' admin API.
 *
 * `operatorE2e()` registers the before/after hooks of the calling test file; call it at module level. A
 * file's own set-up on the cluster goes into a describe's before: Node 20 starts a file's root-level
 * hooks together, not one after the other.
 */
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import type { Registry } from 'prom-client';
import type { Condition, SmtpRelay } from '../../operator/src/api/types.js';
import { Operator } from '../../operator/src/controller.js';
import type { ApiServer } from '@cartero/k8s-testbed/apiserver/server.js';
import { startTestCluster, type Kubectl, type TestCluster } from '@cartero/k8s-testbed/harness.js';
import { waitFor } from './poll.js';
import { RELAY_MAIN } from './relay.js';
import { startTestMx, type TestMx } from './testmx.js';
import { makeTmpDir, removeTmpDir } from './tmp.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
/** The relay image the process kubelet runs as the relay's main. */
export const IMAGE = 'cartero/relay:test';

export interface OperatorE2eOptions {
  /** Name of the temporary directory. */
  name: string;
  /** The namespace the fleets live in. */
  namespace: string;
  /** Where the test MX listens (the fleets route example.test there). */
  mxAddress: string;
  /** Manifests applied after the CRDs, before the namespace (e.g. third-party CRDs). */
  manifests?: string[];
  /** The operator's metrics registry. */
  metrics?: Registry;
  /** The operator's DNS check interval (IpPool addresses, DKIM records); its default otherwise. */
  dnsCheckIntervalMs?: number;
}

export interface OperatorE2e {
  readonly dir: string;
  readonly api: ApiServer;
  readonly mx: TestMx;
  readonly operator: Operator;
  readonly kubectl: Kubectl;
  /** kubectl apply -f - */
  apply(yaml: string): Promise<string>;
  /** A new Operator on the cluster, started (after a test stopped the previous one). */
  startOperator(): Promise<void>;
  /** An object of the namespace as JSON, undefined when there is none. */
  getJson<T>(...args: string[]): Promise<T | undefined>;
  /** The SmtpRelay `name` (default fleet), undefined when there is none. */
  getRelay(name?: string): Promise<SmtpRelay | undefined>;
  /** A pod's IP, once it has one. */
  podIp(name: string): Promise<string>;
  /** The admin API token of the fleet `relay` (default fleet), from its Secret. */
  adminToken(relay?: string): Promise<string>;
  /** A call to a pod's admin API (port 9025) with the fleet's token; the reply must be a 2xx. */
  admin<T>(pod: string, method: string, p: string, body?: unknown): Promise<T>;
  /** The routing entry sending example.test to the test MX (on `port`, default the MX's). */
  route(port?: number): string;
  /**
   * The SmtpRelay fleet of the test image: `tenants` (YAML list items), example.test routed to the test MX
   * (on `mxPort`), and `extra` spec lines at the end.
   */
  relayManifest(o: { replicas: number; tenants: string; mxPort?: number; extra?: string }): string;
  /** Until the fleet's status describes the current spec and it is Ready. */
  waitForCurrentConfig(what?: string): Promise<void>;
}

/** A tenant's SMTP credentials: a basic-auth Secret. */
export const credentialsSecret = (o: {
  name: string;
  namespace: string;
  username: string;
  password: string;
}) => `
apiVersion: v1
kind: Secret
metadata: {name: ${o.name}, namespace: ${o.namespace}}
type: kubernetes.io/basic-auth
stringData: {username: ${o.username}, password: ${o.password}}
`;

/** A condition of an object's status. */
export const cond = (o: { status?: { conditions?: Condition[] } } | undefined, type: string) =>
  o?.status?.conditions?.find((c) => c.type === type);

export function operatorE2e(o: OperatorE2eOptions): OperatorE2e {
  let dir: string;
  let cluster: TestCluster;
  let mx: TestMx;
  let operator: Operator;
  let kc: KubeConfig;
  const ns = o.namespace;
  const kubectl: Kubectl = Object.assign((args: string[], input?: string) => cluster.kubectl(args, input), {
    run: (args: string[], input?: string) => cluster.kubectl.run(args, input),
  });
  const apply = (yaml: string) => kubectl(['apply', '-f', '-'], yaml);
  const getJson = async <T>(...args: string[]): Promise<T | undefined> => {
    const out = await kubectl(['get', ...args, '-n', ns, '-o', 'json', '--ignore-not-found']);
    return out.trim() ? (JSON.parse(out) as T) : undefined;
  };
  const getRelay = (name = 'fleet') => getJson<SmtpRelay>('smr', name);
  const podIp = (name: string) =>
    waitFor(
      async () =>
        (
          await kubectl([
            'get',
            'pod',
            name,
            '-n',
            ns,
            '-o',
            'jsonpath={.status.podIP}',
            '--ignore-not-found',
          ])
        ).trim() || undefined,
      { what: `pod ${name} to have an IP`, timeoutMs: 30_000, intervalMs: 200 },
    );
  const adminToken = async (relay = 'fleet') => {
    const s = await getJson<{ data: Record<string, string> }>('secret', `${relay}-secrets`);
    assert.ok(s, `Secret ${relay}-secrets`);
    return Buffer.from(s.data['admin.token'], 'base64').toString();
  };
  const startOperator = () => {
    operator = new Operator({
      kc,
      log: pino({ level: process.env.OPERATOR_LOG ?? 'silent' }),
      defaultImage: IMAGE,
      ...(o.metrics ? { metrics: o.metrics } : {}),
      ...(o.dnsCheckIntervalMs ? { dnsCheckIntervalMs: o.dnsCheckIntervalMs } : {}),
      statusIntervalMs: 500,
    });
    return operator.start();
  };

  before(async () => {
    dir = await makeTmpDir(o.name);
    cluster = await startTestCluster({
      dir,
      kubelet: { images: { [IMAGE]: { command: process.execPath, args: [RELAY_MAIN] } } },
    });
    mx = await startTestMx({ address: o.mxAddress });
    await kubectl(['apply', '-f', path.join(ROOT, 'crds')]);
    for (const m of o.manifests ?? []) await apply(m);
    await apply(`apiVersion: v1\nkind: Namespace\nmetadata: {name: ${ns}}\n`);
    kc = new KubeConfig();
    kc.loadFromFile(cluster.api.kubeconfig);
    await startOperator();
  });

  after(async () => {
    await operator?.stop();
    await cluster?.stop();
    await mx?.close();
    if (process.env.KEEP_TMP) console.log(`kept ${dir}`);
    else await removeTmpDir(dir);
  });

  return {
    get dir() {
      return dir;
    },
    get api() {
      return cluster.api;
    },
    get mx() {
      return mx;
    },
    get operator() {
      return operator;
    },
    kubectl,
    apply,
    startOperator,
    getJson,
    getRelay,
    podIp,
    adminToken,
    async admin<T>(pod: string, method: string, p: string, body?: unknown): Promise<T> {
      const res = await fetch(`http://${await podIp(pod)}:9025${p}`, {
        method,
        headers: { authorization: `Bearer ${await adminToken()}`, 'content-type': 'application/json' },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
      assert.ok(res.ok, `${method} ${p} on ${pod}: ${res.status} ${await res.clone().text()}`);
      return (await res.json()) as T;
    },
    route: (port?: number) =>
      `      - {domain: example.test, host: ${o.mxAddress}, port: ${port ?? mx.port}, tls: none}`,
    relayManifest: (r) => `
apiVersion: cartero.io/v1alpha1
kind: SmtpRelay
metadata: {name: fleet, namespace: ${ns}}
spec:
  replicas: ${r.replicas}
  image: ${IMAGE}
  terminationGracePeriodSeconds: 15
  tenants:
${r.tenants}
  routing:
    domains:
      - {domain: example.test, host: ${o.mxAddress}, port: ${r.mxPort ?? mx.port}, tls: none}
${r.extra ?? ''}`,
    async waitForCurrentConfig(what = 'the fleet to run the current config') {
      await waitFor(
        async () => {
          const r = await getRelay();
          return (
            r?.status?.observedGeneration === r?.metadata.generation && cond(r, 'Ready')?.status === 'True'
          );
        },
        { timeoutMs: 60_000, intervalMs: 250, what },
      );
    },
  };
}
