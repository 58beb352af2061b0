import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import { resolveConfig } from '../../relay/src/config.js';
import { CONFIG_SCHEMA, checkConfigSchema, validateRelayConfig } from '../../relay/src/contract/index.js';
import type { IpPool, SmtpRelay } from '../../operator/src/api/types.js';
import {
  buildConfigMap,
  buildPdb,
  buildSecret,
  buildServices,
  buildStatefulSet,
  buildEgressPolicies,
  restartHash,
} from '../../operator/src/relay/workload.js';
import {
  buildRelayConfig,
  limitsProblems,
  secretKeys,
  type BuildInput,
} from '../../operator/src/relay/config-render.js';
import { allocate, warmupToday } from '../../operator/src/ippool/allocate.js';
import { generatedKeySecret, keysToGenerate } from '../../operator/src/relay/dkim.js';
import { isSubset } from '../../operator/src/objects.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';
import { loadCrd } from '../../scripts/crd-types.js';

let tmp: string;
before(async () => {
  tmp = await makeTmpDir('builders');
});
after(async () => {
  await removeTmpDir(tmp);
});

function relay(spec: Partial<SmtpRelay['spec']> = {}): SmtpRelay {
  return {
    apiVersion: 'cartero.io/v1alpha1',
    kind: 'SmtpRelay',
    metadata: { name: 'mail', namespace: 'team', uid: 'u-1', generation: 1 },
    spec: {
      replicas: 3,
      tenants: [
        {
          name: 'billing',
          credentialsSecret: 'billing-smtp',
          rateLimits: { perHour: 3000, perMinute: 600, burst: 50 },
          ipPool: 'bulk',
        },
        { name: 'alerts', trustedNetworks: ['10.1.0.0/16'], senderDomains: ['alerts.example.com'] },
      ],
      routing: {
        default: { type: 'mx' },
        backups: [
          { host: 'smarthost.example.net', port: 587, tls: 'required', credentialsSecret: 'smarthost' },
        ],
      },
      ...spec,
    },
  };
}

const pool: IpPool = {
  apiVersion: 'cartero.io/v1alpha1',
  kind: 'IpPool',
  metadata: { name: 'bulk', namespace: 'team' },
  spec: {
    addresses: [
      { ip: '192.0.2.10', ehlo: 'o1.mail.example.com', perHour: 1000 },
      { ip: '192.0.2.11', ehlo: 'o2.mail.example.com' },
      { ip: '192.0.2.12', ehlo: 'o3.mail.example.com' },
    ],
    warmup: { start: '2026-11-27', dailyCaps: [50, 100, 200] },
  },
};

/** The pool in HostNetwork mode: one address on node n1, one on n2. */
const hostNetworkPool: IpPool = {
  ...pool,
  spec: {
    mode: 'HostNetwork',
    addresses: [
      { ip: '192.0.2.10', ehlo: 'a.example.com', node: 'n1' },
      { ip: '192.0.2.11', ehlo: 'b.example.com', node: 'n2' },
    ],
  },
};

/**
 * Lays the rendered files out as a pod sees them (<tmp>/<name>/etc/cartero/{config,secrets}) and loads
 * `doc` (default the rendered one) with the pod's environment `env`.
 */
async function loadAsPod(
  built: ReturnType<typeof buildRelayConfig>,
  name: string,
  env: Record<string, string> = { POD_IP: '10.0.0.5', POD_NAME: 'mail-0' },
  doc: unknown = structuredClone(built.doc),
) {
  const root = path.join(tmp, name);
  await mkdir(path.join(root, 'etc/cartero/config'), { recursive: true });
  await mkdir(path.join(root, 'etc/cartero/secrets'), { recursive: true });
  for (const [k, v] of Object.entries(built.secretData))
    await writeFile(path.join(root, 'etc/cartero/secrets', k), v);
  return resolveConfig(doc, path.join(root, 'etc/cartero/config'), env);
}

function input(r = relay()): BuildInput {
  return {
    relay: r,
    defaultImage: 'cartero/relay:test',
    credentials: new Map([
      ['billing-smtp', { username: 'billing-app', password: 's3cret' }],
      ['smarthost', { username: 'relay', password: 'hunter2' }],
    ]),
    pools: new Map([['bulk', pool]]),
    allocations: [
      { pool: 'bulk', ip: '192.0.2.10', pod: 'mail-0' },
      { pool: 'bulk', ip: '192.0.2.11', pod: 'mail-1' },
      { pool: 'bulk', ip: '192.0.2.12', pod: 'mail-2' },
    ],
    adminToken: 'tok',
    peerPassword: 'peerpw',
    replicas: 3,
  };
}

describe('relay config builder', () => {
  it('renders a config the relay itself accepts, for each pod of the fleet', async () => {
    const built = buildRelayConfig(input());
    assert.deepEqual(built.problems, []);
    const root = path.join(tmp, 'pod');
    const text = buildConfigMap(relay(), built.doc).data['relay.yaml'] as string;
    for (const pod of ['mail-0', 'mail-2']) {
      const cfg = await loadAsPod(built, 'pod', { POD_IP: '10.0.0.5', POD_NAME: pod }, YAML.parse(text));
      assert.equal(cfg.spoolDir, path.join(root, 'var/lib/cartero/spool'));
      assert.equal(cfg.ipPools[0].addresses.length, 1, 'each pod keeps its own address');
      assert.equal(cfg.ipPools[0].addresses[0].ip, pod === 'mail-0' ? '192.0.2.10' : '192.0.2.12');
      assert.equal(cfg.fleet.rateLimitShare, 0.333333);
      assert.equal(cfg.listeners[0].port, 2525);
      assert.equal(cfg.listeners[1].port, 5870);
    }
    const doc = built.doc as {
      tenants: { name: string; rateLimits?: string[]; burst?: number; accounts?: unknown[] }[];
    };
    assert.deepEqual(doc.tenants[0].rateLimits, ['600/m', '3000/h']);
    assert.equal(doc.tenants[0].burst, 50);
    assert.deepEqual(doc.tenants[0].accounts, [
      { username: 'billing-app', passwordFile: secretKeys.tenant('billing') },
    ]);
    assert.equal(built.secretData[secretKeys.tenant('billing')], 's3cret');
    assert.equal(built.secretData[secretKeys.route('smarthost')], 'hunter2');
  });

  it('reports a missing credentials Secret and IpPool instead of failing, and renders the rest', () => {
    const i = input();
    i.credentials.delete('billing-smtp');
    i.pools.delete('bulk');
    const built = buildRelayConfig(i);
    assert.deepEqual(
      built.problems.map((p) => p.reason),
      ['SecretMissing', 'IpPoolMissing'],
    );
    assert.match(built.problems[0].message, /tenant billing: Secret billing-smtp/);
    const t = (built.doc.tenants as { name: string; accounts?: unknown; ipPool?: string }[])[0];
    assert.equal(t.accounts, undefined);
    assert.equal(t.ipPool, undefined);
  });

  it('a new tenant changes the config and the Secret, never the pod template; a listener change rolls the pods', () => {
    const a = relay();
    const b = relay({ tenants: [...a.spec.tenants!, { name: 'news', credentialsSecret: 'billing-smtp' }] });
    const sa = buildStatefulSet({ relay: a, defaultImage: 'x', replicas: 3 });
    const sb = buildStatefulSet({ relay: b, defaultImage: 'x', replicas: 3 });
    assert.deepEqual(sb.spec.template, sa.spec.template);
    assert.notDeepEqual(buildRelayConfig(input(b)).doc, buildRelayConfig(input(a)).doc);
    const c = relay({ listeners: [{ name: 'smtp', port: 25, tls: 'none', auth: 'required' }] });
    assert.notEqual(restartHash(c), restartHash(a));
    assert.notDeepEqual(
      buildStatefulSet({ relay: c, defaultImage: 'x', replicas: 3 }).spec.template,
      sa.spec.template,
    );
  });

  it('mounts the TLS Secret as a whole volume (no subPath), so a renewed certificate reaches the pod in place', () => {
    const r = relay({ tls: { secretName: 'relay-cert' } });
    const s = buildStatefulSet({ relay: r, defaultImage: 'x', replicas: 1 });
    const pod = s.spec.template.spec;
    assert.deepEqual(
      pod.volumes.find((v: { name: string }) => v.name === 'tls'),
      { name: 'tls', secret: { secretName: 'relay-cert', defaultMode: 0o400 } },
    );
    const mounts = pod.containers.flatMap((c: { volumeMounts?: { name: string }[] }) => c.volumeMounts ?? []);
    const tls = mounts.filter((m: { name: string }) => m.name === 'tls');
    assert.equal(tls.length, 1);
    assert.equal(tls[0].subPath, undefined, 'a subPath mount is never updated by the kubelet');
    // the Secret's name is in the restart hash (a different Secret rolls the pods), its content is not
    assert.notEqual(restartHash(relay({ tls: { secretName: 'other-cert' } })), restartHash(r));
  });

  it('renders a config that passes the relay schema, and the check names the field when it does not', () => {
    assert.equal(checkConfigSchema(buildRelayConfig(input()).doc), undefined);
    const doc = buildRelayConfig(input()).doc;
    (doc.listeners as { port: number }[])[0].port = 70000;
    assert.match(String(checkConfigSchema(doc)?.message), /^\/listeners\/0\/port: /);
  });

  it('carries spec.limits and listener limits into the relay config, which passes the schema and loads', async () => {
    const limits = {
      maxConnections: 400,
      maxConnectionsPerClient: 20,
      connectionRatePerClient: '600/m',
      commandTimeout: '2m',
      idleTimeout: '3m',
      minDataRate: 1000,
      reservedForTrusted: 50,
      stress: { threshold: 0.7, commandTimeout: '15s', idleTimeout: '20s' },
      auth: {
        failuresPerConnection: 2,
        failureDelay: '500ms',
        maxFailureDelay: '4s',
        clientFailures: 5,
        accountFailures: 20,
        window: '1h',
        lockout: '30m',
      },
    };
    const own = {
      maxConnectionsPerClient: 5,
      connectionRatePerClient: 'off',
      commandTimeout: '30s',
      idleTimeout: '1m',
      minDataRate: 2000,
    };
    const r = relay({
      limits,
      listeners: [
        { name: 'smtp', port: 25, limits: own },
        { name: 'submission', port: 587, auth: 'required' },
      ],
    });
    const built = buildRelayConfig(input(r));
    assert.deepEqual(built.problems, []);
    const doc = built.doc as { limits: unknown; listeners: { name: string; limits?: unknown }[] };
    assert.deepEqual(doc.limits, limits);
    assert.deepEqual(doc.listeners[0].limits, own);
    assert.equal('limits' in doc.listeners[1], false);
    assert.equal(checkConfigSchema(built.doc), undefined);
    const cfg = await loadAsPod(built, 'limits');
    assert.deepEqual(cfg.listeners[0].limits, {
      maxConnectionsPerClient: 5,
      commandTimeoutMs: 30_000,
      idleTimeoutMs: 60_000,
      minDataRate: 2000,
    });
    assert.deepEqual(cfg.listeners[1].limits, {
      maxConnectionsPerClient: 20,
      connectionRatePerClient: { count: 600, perMs: 60_000 },
      commandTimeoutMs: 120_000,
      idleTimeoutMs: 180_000,
      minDataRate: 1000,
    });
    assert.equal(cfg.limits.reservedForTrusted, 50);
    assert.deepEqual(cfg.limits.stress, { threshold: 0.7, commandTimeoutMs: 15_000, idleTimeoutMs: 20_000 });
    assert.equal(cfg.limits.auth.lockoutMs, 30 * 60_000);
    // the header limits (the relay's schema gains them separately) are carried the same way
    const headers = buildRelayConfig(input(relay({ limits: { maxHeaderLine: 2000, maxHeaderSize: 65536 } })));
    assert.deepEqual(headers.doc.limits, { maxHeaderLine: 2000, maxHeaderSize: 65536 });
    // listener limits reload: they do not roll the pods
    const plain = relay({
      limits,
      listeners: [
        { name: 'smtp', port: 25 },
        { name: 'submission', port: 587, auth: 'required' },
      ],
    });
    assert.equal(restartHash(r), restartHash(plain));
  });

  it('reports limits the relay would refuse beyond its schema, with its defaults for what is left out', async () => {
    assert.deepEqual(limitsProblems(undefined), []);
    assert.deepEqual(limitsProblems({ reservedForTrusted: 999, auth: { failureDelay: '8s' } }), []);
    const cases = [
      [
        { reservedForTrusted: 1000 },
        /reservedForTrusted \(1000\) must be below limits\.maxConnections \(1000\)/,
      ],
      [{ maxConnections: 10, reservedForTrusted: 10 }, /reservedForTrusted \(10\) .* \(10\)/],
      [
        { auth: { failureDelay: '10s' } },
        /maxFailureDelay \(8s\) must not be shorter than .*failureDelay \(10s\)/,
      ],
    ] as const;
    for (const [limits, message] of cases) {
      const built = buildRelayConfig(input(relay({ limits })));
      assert.deepEqual(
        built.problems.map((p) => p.reason),
        ['InvalidSpec'],
      );
      assert.match(built.problems[0].message, message);
      // the relay refuses it too, for the same field
      await assert.rejects(
        loadAsPod(built, 'refused'),
        /\/limits\/(reservedForTrusted|auth\/maxFailureDelay)/,
      );
    }
    // the CRD's CEL rule assumes the relay's default maxConnections
    const crd = loadCrd('crds/smtprelay.yaml');
    const rule = crd.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.limits[
      'x-kubernetes-validations'
    ][0] as { rule: string; message: string };
    const dflt = CONFIG_SCHEMA.properties.limits.properties.maxConnections.default;
    assert.match(rule.rule, new RegExp(`: ${dflt}\\)$`));
    assert.match(rule.message, new RegExp(`\\(default ${dflt}\\)`));
  });

  it('spec.rateLimitStore renders fleet.rateLimitStore with its password file and a per-fleet key prefix', async () => {
    const i = input(
      relay({
        rateLimitStore: { address: 'redis.cartero.svc:6379', credentialsSecret: 'redis', timeout: '100ms' },
      }),
    );
    i.credentials.set('redis', { username: 'default', password: 'r3dis' });
    const built = buildRelayConfig(i);
    assert.deepEqual(built.problems, []);
    assert.deepEqual((built.doc.fleet as Record<string, unknown>).rateLimitStore, {
      type: 'redis',
      address: 'redis.cartero.svc:6379',
      keyPrefix: 'team/mail:',
      timeout: '100ms',
      passwordFile: secretKeys.rateLimitStore,
    });
    const cfg = await loadAsPod(built, 'store');
    assert.deepEqual(cfg.fleet.rateLimitStore, {
      type: 'redis',
      host: 'redis.cartero.svc',
      port: 6379,
      password: 'r3dis',
      keyPrefix: 'team/mail:',
      timeoutMs: 100,
      maxInFlight: 1000,
    });
    assert.equal(cfg.fleet.rateLimitShare, 0.333333, 'the share stays: it is the fallback');

    // an ACL user is passed on; a missing Secret is a problem, and the pods keep to their shares
    i.credentials.set('redis', { username: 'cartero', password: 'r3dis' });
    const acl = buildRelayConfig(i).doc.fleet as { rateLimitStore: Record<string, unknown> };
    assert.equal(acl.rateLimitStore.username, 'cartero');
    i.credentials.delete('redis');
    const missing = buildRelayConfig(i);
    assert.deepEqual(
      missing.problems.map((p) => p.reason),
      ['SecretMissing'],
    );
    assert.equal(checkConfigSchema(missing.doc), undefined);
    assert.equal((missing.doc.fleet as Record<string, unknown>).rateLimitStore, undefined);
    // without the field, nothing is rendered: each pod enforces its share
    assert.equal((buildRelayConfig(input()).doc.fleet as Record<string, unknown>).rateLimitStore, undefined);
  });

  it('the revision changes when a secret changes', () => {
    const a = buildRelayConfig(input());
    const i = input();
    i.credentials.set('billing-smtp', { username: 'billing-app', password: 'rotated' });
    const b = buildRelayConfig(i);
    assert.notEqual(
      (a.doc.fleet as { revision: string }).revision,
      (b.doc.fleet as { revision: string }).revision,
    );
  });
});

describe('object builders', () => {
  it('StatefulSet: unprivileged ports, a spool claim per pod, probes, downward API, owner reference', () => {
    const sts = buildStatefulSet({ relay: relay(), defaultImage: 'cartero/relay:test', replicas: 3 });
    const pod = sts.spec.template.spec;
    const c = pod.containers[0];
    assert.equal(c.image, 'cartero/relay:test');
    assert.deepEqual(
      c.ports.map((p: { containerPort: number }) => p.containerPort),
      [2525, 5870, 9025],
    );
    assert.ok(c.ports.every((p: { containerPort: number }) => p.containerPort >= 1024));
    assert.equal(c.readinessProbe.httpGet.path, '/readyz');
    assert.deepEqual(
      c.env.map((e: { name: string }) => e.name),
      ['POD_NAME', 'POD_NAMESPACE', 'POD_IP', 'NODE_NAME'],
    );
    assert.equal(sts.spec.volumeClaimTemplates[0].metadata.name, 'spool');
    assert.deepEqual(sts.spec.persistentVolumeClaimRetentionPolicy, {
      whenScaled: 'Delete',
      whenDeleted: 'Retain',
    });
    assert.equal(pod.terminationGracePeriodSeconds, 120);
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    assert.equal(sts.metadata.ownerReferences[0].kind, 'SmtpRelay');
    assert.equal(sts.metadata.ownerReferences[0].controller, true);
  });

  it('Services expose 25 and 587 by listener name; the headless one also the admin port', () => {
    const [headless, client] = buildServices(relay());
    assert.equal(headless.spec.clusterIP, 'None');
    assert.deepEqual(
      client.spec.ports.map((p: { port: number; targetPort: string }) => [p.port, p.targetPort]),
      [
        [25, 'smtp'],
        [587, 'submission'],
      ],
    );
  });

  it('PodDisruptionBudget follows the spec and can be turned off', () => {
    assert.equal(buildPdb(relay())!.spec.maxUnavailable, 1);
    assert.equal(buildPdb(relay({ podDisruptionBudget: { enabled: false } })), undefined);
  });

  it('Secret carries the data base64-encoded', () => {
    const s = buildSecret(relay(), { 'admin.token': 'tok' });
    assert.equal(Buffer.from(s.data['admin.token'], 'base64').toString(), 'tok');
  });

  it("HostNetwork pools: every node address is rendered, each relay keeps its node's; pods run in the host network", async () => {
    const i = input();
    i.pools.set('bulk', hostNetworkPool);
    i.allocations = [];
    const built = buildRelayConfig(i);
    assert.deepEqual(built.problems, []);
    const cfg = await loadAsPod(built, 'hostnet', {
      POD_IP: '10.0.0.5',
      POD_NAME: 'mail-1',
      NODE_NAME: 'n2',
    });
    assert.deepEqual(
      cfg.ipPools[0].addresses.map((a) => a.ip),
      ['192.0.2.11'],
    );
    const sts = buildStatefulSet({
      relay: relay(),
      defaultImage: 'x',
      replicas: 2,
      hostNetworkNodes: ['n2', 'n1'],
    });
    assert.equal(sts.spec.template.spec.hostNetwork, true);
    assert.deepEqual(
      sts.spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution
        .nodeSelectorTerms[0].matchExpressions[0].values,
      ['n1', 'n2'],
    );
  });

  it('CiliumEgressGateway pools get one policy per pod selecting it by pod name', () => {
    const gw: IpPool = {
      ...pool,
      spec: {
        ...pool.spec,
        mode: 'CiliumEgressGateway',
        egressGateway: { nodeSelector: { egress: 'true' } },
      },
    };
    const policies = buildEgressPolicies(relay(), new Map([['bulk', gw]]), input().allocations);
    assert.equal(policies.length, 3);
    assert.equal(
      policies[1].spec.selectors[0].podSelector.matchLabels['statefulset.kubernetes.io/pod-name'],
      'mail-1',
    );
    assert.equal(policies[1].spec.egressGateway.egressIP, '192.0.2.11');
    const i = input();
    i.pools.set('bulk', gw);
    const addr = (buildRelayConfig(i).doc.ipPools as { addresses: { bind?: boolean }[] }[])[0].addresses;
    assert.ok(
      addr.every((a) => a.bind === false),
      'the relay does not bind gateway addresses',
    );
  });
});

describe('IpPool allocation', () => {
  const want = (n: number, relayName = 'mail') =>
    Array.from({ length: n }, (_, i) => ({ relay: relayName, pod: `${relayName}-${i}` }));
  it('gives new pods the lowest free address and keeps existing allocations', () => {
    const first = allocate(pool, want(2));
    assert.deepEqual(
      first.allocations.map((a) => [a.pod, a.ip]),
      [
        ['mail-0', '192.0.2.10'],
        ['mail-1', '192.0.2.11'],
      ],
    );
    // mail-0 leaves, then comes back after mail-2 took the next address
    const withStatus = (allocs: typeof first.allocations): IpPool => ({
      ...pool,
      status: { allocations: allocs },
    });
    const second = allocate(withStatus(first.allocations), [
      { relay: 'mail', pod: 'mail-1' },
      { relay: 'mail', pod: 'mail-2' },
    ]);
    assert.deepEqual(
      second.allocations.map((a) => [a.pod, a.ip]),
      [
        ['mail-1', '192.0.2.11'],
        ['mail-2', '192.0.2.10'],
      ],
    );
  });
  it('scale-down releases the highest ordinals; an exhausted pool names the pods without an address', () => {
    const four = allocate(pool, want(4));
    assert.deepEqual(four.unallocated, [{ relay: 'mail', pod: 'mail-3' }]);
    const two = allocate({ ...pool, status: { allocations: four.allocations } }, want(2));
    assert.deepEqual(
      two.allocations.map((a) => a.ip),
      ['192.0.2.10', '192.0.2.11'],
    );
  });
  it('reports duplicates and addresses removed from the spec as conflicts', () => {
    const r = allocate(
      {
        ...pool,
        status: {
          allocations: [
            { ip: '192.0.2.10', relay: 'mail', pod: 'mail-0' },
            { ip: '192.0.2.10', relay: 'mail', pod: 'mail-1' },
            { ip: '198.51.100.1', relay: 'mail', pod: 'mail-2' },
          ],
        },
      },
      want(3),
    );
    assert.equal(r.conflicts.length, 2);
    assert.match(r.conflicts.join(' '), /allocated twice/);
    assert.match(r.conflicts.join(' '), /no longer in the pool/);
    assert.equal(new Set(r.allocations.map((a) => a.ip)).size, 3, 'every pod still gets a distinct address');
  });
  it('HostNetwork allocates the address of the node the pod landed on', () => {
    const r = allocate(hostNetworkPool, [
      { relay: 'mail', pod: 'mail-0', node: 'n2' },
      { relay: 'mail', pod: 'mail-1', node: 'n3' },
    ]);
    assert.deepEqual(r.allocations, [{ ip: '192.0.2.11', relay: 'mail', pod: 'mail-0' }]);
    assert.deepEqual(r.unallocated, [{ relay: 'mail', pod: 'mail-1', node: 'n3' }]);
  });
  it('warm-up day and cap', () => {
    assert.deepEqual(warmupToday(pool, new Date('2026-11-29T10:00:00Z')), { day: 3, cap: 200 });
    assert.deepEqual(warmupToday(pool, new Date('2026-12-30T10:00:00Z')), {});
  });
});

describe('isSubset', () => {
  it('ignores fields the server added, not fields we set', () => {
    assert.ok(isSubset({ a: 1, b: [{ c: 2 }] }, { a: 1, b: [{ c: 2, d: 3 }], e: 4 }));
    assert.ok(!isSubset({ a: 1, b: [{ c: 2 }] }, { a: 1, b: [{ c: 3 }] }));
    assert.ok(!isSubset({ b: [1, 2] }, { b: [1] }));
  });
});

describe('examples/kubernetes', () => {
  it('the example fleet renders a config every relay pod accepts', async () => {
    const { readFile } = await import('node:fs/promises');
    const ex = path.resolve(import.meta.dirname, '../../../examples/kubernetes');
    const r = YAML.parse(await readFile(path.join(ex, '30-smtprelay.yaml'), 'utf8')) as SmtpRelay;
    const p = YAML.parse(await readFile(path.join(ex, '20-ippool.yaml'), 'utf8')) as IpPool;
    r.metadata.uid = 'u';
    const creds = YAML.parseAllDocuments(await readFile(path.join(ex, '10-credentials.yaml'), 'utf8')).map(
      (d) => d.toJS() as { metadata: { name: string }; stringData: { username: string; password: string } },
    );
    const { allocations } = allocate(p, [
      { relay: 'outbound', pod: 'outbound-0' },
      { relay: 'outbound', pod: 'outbound-1' },
    ]);
    const built = buildRelayConfig({
      relay: r,
      defaultImage: 'x',
      credentials: new Map(creds.map((c) => [c.metadata.name, c.stringData])),
      pools: new Map([['newsletter', p]]),
      allocations: allocations.map((a) => ({ pool: 'newsletter', ip: a.ip, pod: a.pod })),
      adminToken: 't',
      peerPassword: 'p',
      replicas: r.spec.replicas!,
      // the DKIM key Secrets the operator generates for the example (generate: true)
      dkimKeys: new Map(
        keysToGenerate(r, () => false).flatMap((g) =>
          Object.entries((generatedKeySecret(r, g) as unknown as { data: Record<string, string> }).data).map(
            ([k, v]) => [`${g.secret}/${k}`, Buffer.from(v, 'base64').toString()] as const,
          ),
        ),
      ),
    });
    assert.deepEqual(built.problems, []);
    for (const pod of ['outbound-0', 'outbound-1']) {
      const cfg = await loadAsPod(built, 'example', { POD_IP: '10.0.0.9', POD_NAME: pod });
      assert.deepEqual([...cfg.tenants.keys()].sort(), ['billing', 'default', 'newsletter']);
      assert.equal(cfg.routing.backups.length, 1);
      assert.deepEqual(
        cfg.tenants.get('newsletter')!.dkim!.keys.map((k) => `${k.selector}/${k.algorithm}`),
        ['rsa1/rsa-sha256', 'ed1/ed25519-sha256'],
      );
    }
  });
});

describe("the relay's full check of a rendered config (validateRelayConfig, as the controller runs it)", () => {
  const check = (built: ReturnType<typeof buildRelayConfig>) =>
    validateRelayConfig(built.doc, { secrets: built.secretData, env: { POD_IP: '192.0.2.1' } });

  it("accepts what the builder renders for a fleet (every pod's pool addresses), without changing it", () => {
    const built = buildRelayConfig(input());
    const before = structuredClone(built.doc);
    assert.equal(check(built), undefined);
    assert.deepEqual(built.doc, before, 'the document is not changed (no defaults filled in)');
  });

  it("a fleet whose only tenant's Secret is missing: auth: required without an account, which the schema lets pass", () => {
    const built = buildRelayConfig({
      ...input(relay({ tenants: [{ name: 'billing', credentialsSecret: 'billing-smtp' }] })),
      credentials: new Map(),
    });
    assert.equal(checkConfigSchema(built.doc), undefined, 'the schema alone accepts it');
    const err = check(built);
    assert.equal(err?.field, '/listeners/1/auth');
    assert.match(String(err?.message), /auth: required needs at least one entry in \/accounts/);
  });

  it('reads the secrets from the Secret data: a missing or empty one is named', () => {
    const built = buildRelayConfig(input());
    const missing = { ...built.secretData };
    delete missing[secretKeys.tenant('billing')];
    const err = validateRelayConfig(built.doc, { secrets: missing, env: { POD_IP: '192.0.2.1' } });
    assert.equal(err?.field, '/tenants/0/accounts/0/passwordFile');
    const empty = { ...built.secretData, [secretKeys.admin]: '\n' };
    const err2 = validateRelayConfig(built.doc, { secrets: empty, env: { POD_IP: '192.0.2.1' } });
    assert.equal(err2?.field, '/admin/tokenFile');
    assert.match(String(err2?.message), /is empty/);
  });

  it('applies the rules across fields: names, limits, retry, pools, environment', () => {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- editing the rendered document
    const cases: [string, (doc: Record<string, any>) => void, string][] = [
      ['duplicate tenant', (d) => d.tenants.push({ name: 'billing' }), '/tenants/2/name'],
      [
        'reservedForTrusted not below maxConnections',
        (d) => (d.limits = { maxConnections: 10, reservedForTrusted: 10 }),
        '/limits/reservedForTrusted',
      ],
      [
        'retry max shorter than initial',
        (d) => (d.queue.retry = { initial: '1h', max: '10m' }),
        '/queue/retry/max',
      ],
      [
        'an address in two pools',
        (d) => d.ipPools.push({ name: 'other', addresses: [{ ip: '192.0.2.10', ehlo: 'x.example.com' }] }),
        '/ipPools/1/addresses/0/ip',
      ],
      ['a tenant naming a pool not rendered', (d) => (d.tenants[0].ipPool = 'nope'), '/tenants/0/ipPool'],
      ['an environment variable the pods lack', (d) => (d.admin.address = '${NOT_SET}'), '/admin/address'],
    ];
    for (const [name, change, field] of cases) {
      const built = buildRelayConfig(input());
      change(built.doc);
      assert.equal(check(built)?.field, field, name);
    }
  });
});
