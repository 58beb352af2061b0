/**
 * Services in the process kubelet: cluster IPs allocated by the API server, Endpoints and
 * EndpointSlices maintained from the pods, and TCP forwarded from clusterIP:port to Ready pods.
 * Service ports are 1024 and up, so the tests also run without root.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { waitFor } from './helpers/poll.js';
import { ApiError } from './apiserver/errors.js';
import type { KObject } from './apiserver/objects.js';
import { isRunningAndReady } from './kubelet/kubelet.js';
import { SERVICE_NAME_LABEL } from './kubelet/services.js';
import { kubeletSuite, podIP as podIp } from './testing/kubelet-suite.js';
import { manifests, podserverContainer, readyz, service, workload } from './testing/manifests.js';

interface Answer {
  pod: string;
  remote: string;
}

/** GET / through `ip:port` from the address `from`; which pod answered and whom it saw. */
function ask(ip: string, port: number, from: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: ip, port, path: '/', agent: false, localAddress: from }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => {
        try {
          const j = JSON.parse(body) as { env: Record<string, string>; remote: string };
          resolve({ pod: j.env.POD_NAME, remote: j.remote });
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      });
    });
    req.setTimeout(5_000, () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

/** How a plain TCP connection to ip:port ends: 'connected', or the error code (ECONNREFUSED). */
function connectOutcome(ip: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host: ip, port });
    s.setTimeout(5_000, () => s.destroy(new Error('timeout')));
    s.on('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

const deployment = (replicas: number) =>
  manifests(
    workload(
      'Deployment',
      'web',
      { replicas },
      {
        terminationGracePeriodSeconds: 5,
        containers: [
          podserverContainer(8080, [], {
            ports: [{ name: 'http', containerPort: 8080 }],
            readinessProbe: readyz('http', 1, { failureThreshold: 1 }),
          }),
        ],
      },
    ),
    service(
      'web',
      { selector: { app: 'web' }, ports: [{ name: 'http', port: 8000, targetPort: 'http' }] },
      { labels: { tier: 'front' } },
    ),
  );

describe('process kubelet: Services', () => {
  const suite = kubeletSuite({
    tmpPrefix: 'cartero-services-test-',
    stopGraceSeconds: 5,
  });
  after(() => assert.ok(suite.kubelet.spawnedPids().length > 0));
  const { k, apply } = suite;
  /** A client address of our own, to see that pods get the client's address, not the proxy's. */
  const clientIp = () => `${suite.addresses.clientPrefix}.9`;
  const svcT = () => suite.resource('', 'v1', 'services');
  const epT = () => suite.resource('', 'v1', 'endpoints');
  const slices = (service: string) =>
    suite
      .list(suite.resource('discovery.k8s.io', 'v1', 'endpointslices'))
      .filter((s) => s.metadata.labels?.[SERVICE_NAME_LABEL] === service);
  const clusterIp = (name: string) => (suite.get(svcT(), name)?.spec as { clusterIP: string }).clusterIP;
  const podsOf = (app: string) =>
    suite.list(suite.resource('', 'v1', 'pods')).filter((p) => p.metadata.labels?.app === app);
  const readyPods = (app: string) => podsOf(app).filter(isRunningAndReady);
  const subsets = (name: string) =>
    (suite.get(epT(), name)?.subsets ?? []) as {
      addresses?: { ip: string; hostname?: string; targetRef: { name: string } }[];
      notReadyAddresses?: { ip: string }[];
      ports?: { name?: string; port: number }[];
    }[];
  const readyAddresses = (name: string) =>
    subsets(name)
      .flatMap((s) => s.addresses ?? [])
      .map((a) => a.ip)
      .sort();
  /** Waits until the proxy listens for `service` with `n` backends. */
  const proxied = (service: string, n: number) =>
    waitFor(
      () =>
        suite.kubelet.services
          ?.listeners()
          .some((l) => l.service === service && l.listening && l.backends.length === n),
      { what: `${service} proxied to ${n} pods` },
    );
  /** Asks `n` times; the pods that answered, and how often. */
  const spread = async (ip: string, port: number, n: number) => {
    const seen = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const a = await ask(ip, port, clientIp());
      assert.equal(a.remote, clientIp(), 'the pod sees the client address');
      seen.set(a.pod, (seen.get(a.pod) ?? 0) + 1);
    }
    return seen;
  };

  it('allocates cluster IPs from the configured range; they cannot change', async () => {
    const { server, addresses: NET } = suite;
    assert.equal(server.serviceClusterIpRange, NET.serviceRange);
    const svc = (name: string, spec: Record<string, unknown>) =>
      server.store.create(svcT(), 'default', {
        metadata: { name },
        spec: { ports: [{ port: 80 }], ...spec },
      });
    const invalid = (fn: () => unknown, re: RegExp) =>
      assert.throws(
        fn,
        (err: unknown) => err instanceof ApiError && err.code === 422 && re.test(err.message),
      );
    const a = svc('a', {});
    const ipA = (a.spec as { clusterIP: string; clusterIPs: string[] }).clusterIP;
    assert.equal(ipA, `${NET.serviceBase}.1`);
    assert.deepEqual((a.spec as { clusterIPs: string[] }).clusterIPs, [ipA]);
    assert.equal((svc('b', {}).spec as { clusterIP: string }).clusterIP, `${NET.serviceBase}.2`);
    assert.equal((svc('h', { clusterIP: 'None' }).spec as { clusterIP: string }).clusterIP, 'None');
    assert.ok(
      !('clusterIP' in (svc('x', { type: 'ExternalName', externalName: 'mx.example.test' }).spec as object)),
    );
    assert.equal(
      (svc('c', { clusterIP: `${NET.serviceBase}.200` }).spec as { clusterIP: string }).clusterIP,
      `${NET.serviceBase}.200`,
    );
    invalid(() => svc('d', { clusterIP: `${NET.serviceBase}.200` }), /provided IP is already allocated/);
    invalid(() => svc('e', { clusterIP: '10.0.0.1' }), /not in the valid range/);
    // Updates keep the address (also when they leave it out) and refuse to change it.
    const current = server.store.get(svcT(), 'default', 'a');
    const spec = current.spec as Record<string, unknown>;
    delete spec.clusterIP;
    delete spec.clusterIPs;
    const kept = server.store.update(svcT(), 'default', 'a', current);
    assert.equal((kept.spec as { clusterIP: string }).clusterIP, ipA);
    invalid(
      () =>
        server.store.update(svcT(), 'default', 'a', {
          ...kept,
          spec: { ...(kept.spec as object), clusterIP: `${NET.serviceBase}.50`, clusterIPs: undefined },
        }),
      /spec\.clusterIPs\[0\]: Invalid value: \["127\.\d+\.\d+\.50"\]: may not change once set/,
    );
    await assert.rejects(
      apply(
        `apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIP: ${NET.serviceBase}.51, ports: [{port: 80}]}\n`,
      ),
      /may not change once set/,
    );
    // A released address is not handed out again at once.
    server.store.delete(svcT(), 'default', 'a');
    assert.equal((svc('f', {}).spec as { clusterIP: string }).clusterIP, `${NET.serviceBase}.3`);
    for (const name of ['b', 'h', 'x', 'c', 'f']) server.store.delete(svcT(), 'default', name);
  });

  it('forwards the cluster IP to Ready pods, round robin, and keeps Endpoints and EndpointSlices', async () => {
    await apply(deployment(3));
    await k('rollout', 'status', 'deployment/web', '--timeout=30s');
    const ip = clusterIp('web');
    assert.ok(ip.startsWith(`${suite.addresses.serviceBase}.`), ip);
    const pods = readyPods('web');
    assert.equal(pods.length, 3);
    const want = pods.map(podIp).sort();
    await waitFor(() => readyAddresses('web').join() === want.join(), { what: 'Endpoints with 3 addresses' });
    const [subset] = subsets('web');
    assert.deepEqual(
      subset.ports,
      [{ name: 'http', port: 8080, protocol: 'TCP' }],
      'named targetPort resolved',
    );
    assert.deepEqual(
      subset.addresses?.map((a) => a.targetRef.name).sort(),
      pods.map((p) => p.metadata.name).sort(),
    );
    assert.equal(suite.get(epT(), 'web')?.metadata.labels?.tier, 'front', 'labels copied from the Service');

    const table = await k('get', 'endpoints', 'web');
    for (const podAddress of want) assert.ok(table.includes(`${podAddress}:8080`), table);
    const webSlices = slices('web');
    assert.equal(webSlices.length, 1);
    const slice = webSlices[0] as KObject & {
      addressType: string;
      endpoints: { addresses: string[]; conditions: { ready: boolean } }[];
      ports: { name: string; port: number }[];
    };
    assert.equal(slice.addressType, 'IPv4');
    assert.deepEqual(slice.ports, [{ name: 'http', port: 8080, protocol: 'TCP' }]);
    assert.deepEqual(slice.endpoints.map((e) => e.addresses[0]).sort(), want);
    assert.ok(slice.endpoints.every((e) => e.conditions.ready));
    assert.equal(slice.metadata.ownerReferences?.[0].uid, suite.get(svcT(), 'web')?.metadata.uid);
    assert.match(
      await k('get', 'endpointslices'),
      new RegExp(`web-\\w+\\s+IPv4\\s+8080\\s+${want[0].replace(/\./g, '\\.')}`),
    );

    await proxied('web', 3);
    const seen = await spread(ip, 8000, 6);
    assert.deepEqual(
      [...seen.keys()].sort(),
      pods.map((p) => p.metadata.name).sort(),
      'every Ready pod answers',
    );
    assert.deepEqual([...seen.values()], [2, 2, 2], 'round robin');
  });

  it('sends traffic only to Ready pods as pods turn unready and ready again', async () => {
    const ip = clusterIp('web');
    const [out, ...rest] = readyPods('web');
    await fetch(`http://${podIp(out)}:8080/unready`);
    await waitFor(
      () =>
        subsets('web').some((s) => s.notReadyAddresses?.some((a) => a.ip === podIp(out))) &&
        readyAddresses('web').length === 2,
      { what: 'the unready pod in notReadyAddresses' },
    );
    await proxied('web', 2);
    const seen = await spread(ip, 8000, 6);
    assert.deepEqual([...seen.keys()].sort(), rest.map((p) => p.metadata.name).sort());
    const slice = slices('web')[0] as KObject & {
      endpoints: { addresses: string[]; conditions: { ready: boolean } }[];
    };
    assert.equal(slice.endpoints.find((e) => e.addresses[0] === podIp(out))?.conditions.ready, false);

    await fetch(`http://${podIp(out)}:8080/ready`);
    await waitFor(() => readyAddresses('web').length === 3, { what: 'three Ready addresses again' });
    await proxied('web', 3);
    assert.equal((await spread(ip, 8000, 3)).size, 3);
  });

  it('sticks a client to one pod with sessionAffinity ClientIP', async () => {
    await k('patch', 'service', 'web', '-p', '{"spec":{"sessionAffinity":"ClientIP"}}');
    await waitFor(() => suite.kubelet.services?.listeners().some((l) => l.service === 'web'), {
      what: 'listener',
    });
    // The patch reaches the proxy on its next pass; the first answer may still be round robin.
    await waitFor(async () => (await spread(clusterIp('web'), 8000, 4)).size === 1, {
      what: 'one pod for one client',
    });
    await k('patch', 'service', 'web', '-p', '{"spec":{"sessionAffinity":"None"}}');
  });

  it('follows scale-down, and refuses connections while no pod is Ready', async () => {
    const ip = clusterIp('web');
    await k('scale', 'deployment/web', '--replicas=1');
    await waitFor(() => podsOf('web').length === 1 && readyAddresses('web').length === 1, {
      what: 'one pod left in Endpoints',
      timeoutMs: 20_000,
    });
    const [last] = readyPods('web');
    await proxied('web', 1);
    assert.deepEqual([...(await spread(ip, 8000, 3)).keys()], [last.metadata.name]);
    assert.match(
      await k('get', 'endpoints', 'web'),
      new RegExp(`web\\s+${podIp(last).replace(/\./g, '\\.')}:8080\\s`),
    );

    await fetch(`http://${podIp(last)}:8080/unready`);
    await waitFor(() => readyAddresses('web').length === 0, { what: 'no Ready address' });
    const started = Date.now();
    await waitFor(async () => (await connectOutcome(ip, 8000)) === 'ECONNREFUSED', { what: 'refused' });
    assert.ok(Date.now() - started < 3_000, 'refused promptly');
    assert.equal(suite.kubelet.services?.listeners().find((l) => l.service === 'web')?.listening, false);

    await fetch(`http://${podIp(last)}:8080/ready`);
    await waitFor(async () => (await connectOutcome(ip, 8000)) === 'connected', { what: 'open again' });
    assert.equal((await ask(ip, 8000, clientIp())).pod, last.metadata.name);
  });

  it('removes Endpoints, slices and the listener with the Service', async () => {
    const ip = clusterIp('web');
    await k('delete', 'service', 'web', '--wait=true');
    await waitFor(() => !suite.get(epT(), 'web') && slices('web').length === 0, {
      what: 'Endpoints and slices gone',
    });
    await waitFor(async () => (await connectOutcome(ip, 8000)) === 'ECONNREFUSED', { what: 'closed' });
    assert.ok(!suite.kubelet.services?.listeners().some((l) => l.service === 'web'));
    await k('delete', 'deployment', 'web', '--wait=true');
  });

  it('gives a StatefulSet behind a headless Service endpoints with hostnames, and a ClusterIP Service by port number', async () => {
    await apply(
      manifests(
        service('db', {
          clusterIP: 'None',
          selector: { app: 'db' },
          ports: [{ name: 'http', port: 9000, targetPort: 9000 }],
        }),
        service('db-rw', { selector: { app: 'db' }, ports: [{ port: 5432, targetPort: 9000 }] }),
        workload(
          'StatefulSet',
          'db',
          { replicas: 2, updateStrategy: { type: 'RollingUpdate' } },
          {
            terminationGracePeriodSeconds: 5,
            containers: [
              podserverContainer(9000, [], {
                readinessProbe: { tcpSocket: { port: 9000 }, periodSeconds: 1 },
              }),
            ],
          },
        ),
      ),
    );
    await k('rollout', 'status', 'statefulset/db', '--timeout=30s');
    await waitFor(() => readyAddresses('db').length === 2, { what: 'headless Endpoints' });
    const addresses = subsets('db').flatMap((s) => s.addresses ?? []);
    assert.deepEqual(addresses.map((a) => a.hostname).sort(), ['db-0', 'db-1']);
    assert.equal(suite.get(epT(), 'db')?.metadata.labels?.['service.kubernetes.io/headless'], '');
    assert.ok(
      !suite.kubelet.services?.listeners().some((l) => l.service === 'db'),
      'no listener for a headless Service',
    );
    const ip = clusterIp('db-rw');
    await waitFor(() => readyAddresses('db-rw').length === 2, { what: 'db-rw Endpoints' });
    await proxied('db-rw', 2);
    assert.deepEqual([...(await spread(ip, 5432, 4)).keys()].sort(), ['db-0', 'db-1']);
    await k('delete', 'statefulset', 'db', '--wait=true');
    await waitFor(() => !subsets('db-rw').length && !subsets('db').length, { what: 'empty Endpoints' });
    assert.match(await k('get', 'endpoints', 'db-rw'), /db-rw\s+<none>/);
    await waitFor(async () => (await connectOutcome(ip, 5432)) === 'ECONNREFUSED', { what: 'refused' });
  });

  it('forwards a Service without a selector to the addresses of its own Endpoints', async () => {
    const backend = net.createServer((s) => s.end(`hello from ${s.localAddress}\n`));
    await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
    const port = (backend.address() as net.AddressInfo).port;
    try {
      await apply(`
apiVersion: v1
kind: Service
metadata: {name: outside}
spec:
  ports: [{name: smtp, port: 2500, targetPort: ${port}}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: outside}
subsets:
  - addresses: [{ip: 127.0.0.1}]
    ports: [{name: smtp, port: ${port}}]
`);
      const ip = clusterIp('outside');
      const text = await waitFor(
        () =>
          new Promise<string | false>((resolve) => {
            const s = net.connect({ host: ip, port: 2500 });
            let got = '';
            s.setEncoding('utf8');
            s.on('data', (d: string) => (got += d));
            s.on('end', () => resolve(got));
            s.on('error', () => resolve(false));
          }),
        { what: 'an answer through the cluster IP' },
      );
      assert.equal(text, 'hello from 127.0.0.1\n');
      assert.ok(suite.get(epT(), 'outside'), 'a hand-written Endpoints object is left alone');
      await k('delete', 'service', 'outside');
    } finally {
      await new Promise<void>((resolve) => backend.close(() => resolve()));
    }
  });
});
