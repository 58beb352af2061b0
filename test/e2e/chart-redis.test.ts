/**
 * The chart's optional Redis (redis.enabled) as the fleet's rate-limit store, with the real helm
 * (.tmp/tools/helm):
 * - `helm template`: nothing by default; with redis.enabled the four objects and a Secret copy per relay
 *   namespace (redis.relayNamespaces, else watchNamespaces), one password in all; bad values refused.
 * Against the project's Kubernetes API server and process kubelet:
 * - `helm install --set redis.enabled=true`: the Redis Deployment runs the image's entrypoint (the redis
 *   image → Debian's redis-server, as the image's entrypoint runs it) with the generated password read from
 *   the mounted redis.conf (never on its command line); the credentials Secret is copied into the
 *   SmtpRelays' namespace; Redis refuses clients without the password.
 * - An SmtpRelay (2 replicas, a tenant with perMinute: 6) whose spec.rateLimitStore names the chart's Redis
 *   Service and that Secret: the operator renders fleet.rateLimitStore, both pods report the store up and
 *   the fleet scope, and the limit is the fleet's: 4 RCPTs through one pod (its local share is 3), 2 more
 *   through the other, then a 7th is refused with 451 4.7.1 on either pod.
 * - `helm upgrade` keeps the password (lookup) and leaves the Redis pod alone.
 * The API server has no NetworkPolicy kind: a stand-in CRD (schema left open) lets the release install it;
 * nothing enforces it here, so the test checks what it selects.
 * (Set-up copied from chart.test.ts in part; a shared harness is to replace both.)
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import type { ApiServer } from '@cartero/k8s-testbed/apiserver/server.js';
import type { Kubelet } from '@cartero/k8s-testbed/kubelet/kubelet.js';
import { startTestCluster, type Kubectl, type TestCluster } from '@cartero/k8s-testbed/harness.js';
import {
  CHART,
  CHART_IMAGES,
  helmDeploy,
  helmFor,
  openCrd,
  RELEASE,
  RELEASE_NAMESPACE as NS,
  runCommand,
} from '../helpers/chart.js';
import { waitFor } from '../helpers/poll.js';
import { SmtpSession } from '../helpers/smtpsession.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

const LIMIT = 6; // per minute, fleet-wide; each of the 2 pods' local share is 3

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

let dir: string;
let cluster: TestCluster;
let api: ApiServer;
let kubelet: Kubelet;
let redisImage: string;
const kubeletErrors: string[] = [];

let helm: ReturnType<typeof helmFor>;
let kubectl: Kubectl;
const kjson = async (args: string[]): Promise<Any> => JSON.parse(await kubectl([...args, '-o', 'json']));
const b64 = (s: string) => Buffer.from(s, 'base64').toString('utf8');

/** redis-cli against `host`, the password (if any) in REDISCLI_AUTH, not on the command line. */
async function redisCli(host: string, password: string | undefined, ...args: string[]): Promise<string> {
  const r = await runCommand('redis-cli', ['-h', host, '-p', '6379', ...args], {
    env: password ? { REDISCLI_AUTH: password } : {},
  });
  assert.equal(r.code, 0, r.out);
  return r.out.trim();
}

before(async () => {
  dir = await makeTmpDir('cartero-chart-redis-');
  const values = YAML.parse(await readFile(path.join(CHART, 'values.yaml'), 'utf8')) as Any;
  redisImage = `${values.redis.image.repository}:${values.redis.image.tag}`;
  cluster = await startTestCluster({
    dir,
    kubelet: {
      images: {
        ...CHART_IMAGES,
        // the redis image's entrypoint runs redis-server with the container's args (first one a .conf)
        [redisImage]: { command: 'redis-server' },
      },
      onError: (e) => kubeletErrors.push(String(e)),
    },
    kubectl: { timeoutMs: 90_000 },
  });
  ({ api, kubectl } = cluster);
  kubelet = cluster.kubelet!;
  helm = helmFor(dir, () => api.kubeconfig);
});

after(async () => {
  await cluster?.stop({ graceSeconds: 5 });
  if (dir) await removeTmpDir(dir);
});

/** `helm template` → parsed objects. */
async function template(...args: string[]): Promise<Any[]> {
  const r = await helm('template', RELEASE, CHART, '-n', NS, ...args);
  assert.equal(r.code, 0, r.out);
  return YAML.parseAllDocuments(r.stdout)
    .map((d) => d.toJSON() as Any)
    .filter(Boolean);
}
const redisObjects = (objs: Any[]) =>
  objs
    .filter((o) => o.metadata.name === 'cartero-redis')
    .map((o) => `${o.kind} ${o.metadata.namespace}`)
    .sort();

describe('chart: rendering the optional Redis', () => {
  it('off by default; on: Secret, Service, Deployment, NetworkPolicy, and a Secret copy per relay namespace', async () => {
    assert.deepEqual(redisObjects(await template()), []);
    assert.deepEqual(redisObjects(await template('--set', 'redis.enabled=true')), [
      `Deployment ${NS}`,
      `NetworkPolicy ${NS}`,
      `Secret ${NS}`,
      `Service ${NS}`,
    ]);
    // without namespaces: relay pods of every namespace admitted, no copies (the docs say how to make one)
    const all = await template('--set', 'redis.enabled=true');
    const np = all.find((o) => o.kind === 'NetworkPolicy');
    assert.deepEqual(np.spec.ingress[0].from[0].namespaceSelector, {});
    // watchNamespaces is the default of redis.relayNamespaces; the release namespace gets no second copy
    const watched = await template('--set', 'redis.enabled=true', '--set', `watchNamespaces={mail,${NS}}`);
    assert.deepEqual(redisObjects(watched), [
      `Deployment ${NS}`,
      `NetworkPolicy ${NS}`,
      `Secret ${NS}`,
      `Secret mail`,
      `Service ${NS}`,
    ]);
    const objs = await template(
      '--set',
      'redis.enabled=true,redis.networkPolicy.enabled=false',
      '--set',
      'redis.relayNamespaces={mail,billing}',
    );
    assert.deepEqual(redisObjects(objs), [
      'Deployment cartero-system',
      'Secret billing',
      'Secret cartero-system',
      'Secret mail',
      'Service cartero-system',
    ]);
    const secrets = objs.filter((o) => o.kind === 'Secret' && o.metadata.name === 'cartero-redis');
    assert.equal(new Set(secrets.map((o) => o.data.password)).size, 1, 'one password in every copy');
    const d = objs.find((o) => o.kind === 'Deployment' && o.metadata.name === 'cartero-redis');
    const pod = d.spec.template.spec;
    assert.equal(d.spec.replicas, 1);
    assert.equal(d.spec.strategy.type, 'Recreate');
    assert.equal(pod.automountServiceAccountToken, false);
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.equal(pod.containers[0].image, 'docker.io/library/redis:7.4-alpine');
    assert.equal(pod.containers[0].args[0], '/etc/redis/redis.conf');
    assert.ok(!pod.containers[0].args.includes('--requirepass'), 'the password is in the config file');
    assert.equal(
      d.spec.template.metadata.annotations['checksum/password'],
      createHash('sha256').update(Buffer.from(secrets[0].data.password, 'base64').toString()).digest('hex'),
    );
  });

  it('refuses bad redis values with the field and the reason', async () => {
    const cases: [string[], RegExp][] = [
      [['--set', 'redis.maxmemory=lots'], /at '\/redis\/maxmemory': 'lots' does not match pattern/],
      [['--set', 'redis.image.tag='], /at '\/redis\/image\/tag'/],
      [['--set', 'redis.relayNamespaces={Mail}'], /at '\/redis\/relayNamespaces\/0': 'Mail' does not match/],
      [['--set', 'redis.replicas=2'], /additional properties 'replicas' not allowed/],
    ];
    for (const [args, want] of cases) {
      const r = await helm('template', RELEASE, CHART, '--set', 'redis.enabled=true', ...args);
      assert.notEqual(r.code, 0, `${args.join(' ')} is refused`);
      assert.match(r.out, want, args.join(' '));
    }
  });
});

describe('chart: the optional Redis shares a fleet rate limit', { timeout: 180_000 }, () => {
  let valuesFile: string;
  let password = '';
  let redisHost = '';

  it('helm install with redis.enabled: Redis runs with the generated password, from its config file', async () => {
    // the NetworkPolicy kind, which the test API server does not have built in (schema left open)
    await kubectl(
      ['apply', '-f', '-'],
      `${openCrd('networking.k8s.io', 'NetworkPolicy', 'networkpolicies')}---
apiVersion: v1
kind: Namespace
metadata: {name: mail}
`,
    );
    valuesFile = path.join(dir, 'values.yaml');
    await writeFile(
      valuesFile,
      YAML.stringify({
        // pods share the loopback network: bind the pod IP (the operator's metrics, and Redis)
        replicaCount: 1,
        metrics: { bindAddress: '$(POD_IP)' },
        statusIntervalMs: 500,
        readinessProbe: { periodSeconds: 1 },
        redis: { enabled: true, relayNamespaces: ['mail'], bindAddress: '$(POD_IP)' },
      }),
    );
    const r = await helmDeploy(helm, 'install', { values: valuesFile });
    assert.equal(r.code, 0, `${r.out}\nkubelet errors: ${kubeletErrors.join('\n')}`);
    assert.match(
      r.out,
      /rateLimitStore:\s+address: cartero-redis\.cartero-system\.svc:6379\s+credentialsSecret: cartero-redis/,
      'NOTES say how to point an SmtpRelay at it',
    );

    const secret = await kjson(['get', 'secret', 'cartero-redis', '-n', NS]);
    password = b64(secret.data.password);
    assert.match(password, /^[A-Za-z0-9]{40}$/);
    assert.equal(b64(secret.data.username), 'default');
    assert.equal(b64(secret.data['redis.conf']), `requirepass ${password}\n`);
    const copy = await kjson(['get', 'secret', 'cartero-redis', '-n', 'mail']);
    assert.equal(copy.type, 'kubernetes.io/basic-auth');
    assert.deepEqual(
      [b64(copy.data.username), b64(copy.data.password)],
      ['default', password],
      'the copy in the relays’ namespace',
    );

    const svc = await kjson(['get', 'service', 'cartero-redis', '-n', NS]);
    redisHost = svc.spec.clusterIP as string;
    assert.ok(redisHost, 'a cluster IP');
    const pods = (await kjson(['get', 'pods', '-n', NS, '-l', 'app.kubernetes.io/name=cartero-redis']))
      .items as Any[];
    assert.equal(pods.length, 1);
    const spec = pods[0].spec;
    assert.equal(spec.securityContext.runAsNonRoot, true);
    assert.equal(spec.containers[0].securityContext.readOnlyRootFilesystem, true);
    assert.ok(spec.containers[0].resources.limits.memory);
    // the process: redis-server with the mounted config file; the password is not in its arguments
    const proc = kubelet.pods().find((p) => p.namespace === NS && p.name === pods[0].metadata.name);
    assert.ok(proc?.pid, 'the Redis process runs');
    const argv = (await readFile(`/proc/${proc.pid}/cmdline`, 'utf8')).split('\0');
    assert.match(argv[0], /redis-server/);
    assert.ok(!argv.some((a) => a.includes(password)), `password on the command line: ${argv.join(' ')}`);

    // through the Service: no password, no access; the generated one works
    assert.match(await redisCli(redisHost, undefined, 'DBSIZE'), /NOAUTH/);
    assert.match(await redisCli(redisHost, 'wrong-password', 'PING'), /WRONGPASS|invalid/i);
    assert.equal(await redisCli(redisHost, password, 'PING'), 'PONG');

    // the NetworkPolicy admits relay pods of the named namespace, to the Redis port only
    const np = await kjson(['get', 'networkpolicy', 'cartero-redis', '-n', NS]);
    assert.deepEqual(np.spec.podSelector.matchLabels, {
      'app.kubernetes.io/name': 'cartero-redis',
      'app.kubernetes.io/instance': RELEASE,
    });
    for (const [k, v] of Object.entries(np.spec.podSelector.matchLabels))
      assert.equal(pods[0].metadata.labels[k], v, 'selects the Redis pod');
    assert.deepEqual(np.spec.policyTypes, ['Ingress']);
    assert.deepEqual(np.spec.ingress, [
      {
        from: [
          {
            podSelector: { matchLabels: { 'app.kubernetes.io/name': 'cartero-relay' } },
            namespaceSelector: {
              matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'In', values: ['mail'] }],
            },
          },
        ],
        ports: [{ port: 'redis', protocol: 'TCP' }],
      },
    ]);
  });

  it('an SmtpRelay pointing at it: one fleet limit, whichever pod takes the mail', async () => {
    await kubectl(
      ['apply', '-f', '-'],
      `apiVersion: v1
kind: Secret
metadata: {name: billing-smtp, namespace: mail}
type: kubernetes.io/basic-auth
stringData: {username: billing, password: billing-Pa55}
---
apiVersion: cartero.io/v1alpha1
kind: SmtpRelay
metadata: {name: outbound, namespace: mail}
spec:
  replicas: 2
  listeners:
    - {name: submission, port: 587, containerPort: 5870, tls: none, auth: required}
  tenants:
    - name: billing
      credentialsSecret: billing-smtp
      senderDomains: [billing.example.com]
      rateLimits: {perMinute: ${LIMIT}}
  routing:
    default: {type: smarthost, smarthost: {host: 127.0.0.1, port: 9, tls: none}}
  rateLimitStore:
    # a cluster would name cartero-redis.${NS}.svc:6379; the test cluster has no DNS
    address: "${redisHost}:6379"
    credentialsSecret: cartero-redis
    timeout: 2s
`,
    );
    // both pods run, with the store in their config, and report it up
    const token = await waitFor(
      async () => {
        const out = await kubectl([
          'get',
          'secret',
          'outbound-secrets',
          '-n',
          'mail',
          '-o',
          'json',
          '--ignore-not-found',
        ]);
        const s = out.trim() ? JSON.parse(out) : undefined;
        return s?.data?.['admin.token'] ? b64(s.data['admin.token']) : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 250, what: 'the fleet Secret' },
    ).catch(async (e: Error) => {
      throw new Error(
        `${e.message}\n${JSON.stringify((await kjson(['get', 'smr', 'outbound', '-n', 'mail'])).status, null, 1)}`,
        { cause: e },
      );
    });
    const fleetSecret = await kjson(['get', 'secret', 'outbound-secrets', '-n', 'mail']);
    assert.equal(
      b64(fleetSecret.data['ratelimit-store.password']),
      password,
      'the operator copied the password',
    );
    const cm = await kjson(['get', 'configmap', 'outbound-config', '-n', 'mail']);
    const doc = YAML.parse(cm.data['relay.yaml'] as string) as Any;
    assert.deepEqual(doc.fleet.rateLimitStore, {
      type: 'redis',
      address: `${redisHost}:6379`,
      keyPrefix: 'mail/outbound:',
      timeout: '2s',
      passwordFile: 'ratelimit-store.password',
    });
    assert.equal(doc.fleet.rateLimitShare, 0.5);

    const ips: string[] = [];
    for (const i of [0, 1]) {
      const state = await waitFor(
        async () => {
          const pod = await kubectl([
            'get',
            'pod',
            `outbound-${i}`,
            '-n',
            'mail',
            '-o',
            'json',
            '--ignore-not-found',
          ]);
          const ip = pod.trim() ? (JSON.parse(pod).status?.podIP as string | undefined) : undefined;
          if (!ip) return undefined;
          const r = await fetch(`http://${ip}:9025/ratelimits`, {
            headers: { authorization: `Bearer ${token}` },
          }).catch(() => undefined);
          if (!r?.ok) return undefined;
          const body = (await r.json()) as Any;
          return body.store?.up && body.scope === 'fleet' ? { ip, body } : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 250, what: `outbound-${i} to report the store up` },
      ).catch(async (e: Error) => {
        const logs = await Promise.all(
          kubelet
            .pods()
            .map(
              async (p) =>
                `--- ${p.name}\n${(await readFile(kubelet.logPath(p.namespace, p.name) ?? '', 'utf8').catch(() => '')).split('\n').slice(-10).join('\n')}`,
            ),
        );
        throw new Error(`${e.message}\n${logs.join('\n')}\nkubelet errors: ${kubeletErrors.join('\n')}`, {
          cause: e,
        });
      });
      ips.push(state.ip);
      assert.deepEqual(state.body.store, { type: 'redis', up: true });
    }

    const open = async (ip: string) => {
      const s = await SmtpSession.open(5870, { host: ip });
      const [auth] = await s.command(
        `AUTH PLAIN ${Buffer.from('\0billing\0billing-Pa55').toString('base64')}`,
      );
      assert.equal(auth.code, 235, auth.text);
      const [mail] = await s.command('MAIL FROM:<app@billing.example.com>');
      assert.equal(mail.code, 250, mail.text);
      return s;
    };
    let seq = 0;
    const rcpt = async (s: SmtpSession) => {
      const [r] = await s.command(`RCPT TO:<r${seq++}@example.net>`);
      if (r.code !== 250) assert.match(r.text, /^451 4\.7\.1 Rate limit /);
      return r.code;
    };
    const [s0, s1] = [await open(ips[0]), await open(ips[1])];
    try {
      const t0 = Date.now();
      // 4 through pod 0, over its local share of 3; 2 through pod 1; then the fleet's 7th on either pod
      const codes = [
        await rcpt(s0),
        await rcpt(s0),
        await rcpt(s0),
        await rcpt(s0),
        await rcpt(s1),
        await rcpt(s1),
        await rcpt(s1),
        await rcpt(s0),
      ];
      const elapsed = Date.now() - t0;
      console.log(
        `perMinute ${LIMIT} on 2 pods through the chart's Redis: ${codes.join(' ')} in ${elapsed} ms`,
      );
      // a bucket of 6/min refills one token every 10 s: a slower run may admit one more, never fewer
      const refill = Math.floor((LIMIT * elapsed) / 60_000);
      assert.deepEqual(codes.slice(0, 6), [250, 250, 250, 250, 250, 250], 'the fleet limit, over both pods');
      const ok = codes.filter((c) => c === 250).length;
      assert.ok(ok >= LIMIT && ok <= LIMIT + refill, `admitted ${ok}: ${codes.join(' ')}`);
      if (refill === 0) assert.deepEqual(codes.slice(6), [451, 451], 'the 7th is refused on either pod');
    } finally {
      await s0.quit().catch(() => {});
      await s1.quit().catch(() => {});
    }
    // the counts are in the chart's Redis, under the fleet's prefix
    const keys = (await redisCli(redisHost, password, '--scan', '--pattern', 'mail/outbound:*')).split('\n');
    assert.deepEqual(keys, ['mail/outbound:rl:{billing}:m']);
  });

  it('helm upgrade keeps the password and the Redis pod', async () => {
    const before = (await kjson(['get', 'pods', '-n', NS, '-l', 'app.kubernetes.io/name=cartero-redis']))
      .items as Any[];
    const r = await helmDeploy(helm, 'upgrade', { values: valuesFile, set: 'statusIntervalMs=600' });
    assert.equal(r.code, 0, r.out);
    const secret = await kjson(['get', 'secret', 'cartero-redis', '-n', NS]);
    assert.equal(b64(secret.data.password), password, 'the password survives the upgrade');
    assert.equal(
      b64((await kjson(['get', 'secret', 'cartero-redis', '-n', 'mail'])).data.password),
      password,
    );
    const now = (await kjson(['get', 'pods', '-n', NS, '-l', 'app.kubernetes.io/name=cartero-redis']))
      .items as Any[];
    assert.deepEqual(
      now.map((p) => p.metadata.uid),
      before.map((p) => p.metadata.uid),
      'the Redis pod is not rolled',
    );
    assert.equal(await redisCli(redisHost, password, 'PING'), 'PONG');
  });
});
