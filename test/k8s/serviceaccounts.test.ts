/**
 * ServiceAccount identity for pods of the process kubelet: the API server maps ServiceAccount tokens
 * to `system:serviceaccount:<ns>:<name>`, the kubelet gives each pod a token, the namespace and a
 * kubeconfig (`KUBECONFIG`), and a program using client-node's `loadFromDefault()` runs unchanged.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { waitFor } from './helpers/poll.js';
import type { KObject } from './apiserver/objects.js';
import { isRunningAndReady, SERVICEACCOUNT_DIR } from './kubelet/kubelet.js';
import { askPodserver, fixturePath, kubeletSuite, podIP } from './testing/kubelet-suite.js';
import { manifests, nodePod, podserverContainer, readyz, workload } from './testing/manifests.js';

const CLIENT_IMAGE = 'cartero.test/kubeclient:1';

const claims = (token: string) =>
  JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')) as {
    sub: string;
    aud: string[];
    'kubernetes.io': { namespace: string; pod?: { name: string } };
  };

describe('process kubelet: ServiceAccount identity', () => {
  const suite = kubeletSuite({
    tmpPrefix: 'cartero-serviceaccounts-test-',
    kubelet: {
      images: {
        [CLIENT_IMAGE]: { command: process.execPath, args: [fixturePath('kubeclient')] },
      },
    },
    stopGraceSeconds: 5,
  });
  const { k, apply } = suite;
  const serviceAccount = (ns: string, name: string) =>
    suite.get(suite.resource('', 'v1', 'serviceaccounts'), name, ns);
  const readyPod = (prefix: string) =>
    suite
      .list(suite.resource('', 'v1', 'pods'))
      .find((p) => p.metadata.name?.startsWith(prefix) && isRunningAndReady(p));
  const runtimeOf = (p: KObject) => suite.kubelet.pods().find((r) => r.uid === p.metadata.uid)!;
  const info = (p: KObject, port: number) => askPodserver(podIP(p), port);
  const asToken = (token: string, url: string) =>
    fetch(`${suite.server.url}${url}`, { headers: { authorization: `Bearer ${token}` } });

  it('keeps a default ServiceAccount in every namespace', async () => {
    await waitFor(() => serviceAccount('default', 'default') && serviceAccount('kube-system', 'default'), {
      what: 'default ServiceAccounts',
    });
    // (kubectl create namespace/serviceaccount send protobuf, which the server reads for few kinds.)
    await apply('apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n');
    await waitFor(() => serviceAccount('team-a', 'default'), { what: 'team-a/default' });
    assert.match(await k('get', 'serviceaccounts', '-n', 'team-a'), /default\s+0\s/);
  });

  it('maps a token from kubectl create token to the ServiceAccount, while it exists', async () => {
    const out = await k('create', 'token', 'default', '-n', 'team-a', '--duration=15m');
    const token = out.trim();
    assert.equal(claims(token).sub, 'system:serviceaccount:team-a:default');
    const res = await asToken(token, '/api/v1/namespaces/team-a/configmaps');
    assert.equal(res.status, 200);
    const record = suite.server.requests.at(-1)!;
    assert.deepEqual(
      [record.verb, record.resource, record.user],
      ['list', 'configmaps', 'system:serviceaccount:team-a:default'],
    );
    const created = suite.server.requests.find((r) => r.subresource === 'token')!;
    assert.deepEqual([created.verb, created.resource, created.code], ['create', 'serviceaccounts', 201]);
    assert.equal((await asToken('not-a-token', '/api/v1/namespaces')).status, 401);
    // A deleted (even recreated) ServiceAccount's tokens stop working.
    const uid = serviceAccount('team-a', 'default')?.metadata.uid;
    await k('delete', 'serviceaccount', 'default', '-n', 'team-a');
    await waitFor(
      () => serviceAccount('team-a', 'default')?.metadata.uid !== uid && serviceAccount('team-a', 'default'),
      {
        what: 'team-a/default recreated',
      },
    );
    assert.equal((await asToken(token, '/api/v1/namespaces/team-a/configmaps')).status, 401);
  });

  it('runs a client-node program (loadFromDefault) in a Deployment as its ServiceAccount', async () => {
    await k('create', 'configmap', 'seed', '--from-literal=a=b');
    await apply('apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: operator}\n');
    const since = suite.server.requests.length;
    await apply(
      manifests(
        workload(
          'Deployment',
          'client',
          { replicas: 1 },
          {
            serviceAccountName: 'operator',
            terminationGracePeriodSeconds: 5,
            containers: [{ name: 'client', image: CLIENT_IMAGE, args: ['written-by-client'] }],
          },
        ),
      ),
    );
    const cm = await waitFor(() => suite.get(suite.resource('', 'v1', 'configmaps'), 'written-by-client'), {
      what: 'the ConfigMap the pod writes',
      timeoutMs: 20_000,
    });
    const pod = readyPod('client-')!;
    const data = cm.data as Record<string, string>;
    assert.equal(data.pod, pod.metadata.name);
    assert.equal(data.namespace, 'default');
    assert.equal(data.server, suite.server.url);
    assert.ok(data.seen.split(',').includes('seed'), data.seen);
    const sa = 'system:serviceaccount:default:operator';
    const mine = suite.server.requests.slice(since).filter((r) => r.user === sa);
    assert.deepEqual(
      mine.map((r) => [r.method, r.verb, r.resource, r.namespace, r.code]),
      [
        ['GET', 'list', 'configmaps', 'default', 200],
        ['POST', 'create', 'configmaps', 'default', 201],
      ],
    );
    // Its credentials: a token bound to the pod, and a kubeconfig naming it.
    const rt = runtimeOf(pod);
    const saDir = path.join(rt.dir, 'mounts', SERVICEACCOUNT_DIR);
    const token = await readFile(path.join(saDir, 'token'), 'utf8');
    assert.equal(claims(token).sub, sa);
    assert.equal(claims(token)['kubernetes.io'].pod?.name, pod.metadata.name);
    assert.equal(await readFile(path.join(saDir, 'namespace'), 'utf8'), 'default');
    assert.ok(!existsSync(path.join(saDir, 'ca.crt')), 'no CA: the server is plain http');
    const kc = parseYaml(await readFile(path.join(rt.dir, 'kubeconfig'), 'utf8')) as {
      clusters: { cluster: Record<string, unknown> }[];
      users: { name: string; user: Record<string, string> }[];
      contexts: { context: { namespace: string } }[];
    };
    assert.deepEqual(kc.clusters[0].cluster, { server: suite.server.url, 'insecure-skip-tls-verify': true });
    assert.equal(kc.users[0].user.tokenFile, path.join(saDir, 'token'));
    assert.equal(kc.contexts[0].context.namespace, 'default');
    // The token dies with the pod.
    await k('delete', 'deployment', 'client', '--wait=true');
    await waitFor(() => !suite.pod(pod.metadata.name ?? ''), { what: 'client pod gone' });
    assert.equal((await asToken(token, '/api/v1/namespaces/default/configmaps')).status, 401);
  });

  it('gives processes the API server address, KUBECONFIG and the token path rewritten', async () => {
    await apply(
      manifests(
        nodePod('env', {
          containers: [
            podserverContainer(8080, ['--file', `${SERVICEACCOUNT_DIR}/namespace`], {
              env: [{ name: 'TOKEN_PATH', value: `${SERVICEACCOUNT_DIR}/token` }],
              readinessProbe: readyz(8080, 0.2),
            }),
          ],
        }),
      ),
    );
    const pod = await waitFor(() => readyPod('env'), { what: 'env Ready' });
    const i = await info(pod, 8080);
    const rt = runtimeOf(pod);
    const url = new URL(suite.server.url);
    assert.equal(i.env.KUBERNETES_SERVICE_HOST, url.hostname);
    assert.equal(i.env.KUBERNETES_SERVICE_PORT, url.port);
    assert.equal(i.env.KUBECONFIG, path.join(rt.dir, 'kubeconfig'));
    assert.equal(i.env.TOKEN_PATH, path.join(rt.dir, 'mounts', SERVICEACCOUNT_DIR, 'token'));
    assert.equal(i.content, 'default', 'the namespace file, at the rewritten standard path');
    assert.match(await k('--kubeconfig', i.env.KUBECONFIG, 'get', 'configmap', 'seed'), /seed\s+1\s/);
    await k('delete', 'pod', 'env', '--wait=true');
  });

  it('writes a projected ServiceAccount volume at the standard path into the pod dir', async () => {
    await apply(
      manifests(
        nodePod(
          'projected',
          {
            containers: [
              podserverContainer(8080, [`--file=${SERVICEACCOUNT_DIR}/labels`], {
                readinessProbe: readyz(8080, 0.2),
                volumeMounts: [{ name: 'api-access', mountPath: SERVICEACCOUNT_DIR, readOnly: true }],
              }),
            ],
            volumes: [
              {
                name: 'api-access',
                projected: {
                  sources: [
                    { serviceAccountToken: { path: 'token', audience: 'vault', expirationSeconds: 3607 } },
                    { configMap: { name: 'seed', items: [{ key: 'a', path: 'seed-a' }] } },
                    {
                      downwardAPI: {
                        items: [
                          { path: 'namespace', fieldRef: { fieldPath: 'metadata.namespace' } },
                          { path: 'labels', fieldRef: { fieldPath: 'metadata.labels' } },
                        ],
                      },
                    },
                  ],
                },
              },
            ],
          },
          { labels: { app: 'projected' } },
        ),
      ),
    );
    const pod = await waitFor(() => readyPod('projected'), { what: 'projected Ready' });
    const i = await info(pod, 8080);
    const saDir = path.join(runtimeOf(pod).dir, 'mounts', SERVICEACCOUNT_DIR);
    assert.equal(i.argv[2], `--file=${saDir}/labels`);
    assert.equal(i.content, 'app="projected"');
    assert.equal(await readFile(path.join(saDir, 'namespace'), 'utf8'), 'default');
    assert.equal(await readFile(path.join(saDir, 'seed-a'), 'utf8'), 'b');
    const token = await readFile(path.join(saDir, 'token'), 'utf8');
    assert.deepEqual(claims(token).aud, ['vault']);
    assert.equal(claims(token).sub, 'system:serviceaccount:default:default');
    assert.equal(i.env.KUBECONFIG, path.join(runtimeOf(pod).dir, 'kubeconfig'));
    await k('delete', 'pod', 'projected', '--wait=true');
  });

  it('mounts nothing with automountServiceAccountToken: false; waits for a missing ServiceAccount', async () => {
    /** A podserver on `port`, Ready once it answers. */
    const served = (port: number) => [podserverContainer(port, [], { readinessProbe: readyz(port, 0.2) })];
    await apply(
      manifests(
        nodePod('quiet', { automountServiceAccountToken: false, containers: served(8080) }),
        nodePod('later', { serviceAccountName: 'not-yet', containers: served(8081) }),
      ),
    );
    const quiet = await waitFor(() => readyPod('quiet'), { what: 'quiet Ready' });
    const i = await info(quiet, 8080);
    assert.equal(i.env.KUBECONFIG, undefined);
    assert.ok(i.env.KUBERNETES_SERVICE_HOST);
    assert.ok(!existsSync(path.join(runtimeOf(quiet).dir, 'mounts', SERVICEACCOUNT_DIR)));
    const waiting = () =>
      (
        suite.pod('later')?.status as
          { containerStatuses?: { state: { waiting?: { reason: string; message?: string } } }[] } | undefined
      )?.containerStatuses?.[0]?.state.waiting;
    await waitFor(() => waiting()?.reason === 'CreateContainerConfigError', { what: 'later waiting' });
    assert.match(waiting()?.message ?? '', /serviceaccount default\/not-yet not found/);
    await apply('apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: not-yet}\n');
    const later = await waitFor(() => readyPod('later'), { what: 'later Ready', timeoutMs: 15_000 });
    assert.equal((await info(later, 8081)).env.KUBECONFIG, path.join(runtimeOf(later).dir, 'kubeconfig'));
    await k('delete', 'pod', 'quiet', 'later', '--wait=true');
  });
});
