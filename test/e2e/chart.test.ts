/**
 * The Helm chart (charts/cartero) with the real helm v4 (.tmp/tools/helm, scripts/setup-tools.sh):
 * - `helm lint --strict`; `helm template` with the defaults, with every optional feature on, and in
 *   namespace mode, checking the rendered objects; bad values refused by values.schema.json, naming the
 *   field and the reason.
 * - `helm install --wait` into the project's Kubernetes API server, the process kubelet running the
 *   operator pods themselves (image → `node dist/operator/src/main.js`, as operator/Dockerfile does);
 *   `kubectl apply -f examples/kubernetes/` (routed to a test MX), mail through a relay pod arrives;
 *   `helm upgrade` with changed values rolls the operator and the fleet keeps working; the CRD upgrade
 *   procedure of docs/chart.md; `helm uninstall` refused by the pre-delete check while SmtpRelays exist,
 *   then, once they are gone, leaving no operator object behind (CRDs stay); a second release in
 *   namespace mode (watchNamespaces: [mail]).
 * - RBAC: every request the operator's ServiceAccount made (the API server's request log) falls inside
 *   the rules the release rendered, and every rule granted was used (or is on a justified list).
 * The test plays two parts a cluster has and the test API server does not: a scheduler (binding the
 * hook pod) and pods/log (so Helm can print the hook's log).
 */
import { after, before, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { cp, readFile, writeFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import type { ApiServer, RequestRecord } from '@cartero/k8s-testbed/apiserver/server.js';
import type { Kubelet } from '@cartero/k8s-testbed/kubelet/kubelet.js';
import { startTestCluster, type Kubectl, type TestCluster } from '@cartero/k8s-testbed/harness.js';
import {
  CHART,
  CHART_IMAGES,
  helmDeploy,
  helmFor,
  openCrd,
  OPERATOR_IMAGE,
  RELAY_IMAGE,
  RELEASE,
  RELEASE_NAMESPACE as NS,
} from '../helpers/chart.js';
import { waitFor } from '../helpers/poll.js';
import { sendMail } from '../helpers/swaks.js';
import { startTestMx, type TestMx } from '../helpers/testmx.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const MX_ADDRESS = '127.0.4.95';

type Obj = {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  [k: string]: unknown;
};
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

let dir: string;
let cluster: TestCluster;
let api: ApiServer;
let kubectl: Kubectl;
let kubelet: Kubelet;
let mx: TestMx;
let stopScheduler: (() => void) | undefined;
let logProxy: http.Server | undefined;
const kubeletErrors: string[] = [];

/** Helm talks to the API server through the pods/log proxy (below), so it can show a hook pod's log. */
let helmKubeconfig: string | undefined;
let helm: ReturnType<typeof helmFor>;
const kjson = async (args: string[]): Promise<Any> => JSON.parse(await kubectl([...args, '-o', 'json']));
/** kubectl patch --type=merge of the example's SmtpRelay (mail/outbound). */
const patchRelay = (patch: string) =>
  kubectl(['patch', 'smr', 'outbound', '-n', 'mail', '--type=merge', '-p', patch]);

/** `helm template` → parsed objects (hooks included). */
async function template(...args: string[]): Promise<Obj[]> {
  const r = await helmFor(dir)('template', RELEASE, CHART, '-n', NS, ...args);
  assert.equal(r.code, 0, r.out);
  return parseObjects(r.stdout);
}
function parseObjects(text: string): Obj[] {
  return YAML.parseAllDocuments(text)
    .map((d) => {
      assert.deepEqual(d.errors, [], 'rendered YAML parses');
      return d.toJSON() as Obj | null;
    })
    .filter((o): o is Obj => !!o);
}
const find = (objs: Obj[], kind: string, name?: string) =>
  objs.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
const one = (objs: Obj[], kind: string, name?: string): Any => {
  const f = find(objs, kind, name);
  assert.equal(f.length, 1, `one ${kind} ${name ?? ''}: ${f.map((o) => o.metadata.name).join(', ')}`);
  return f[0];
};

/** Metric names documented in docs/metrics.md and docs/operator.md. */
async function documentedMetrics(): Promise<Set<string>> {
  const text =
    (await readFile(path.join(ROOT, 'docs', 'metrics.md'), 'utf8')) +
    (await readFile(path.join(ROOT, 'docs', 'operator.md'), 'utf8'));
  return new Set([...text.matchAll(/`([a-z_]+)(?:\{[^`]*\})?`/g)].map((m) => m[1]));
}
/** Metric names in a PromQL expression (ours all start with these prefixes). */
const metricsIn = (expr: string) =>
  [...expr.matchAll(/\b((?:cartero|controller_runtime|workqueue)_[a-z_]+)\b/g)].map((m) =>
    m[1].replace(/_(bucket|sum|count)$/, ''),
  );

function httpGet(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent: false, timeout: 5000 }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

before(async () => {
  dir = await makeTmpDir('cartero-chart-');
});

after(async () => {
  stopScheduler?.();
  logProxy?.closeAllConnections();
  logProxy?.close();
  await cluster?.stop();
  await mx?.close();
  if (process.env.KEEP_TMP) console.log(`kept ${dir}`);
  else if (dir) await removeTmpDir(dir);
});

const ALL_ON = ['--set', 'serviceMonitor.enabled=true,prometheusRule.enabled=true,dashboard.enabled=true'];

describe('chart: lint, template and schema', () => {
  it('helm lint --strict passes, with the defaults and with every feature on', async () => {
    for (const extra of [
      [],
      ALL_ON,
      ['--set', 'watchNamespaces={mail},rbac.ciliumEgressGatewayPolicies=true'],
    ]) {
      const r = await helmFor(dir)('lint', '--strict', CHART, ...extra);
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /1 chart\(s\) linted, 0 chart\(s\) failed/);
    }
  });

  it('renders the operator with the defaults: hardened pods, probes, env, cluster-wide RBAC', async () => {
    const objs = await template();
    assert.deepEqual(
      [...new Set(objs.map((o) => o.kind))].sort(),
      [
        'ClusterRole',
        'ClusterRoleBinding',
        'Deployment',
        'Lease',
        'PodDisruptionBudget',
        'Pod',
        'Role',
        'RoleBinding',
        'Service',
        'ServiceAccount',
      ].sort(),
    );
    for (const o of objs)
      if (o.kind !== 'ClusterRole' && o.kind !== 'ClusterRoleBinding') assert.equal(o.metadata.namespace, NS);
    const d = one(objs, 'Deployment', 'cartero');
    assert.equal(d.spec.replicas, 2);
    const pod = d.spec.template.spec;
    assert.deepEqual(d.spec.selector.matchLabels, {
      'app.kubernetes.io/name': 'cartero-operator',
      'app.kubernetes.io/instance': RELEASE,
    });
    assert.equal(pod.serviceAccountName, 'cartero');
    assert.deepEqual(pod.securityContext, {
      runAsNonRoot: true,
      runAsUser: 10001,
      runAsGroup: 10001,
      seccompProfile: { type: 'RuntimeDefault' },
    });
    const anti =
      pod.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm;
    assert.equal(anti.topologyKey, 'kubernetes.io/hostname');
    assert.deepEqual(anti.labelSelector.matchLabels, d.spec.selector.matchLabels);
    const c = pod.containers[0];
    assert.equal(c.image, OPERATOR_IMAGE);
    assert.deepEqual(c.securityContext, {
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
    });
    assert.deepEqual(c.resources, { requests: { cpu: '50m', memory: '128Mi' }, limits: { memory: '256Mi' } });
    assert.deepEqual(c.ports, [{ name: 'metrics', containerPort: 8080, protocol: 'TCP' }]);
    assert.deepEqual(c.livenessProbe.httpGet, { path: '/healthz', port: 'metrics' });
    assert.deepEqual(c.readinessProbe.httpGet, { path: '/readyz', port: 'metrics' });
    const env = Object.fromEntries(
      (c.env as Any[]).map((e) => [e.name, e.value ?? `fieldRef:${e.valueFrom.fieldRef.fieldPath}`]),
    );
    assert.deepEqual(env, {
      POD_NAMESPACE: 'fieldRef:metadata.namespace',
      POD_NAME: 'fieldRef:metadata.name',
      POD_IP: 'fieldRef:status.podIP',
      WATCH_NAMESPACE: '',
      CARTERO_RELAY_IMAGE: RELAY_IMAGE,
      METRICS_PORT: '8080',
      METRICS_ADDRESS: '0.0.0.0',
      LOG_LEVEL: 'info',
      STATUS_INTERVAL_MS: '5000',
      DNS_CHECK_INTERVAL_MS: '600000',
    });
    // the env the operator reads is what the chart sets (and nothing it sets is unknown to it)
    const main = await readFile(path.join(ROOT, 'operator', 'src', 'main.ts'), 'utf8');
    for (const name of Object.keys(env).filter((n) => n !== 'POD_IP'))
      assert.match(main, new RegExp(`env\\.${name}\\b`), `main.ts reads ${name}`);
    const svc = one(objs, 'Service', 'cartero-metrics');
    assert.deepEqual(svc.spec.selector, d.spec.selector.matchLabels);
    assert.deepEqual(svc.spec.ports, [
      { name: 'metrics', port: 8080, targetPort: 'metrics', protocol: 'TCP' },
    ]);
    const cr = one(objs, 'ClusterRole');
    assert.ok(
      cr.rules.some((r: Any) => r.resources.includes('smtprelays')),
      'cluster-wide operator rules',
    );
    const lease = one(objs, 'Lease', 'cartero-operator');
    assert.equal(lease.spec, undefined, 'the replicas write the spec');
    const hook = one(objs, 'Pod');
    assert.equal(hook.metadata.annotations['helm.sh/hook'], 'pre-delete');
    assert.deepEqual(hook.spec.containers[0].args, ['--uninstall-check']);
    assert.equal(hook.spec.restartPolicy, 'Never');
    assert.notEqual(
      hook.metadata.labels['app.kubernetes.io/name'],
      'cartero-operator',
      'not selected by the Service',
    );
  });

  it('renders every optional feature: ServiceMonitor, PrometheusRule with the seven alerts, dashboard', async () => {
    const objs = await template(...ALL_ON);
    const docs = await documentedMetrics();
    const svc = one(objs, 'Service', 'cartero-metrics');
    const sm = one(objs, 'ServiceMonitor');
    assert.equal(sm.apiVersion, 'monitoring.coreos.com/v1');
    for (const [k, v] of Object.entries(sm.spec.selector.matchLabels))
      assert.equal(svc.metadata.labels[k], v);
    assert.deepEqual(sm.spec.namespaceSelector, { matchNames: [NS] });
    assert.equal(sm.spec.endpoints[0].port, 'metrics');

    const rule = one(objs, 'PrometheusRule');
    const rules = (rule.spec.groups as Any[]).flatMap((g) => g.rules as Any[]);
    assert.deepEqual(
      rules.map((r) => r.alert),
      [
        'CarteroQueueGrowing',
        'CarteroOldestMessageOld',
        'CarteroBounceRateHigh',
        'CarteroComplaintRateHigh',
        'CarteroTenantPaused',
        'CarteroRelayNotReady',
        'CarteroReconcileErrors',
      ],
    );
    for (const r of rules) {
      assert.ok(r.for && r.labels.severity && r.annotations.summary, r.alert);
      const used = metricsIn(r.expr);
      assert.ok(used.length, `${r.alert} uses a Cartero metric`);
      for (const m of used) assert.ok(docs.has(m), `${r.alert}: ${m} is documented`);
      assert.doesNotMatch(r.annotations.summary, /\{\{-|<no value>/);
    }
    const byName = Object.fromEntries(rules.map((r) => [r.alert, r.expr as string]));
    assert.match(byName.CarteroBounceRateHigh, /cartero_bounce_rate\) > 0\.05/);
    assert.match(byName.CarteroComplaintRateHigh, /cartero_tenant_complaint_rate\) > 0\.001/);
    assert.match(byName.CarteroOldestMessageOld, /cartero_queue_oldest_age_seconds\) > 3600/);
    assert.match(byName.CarteroReconcileErrors, /job="cartero-metrics", namespace="cartero-system"/);

    const cm = one(objs, 'ConfigMap', 'cartero-dashboard');
    assert.equal(cm.metadata.labels.grafana_dashboard, '1');
    const dash = JSON.parse(cm.data['cartero.json']);
    const exprs = (dash.panels as Any[]).flatMap((p) => (p.targets ?? []).map((t: Any) => t.expr as string));
    const used = new Set(exprs.flatMap(metricsIn));
    for (const m of used) assert.ok(docs.has(m), `dashboard: ${m} is documented`);
    for (const m of [
      'cartero_queue_depth',
      'cartero_messages_delivered_total',
      'cartero_bounce_rate',
      'cartero_egress_cap_usage_ratio',
    ])
      assert.ok(used.has(m), `dashboard shows ${m}`);
    assert.ok(
      exprs.some((e) => /cartero_bounce_rate/.test(e) && /by \(tenant\)/.test(e)),
      'bounce rate per tenant',
    );
  });

  it('renders namespace mode: a Role in the watched namespace, WATCH_NAMESPACE, cluster lookups only', async () => {
    const objs = await template('--set', 'watchNamespaces={mail}');
    const d = one(objs, 'Deployment');
    const env = d.spec.template.spec.containers[0].env as Any[];
    assert.equal(env.find((e) => e.name === 'WATCH_NAMESPACE').value, 'mail');
    const role = one(objs, 'Role', 'cartero');
    assert.equal(role.metadata.namespace, 'mail');
    assert.ok(role.rules.some((r: Any) => r.resources.includes('secrets')));
    const rb = one(objs, 'RoleBinding', 'cartero');
    assert.equal(rb.metadata.namespace, 'mail');
    assert.deepEqual(rb.subjects, [{ kind: 'ServiceAccount', name: 'cartero', namespace: NS }]);
    const cr = one(objs, 'ClusterRole');
    assert.deepEqual(
      cr.rules.map((r: Any) => [r.resources, r.verbs]),
      [[['customresourcedefinitions'], ['get']]],
      'cluster-wide: only reading two named CRDs',
    );
    const hook = one(objs, 'Pod');
    assert.equal(
      hook.spec.containers[0].env[0].value,
      'mail',
      'the uninstall check looks where the operator watches',
    );
  });

  it('refuses bad values with the field and the reason', async () => {
    const cases: [string[], RegExp][] = [
      [['--set', 'replicaCount=0'], /at '\/replicaCount': minimum: got 0, want 1/],
      [['--set', 'watchNamespaces={Mail}'], /at '\/watchNamespaces\/0': 'Mail' does not match pattern/],
      [['--set', 'logLevel=verbose'], /at '\/logLevel': value must be one of 'trace', 'debug', 'info'/],
      [['--set', 'image.digest=latest'], /at '\/image\/digest': 'latest' does not match pattern/],
      [['--set', 'metrics.port=80'], /at '\/metrics\/port': minimum: got 80, want 1,024/],
      [['--set', 'replicas=3'], /additional properties 'replicas' not allowed/],
      [
        ['--set', 'prometheusRule.alerts.bounceRate.threshold=5'],
        /bounceRate\/threshold': maximum: got 5, want 1/,
      ],
      [
        ['--set', 'podAntiAffinity=always'],
        /at '\/podAntiAffinity': value must be one of 'soft', 'hard', 'none'/,
      ],
      [['--set', 'resources.requests.memory=lots'], /at '\/resources\/requests\/memory'/],
      [['--set', 'statusIntervalMs=10'], /at '\/statusIntervalMs': minimum: got 10, want 500/],
      [['--set', 'serviceAccount.create=false'], /serviceAccount.name: name an existing ServiceAccount/],
      [
        ['--set', 'serviceMonitor.enabled=true,metrics.service.enabled=false'],
        /serviceMonitor.enabled needs metrics.service.enabled/,
      ],
    ];
    for (const [args, want] of cases) {
      const r = await helmFor(dir)('template', RELEASE, CHART, ...args);
      assert.notEqual(r.code, 0, `${args.join(' ')} is refused`);
      assert.match(r.out, want, args.join(' '));
    }
  });
});

describe('chart: install, examples, upgrade, uninstall, namespace mode', { timeout: 240_000 }, () => {
  let operatorRequestsFrom = 0;
  let valuesFile: string;
  /** The objects the release installed (`helm get manifest`). */
  let installed: Obj[] = [];

  before(async () => {
    cluster = await startTestCluster({
      dir,
      kubelet: {
        images: CHART_IMAGES,
        onError: (e) => kubeletErrors.push(String(e)),
      },
      kubectl: { timeoutMs: 90_000 },
    });
    ({ api, kubectl } = cluster);
    kubelet = cluster.kubelet!;
    stopScheduler = startScheduler(api);
    logProxy = await startLogProxy(api.url, kubelet);
    const { port } = logProxy.address() as { port: number };
    helmKubeconfig = path.join(dir, 'helm-kubeconfig');
    helm = helmFor(dir, () => helmKubeconfig);
    await writeFile(
      helmKubeconfig,
      (await readFile(api.kubeconfig, 'utf8')).replace(api.url, `http://127.0.0.1:${port}`),
    );
    mx = await startTestMx({ address: MX_ADDRESS });
    // The Prometheus Operator's kinds, so the optional objects can be installed (schemas left open)
    await kubectl(
      ['apply', '-f', '-'],
      `${openCrd('monitoring.coreos.com', 'ServiceMonitor', 'servicemonitors')}---\n${openCrd('monitoring.coreos.com', 'PrometheusRule', 'prometheusrules')}`,
    );
    // pods share the loopback network: bind the pod IP; quick probes and status reads keep the test short
    valuesFile = path.join(dir, 'values.yaml');
    await writeFile(
      valuesFile,
      YAML.stringify({
        metrics: { bindAddress: '$(POD_IP)' },
        statusIntervalMs: 500,
        readinessProbe: { periodSeconds: 1 },
        livenessProbe: { initialDelaySeconds: 5, periodSeconds: 2 },
        serviceMonitor: { enabled: true },
        prometheusRule: { enabled: true },
        dashboard: { enabled: true },
      }),
    );
  });

  const operatorPods = async () =>
    (
      (await kjson(['get', 'pods', '-n', NS, '-l', 'app.kubernetes.io/name=cartero-operator'])).items as Any[]
    ).filter((p) => !p.metadata.deletionTimestamp);
  const leaseHolder = async () =>
    (await kjson(['get', 'lease', 'cartero-operator', '-n', NS])).spec?.holderIdentity as string | undefined;
  const relay = async (): Promise<Any> => {
    const out = await kubectl(['get', 'smr', 'outbound', '-n', 'mail', '-o', 'json', '--ignore-not-found']);
    return out.trim() ? JSON.parse(out) : undefined;
  };
  const ready = (r: Any) =>
    r?.status?.observedGeneration === r?.metadata.generation &&
    r?.status?.conditions?.some((c: Any) => c.type === 'Ready' && c.status === 'True');
  /** Waits for the example fleet to be Ready; on a timeout, says what the fleet and the operator show. */
  async function fleetReady(timeoutMs: number): Promise<void> {
    try {
      await waitFor(async () => ready(await relay()), {
        timeoutMs,
        intervalMs: 250,
        what: 'the fleet Ready',
      });
    } catch (e) {
      const r = await relay();
      const logs = await Promise.all(
        kubelet
          .pods()
          .filter((p) => p.namespace !== 'default')
          .map(async (p) => {
            const text = await readFile(kubelet.logPath(p.namespace, p.name) ?? '', 'utf8').catch(() => '');
            return `--- ${p.name}\n${text.split('\n').slice(-15).join('\n')}`;
          }),
      );
      const pods = await kubectl(['get', 'pods', '-A', '-o', 'wide']);
      throw new Error(
        `${(e as Error).message}\nstatus: ${JSON.stringify(r?.status, null, 1)}\n${pods}\n${logs.join('\n')}` +
          `\nkubelet errors: ${kubeletErrors.join('\n') || 'none'}`,
        { cause: e },
      );
    }
  }
  async function sendThroughFleet(to: string): Promise<void> {
    const pod = await kjson(['get', 'pod', 'outbound-0', '-n', 'mail']);
    await sendMail(2525, {
      host: pod.status.podIP,
      from: 'app@billing.example.com',
      to: [to],
      auth: { user: 'billing', pass: 'billing-change-me' },
    });
    await waitFor(() => mx.byRecipient(to).length === 1, { timeoutMs: 20_000, what: `${to} at the test MX` });
  }

  it('helm install --wait runs the operator pods; one leads; NOTES say what to apply next', async () => {
    operatorRequestsFrom = api.requests.length;
    const r = await helmDeploy(helm, 'install', { values: valuesFile });
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /STATUS: deployed/);
    assert.match(r.out, /kubectl apply -f examples\/kubernetes\//);
    assert.match(r.out, /kubectl apply --server-side --force-conflicts -f <new chart>\/crds\//);
    for (const crd of ['smtprelays.cartero.io', 'ippools.cartero.io']) {
      const established = await kubectl([
        'get',
        'crd',
        crd,
        '-o',
        'jsonpath={.status.conditions[?(@.type=="Established")].status}',
      ]);
      assert.equal(established, 'True', `${crd} installed from the chart`);
    }
    const manifest = await helm('get', 'manifest', RELEASE, '-n', NS);
    assert.equal(manifest.code, 0, manifest.out);
    installed = parseObjects(manifest.stdout);
    const pods = await operatorPods();
    assert.equal(pods.length, 2);
    assert.ok(pods.every((p) => p.status.phase === 'Running'));
    const holder = await waitFor(leaseHolder, { timeoutMs: 20_000, what: 'a leader' });
    assert.ok(
      pods.some((p) => p.metadata.name === holder),
      `the Lease is held by an operator pod (${holder})`,
    );
  });

  it('kubectl apply -f examples/kubernetes/ gives a Ready fleet; mail through a relay pod arrives', async () => {
    await kubectl(['apply', '-f', path.join(ROOT, 'examples', 'kubernetes')]);
    await fleetReady(60_000);
    // No Internet here: route the example's mail (MX, smarthost backup) to the test MX. The running
    // relays reload the new config from their ConfigMap, without a restart.
    const sts = await kjson(['get', 'sts', 'outbound', '-n', 'mail']);
    await patchRelay(
      JSON.stringify({
        spec: {
          routing: {
            default: { type: 'smarthost', smarthost: { host: MX_ADDRESS, port: mx.port, tls: 'none' } },
            backups: [],
          },
        },
      }),
    );
    await fleetReady(30_000);
    assert.equal(
      (await kjson(['get', 'sts', 'outbound', '-n', 'mail'])).metadata.generation,
      sts.metadata.generation,
    );
    assert.match(await kubectl(['get', 'smr', '-n', 'mail']), /outbound\s+2\/2\s+2\s+0\s+0\.0%/);
    await sendThroughFleet('first@example.net');
    // the operator found the Prometheus Operator's CRD and made the fleet's ServiceMonitor
    await kjson(['get', 'servicemonitor', 'outbound', '-n', 'mail']);
  });

  it("the operator's metrics answer through the chart's Service", async () => {
    const svc = await kjson(['get', 'svc', 'cartero-metrics', '-n', NS]);
    const body = await waitFor(
      async () => {
        const r = await httpGet(`http://${svc.spec.clusterIP}:8080/metrics`).catch(() => undefined);
        return r?.status === 200 ? r.body : undefined;
      },
      { timeoutMs: 10_000, what: 'operator metrics' },
    );
    assert.match(body, /# TYPE cartero_operator_smtprelays gauge/);
    assert.match(body, /# TYPE controller_runtime_reconcile_total counter/);
  });

  it('helm upgrade with changed values rolls the operator; the fleet keeps working', async () => {
    const before = new Set((await operatorPods()).map((p) => p.metadata.name));
    const sts = await kjson(['get', 'sts', 'outbound', '-n', 'mail']);
    const r = await helmDeploy(helm, 'upgrade', {
      values: valuesFile,
      set: 'logLevel=debug,resources.limits.memory=300Mi',
    });
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /REVISION: 2/);
    const pods = await waitFor(
      async () => {
        const p = await operatorPods();
        return p.length === 2 && p.every((x) => !before.has(x.metadata.name)) ? p : undefined;
      },
      { timeoutMs: 30_000, what: 'two new operator pods' },
    );
    const c = pods[0].spec.containers[0];
    assert.equal(c.env.find((e: Any) => e.name === 'LOG_LEVEL').value, 'debug');
    assert.equal(c.resources.limits.memory, '300Mi');
    const holder = await waitFor(
      async () => {
        const h = await leaseHolder();
        return h && pods.some((p) => p.metadata.name === h) ? h : undefined;
      },
      { timeoutMs: 30_000, what: 'a new pod to lead' },
    );
    assert.ok(holder);
    // the new leader reconciles the fleet as it was: no change to its StatefulSet, mail still flows
    await fleetReady(30_000);
    const stsAfter = await kjson(['get', 'sts', 'outbound', '-n', 'mail']);
    assert.equal(stsAfter.metadata.generation, sts.metadata.generation, 'relay pods not rolled');
    await sendThroughFleet('after-upgrade@example.net');
  });

  it('CRD upgrades: helm upgrade leaves crds/ alone; kubectl apply --server-side of the new crds/ updates them', async () => {
    // "the next chart version": its SmtpRelay CRD has a new printer column
    const next = path.join(dir, 'chart-next');
    await cp(CHART, next, { recursive: true });
    const crdFile = path.join(next, 'crds', 'smtprelay.yaml');
    const crd = YAML.parseDocument(await readFile(crdFile, 'utf8'));
    const cols = crd.getIn(['spec', 'versions', 0, 'additionalPrinterColumns']) as YAML.YAMLSeq;
    cols.add(crd.createNode({ name: 'Image', type: 'string', jsonPath: '.spec.image', priority: 1 }));
    await writeFile(crdFile, crd.toString());
    await writeFile(
      path.join(next, 'Chart.yaml'),
      (await readFile(path.join(next, 'Chart.yaml'), 'utf8')).replace(/^version: .*$/m, 'version: 0.2.0'),
    );
    const columns = async () =>
      (
        (await kjson(['get', 'crd', 'smtprelays.cartero.io'])).spec.versions[0]
          .additionalPrinterColumns as Any[]
      ).map((c) => c.name);
    assert.ok(!(await columns()).includes('Image'));

    let r = await helmDeploy(helm, 'upgrade', { values: valuesFile, chart: next });
    assert.equal(r.code, 0, r.out);
    assert.ok(!(await columns()).includes('Image'), 'Helm does not upgrade crds/');

    // the documented procedure (docs/chart.md): CRDs first, then the chart
    await kubectl(['apply', '--server-side', '--force-conflicts', '-f', path.join(next, 'crds')]);
    assert.ok((await columns()).includes('Image'), 'the new CRD is in place');
    r = await helmDeploy(helm, 'upgrade', { values: valuesFile, chart: next });
    assert.equal(r.code, 0, r.out);
    assert.match(await kubectl(['get', 'smr', 'outbound', '-n', 'mail', '-o', 'wide']), /IMAGE/);
    assert.ok(ready(await relay()), 'the fleet is untouched');
  });

  it('a fleet without a disruption budget: the operator deletes it', async () => {
    await kubectl(['get', 'pdb', 'outbound', '-n', 'mail']);
    await patchRelay('{"spec":{"podDisruptionBudget":{"enabled":false}}}');
    await waitFor(
      async () => !(await kubectl(['get', 'pdb', '-n', 'mail', '-o', 'name'])).includes('outbound'),
      {
        timeoutMs: 20_000,
        what: 'the PDB to go',
      },
    );
  });

  it('helm uninstall is refused while SmtpRelays exist, and says what to do', async () => {
    const r = await helm('uninstall', RELEASE, '-n', NS, '--timeout', '60s');
    assert.notEqual(r.code, 0, r.out);
    assert.match(r.out, /cartero-uninstall-check.*failed/);
    // Helm prints the check's log (hook-output-log-policy), which says why and what to do
    assert.match(r.out, /refusing to uninstall the operator: 1 SmtpRelay\(s\) still exist: mail\/outbound\./);
    assert.match(r.out, /kubectl delete smtprelays --all -A/);
    // Helm marks the release "uninstalling" before it runs the hook; nothing was deleted, and a rollback
    // marks it deployed again (docs/chart.md), as when one decides to keep the operator
    assert.match((await helm('status', RELEASE, '-n', NS)).out, /STATUS: uninstalling/);
    const rev = String(JSON.parse((await helm('status', RELEASE, '-n', NS, '-o', 'json')).stdout).version);
    const rb = await helm('rollback', RELEASE, rev, '-n', NS, '--wait', '--timeout', '60s');
    assert.equal(rb.code, 0, rb.out);
    assert.match((await helm('status', RELEASE, '-n', NS)).out, /STATUS: deployed/);
    assert.equal((await operatorPods()).length, 2, 'the operator still runs');
  });

  it('once the SmtpRelays are gone, helm uninstall leaves no operator object; CRDs and IpPools stay', async () => {
    await kubectl(['delete', 'smr', 'outbound', '-n', 'mail', '--wait=false']);
    await waitFor(async () => !(await relay()), {
      timeoutMs: 60_000,
      intervalMs: 250,
      what: 'the SmtpRelay to be drained and go',
    });
    const r = await helm('uninstall', RELEASE, '-n', NS, '--timeout', '60s');
    assert.equal(r.code, 0, r.out);
    const kinds =
      'deployments,replicasets,pods,services,serviceaccounts,configmaps,poddisruptionbudgets,leases,roles,rolebindings,servicemonitors,prometheusrules';
    let left: string[] = [];
    const remaining = async () =>
      (await kubectl(['get', kinds, '-n', NS, '-o', 'name']))
        .split('\n')
        .filter((n) => n && n !== 'serviceaccount/default'); // the namespace's own
    await waitFor(async () => (left = await remaining()).length === 0, {
      timeoutMs: 30_000,
      what: `nothing left in ${NS}`,
    }).catch((e: Error) => assert.fail(`${e.message}: ${left.join(', ')}`));
    const cluster = await kubectl(['get', 'clusterroles,clusterrolebindings', '-o', 'name']);
    assert.doesNotMatch(cluster, /cartero/);
    assert.equal((await kubectl(['get', 'secrets', '-n', NS, '-l', 'owner=helm', '-o', 'name'])).trim(), '');
    await waitFor(() => kubelet.pods().filter((p) => p.namespace === NS).length === 0, {
      timeoutMs: 30_000,
      what: 'operator processes to stop',
    });
    for (const crd of ['smtprelays.cartero.io', 'ippools.cartero.io']) await kubectl(['get', 'crd', crd]);
    await kubectl(['get', 'ippool', 'newsletter', '-n', 'mail']);
  });

  it("RBAC: the operator's requests all fall inside the rendered rules; every rule was used", (t) => {
    // Nothing granted goes unused today (rbac.ciliumEgressGatewayPolicies, off by default, is not
    // rendered here); a rule needed only on paths this test does not take would be listed, with its reason.
    checkRbac(t, installed, NS, operatorRequestsFrom, [
      // a fallback: the StatefulSet's whenScaled: Delete removes the claims first where the cluster has
      // that feature (GA in 1.32); the operator deletes what is left after a drained deletion
      'ClusterRole cartero-cartero-system: delete persistentvolumeclaims',
      // only for a pod that finished a drain but is still wanted (test/e2e/operator.test.ts covers it)
      'ClusterRole cartero-cartero-system: delete pods',
    ]);
  });

  it('namespace mode (watchNamespaces: [mail]): a Role there, its fleet delivers, others are left alone; RBAC as rendered', async (t) => {
    const ns = 'cartero-mail';
    const from = api.requests.length;
    // an SmtpRelay in a namespace this operator does not watch
    await kubectl(
      ['apply', '-f', '-'],
      'apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n---\n' +
        'apiVersion: cartero.io/v1alpha1\nkind: SmtpRelay\nmetadata: {name: outside, namespace: other}\nspec: {replicas: 1}\n',
    );
    // the chart version whose CRDs are in the cluster (the CRD upgrade above): Helm 4 applies crds/
    // server-side on install, which an older chart's CRDs would conflict with (docs/chart.md)
    const inst = await helmDeploy(helm, 'install', {
      values: valuesFile,
      chart: path.join(dir, 'chart-next'),
      namespace: ns,
      set: 'watchNamespaces={mail}',
    });
    assert.equal(inst.code, 0, inst.out);
    assert.match(inst.out, /It watches the namespace mail only/);
    const manifest = await helm('get', 'manifest', RELEASE, '-n', ns);
    const objs = parseObjects(manifest.stdout);
    assert.equal(one(objs, 'Role', 'cartero').metadata.namespace, 'mail');

    // The first fleet delivered everything before its deletion finished, so the operator deleted its claims
    // (a new SmtpRelay of the same name must not start on volumes that remember a drain).
    assert.equal((await kubectl(['get', 'pvc', '-n', 'mail', '-o', 'name'])).trim(), '');
    // the example fleet, routed to the test MX from the start
    const smr = YAML.parse(
      await readFile(path.join(ROOT, 'examples', 'kubernetes', '30-smtprelay.yaml'), 'utf8'),
    );
    smr.spec.routing = {
      default: { type: 'smarthost', smarthost: { host: MX_ADDRESS, port: mx.port, tls: 'none' } },
    };
    await kubectl(['apply', '-f', '-'], YAML.stringify(smr));
    await fleetReady(60_000);
    await sendThroughFleet('namespaced@example.net');
    const outside = await kjson(['get', 'smr', 'outside', '-n', 'other']);
    assert.equal(outside.metadata.finalizers, undefined, 'not watched: no finalizer');
    assert.equal(outside.status, undefined, 'not watched: no status');

    await kubectl(['delete', 'smr', 'outbound', '-n', 'mail', '--wait=false']);
    await waitFor(async () => !(await relay()), {
      timeoutMs: 60_000,
      intervalMs: 250,
      what: 'the SmtpRelay to go',
    });
    // the uninstall check looks only where the operator watches: other/outside does not hold it up
    const un = await helm('uninstall', RELEASE, '-n', ns, '--timeout', '60s');
    assert.equal(un.code, 0, un.out);
    await kubectl(['delete', 'namespace', 'other', '--wait=false']);
    checkRbac(t, objs, ns, from, [
      // used only when a fleet turns its budget off (podDisruptionBudget.enabled: false), as in cluster mode above
      'Role mail/cartero: delete poddisruptionbudgets',
      // fallback after a drained deletion, see above
      'Role mail/cartero: delete persistentvolumeclaims',
      'Role mail/cartero: delete pods',
    ]);
  });
});

/**
 * The API server does not serve pods/log (the process kubelet keeps each container's log in a file):
 * this proxy serves it from the kubelet's files and forwards every other request, so `helm uninstall`
 * prints the log of a failed hook pod (helm.sh/hook-output-log-policy) as it does on a cluster.
 */
async function startLogProxy(target: string, k: Kubelet): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/?]+)\/log(\?|$)/.exec(req.url ?? '');
    if (m && req.method === 'GET') {
      const file = k.logPath(decodeURIComponent(m[1]), decodeURIComponent(m[2]));
      void (file ? readFile(file) : Promise.reject(new Error('no pod')))
        .then((body) => res.writeHead(200, { 'content-type': 'text/plain' }).end(body))
        .catch(() =>
          res.writeHead(404, { 'content-type': 'application/json' }).end(
            JSON.stringify({
              kind: 'Status',
              apiVersion: 'v1',
              status: 'Failure',
              reason: 'NotFound',
              code: 404,
            }),
          ),
        );
      return;
    }
    const up = http.request(`${target}${req.url}`, { method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

/**
 * The scheduler's part: binds pods that name no node to the process kubelet's node (its own controllers
 * bind the pods they make; a bare pod such as the chart's pre-delete hook needs a scheduler).
 */
function startScheduler(server: ApiServer): () => void {
  const podT = server.registry.find('', 'v1', 'pods')!;
  const bind = () => {
    for (const p of server.store.list(podT).items) {
      const spec = p.spec as { nodeName?: string } | undefined;
      if (spec?.nodeName || p.metadata.deletionTimestamp) continue;
      try {
        server.store.update(podT, p.metadata.namespace ?? '', p.metadata.name ?? '', {
          ...p,
          spec: { ...spec, nodeName: 'cartero-kubelet' },
        });
      } catch {
        // changed meanwhile: the next event binds it
      }
    }
  };
  return server.store.subscribe((e) => {
    if (e.key === '/pods' && e.type !== 'DELETED') setImmediate(bind);
  });
}

/**
 * Checks the requests `system:serviceaccount:<ns>:cartero` made (from request `from` on) against the
 * rules the release `objs` granted it: none outside them, and every verb on every resource granted used
 * (or on `allowedUnused`, each with its reason). Lists what was used and what was not.
 */
function checkRbac(
  t: TestContext,
  objs: Obj[],
  ns: string,
  from: number,
  allowedUnused: string[] = [],
): void {
  const rules = grantedRules(objs, ns, 'cartero');
  const user = `system:serviceaccount:${ns}:cartero`;
  const reqs = api.requests.slice(from).filter((r) => r.user === user);
  assert.ok(reqs.length > 50, `requests by ${user}: ${reqs.length}`);
  // what was used, per rule, resource, resource name and verb
  const used = new Set<string>();
  const outside: string[] = [];
  for (const r of reqs) {
    if (r.verb === '') {
      // discovery (/api, /apis, /version): every authenticated user may read it (system:discovery)
      assert.equal(r.method, 'GET', r.path);
      assert.match(r.path, /^\/(api|apis|version)(\/|\?|$)/, r.path);
      continue;
    }
    // a server-side apply that creates the object is authorized as create too
    const verbs = r.verb === 'patch' && r.code === 201 ? ['patch', 'create'] : [r.verb];
    for (const verb of verbs) {
      const hit = rules.filter((g) => allows(g, r, verb));
      if (!hit.length) outside.push(`${verb} ${describeReq(r)}`);
      for (const g of hit) used.add(grantKey(g, resourceOf(r), g.resourceNames ? r.name : '', verb));
    }
  }
  assert.deepEqual([...new Set(outside)], [], 'requests outside the granted rules');
  const granted = rules.flatMap((g) =>
    g.resources.flatMap((res) =>
      (g.resourceNames ?? ['']).flatMap((name) =>
        g.verbs.map((verb) => ({
          key: grantKey(g, res, name, verb),
          text: `${g.where}: ${verb} ${res}${name ? ` ${name}` : ''}`,
        })),
      ),
    ),
  );
  const unused = granted.filter((x) => !used.has(x.key)).map((x) => x.text);
  t.diagnostic(
    `operator requests: ${reqs.length}; granted: ${granted.length} verb/resource pairs; unused: ${unused.length}`,
  );
  for (const x of granted.filter((x) => used.has(x.key))) t.diagnostic(`used: ${x.text}`);
  for (const u of unused) t.diagnostic(`granted, not used: ${u}`);
  assert.deepEqual(
    unused.filter((u) => !allowedUnused.includes(u)),
    [],
    'rules granted but never used',
  );
}

interface Granted {
  id: string;
  /** `cluster` or the namespace a Role applies in. */
  where: string;
  namespace?: string;
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}

/** The rules bound to ServiceAccount `ns/sa` by the rendered (Cluster)Roles and bindings. */
function grantedRules(objs: Obj[], ns: string, sa: string): Granted[] {
  const out: Granted[] = [];
  const bound = (b: Any) =>
    (b.subjects as Any[]).some((s) => s.kind === 'ServiceAccount' && s.name === sa && s.namespace === ns);
  for (const b of objs.filter((o) => o.kind === 'ClusterRoleBinding' || o.kind === 'RoleBinding') as Any[]) {
    if (!bound(b)) continue;
    const role = objs.find(
      (o) =>
        o.kind === b.roleRef.kind &&
        o.metadata.name === b.roleRef.name &&
        (o.kind === 'ClusterRole' || o.metadata.namespace === b.metadata.namespace),
    ) as Any;
    assert.ok(role, `${b.kind} ${b.metadata.name} names a rendered ${b.roleRef.kind}`);
    const namespace = b.kind === 'RoleBinding' ? (b.metadata.namespace as string) : undefined;
    (role.rules as Any[]).forEach((r, i) =>
      out.push({
        id: `${b.kind}/${b.metadata.name}#${i}`,
        where: namespace ? `Role ${namespace}/${role.metadata.name}` : `ClusterRole ${role.metadata.name}`,
        ...(namespace ? { namespace } : {}),
        apiGroups: r.apiGroups,
        resources: r.resources,
        verbs: r.verbs,
        ...(r.resourceNames ? { resourceNames: r.resourceNames } : {}),
      }),
    );
  }
  return out;
}

const resourceOf = (r: RequestRecord) => (r.subresource ? `${r.resource}/${r.subresource}` : r.resource);
const grantKey = (g: Granted, resource: string, name: string, verb: string) =>
  `${g.id} ${g.apiGroups.join(',')} ${resource} ${name} ${verb}`;

function allows(g: Granted, r: RequestRecord, verb: string): boolean {
  if (g.namespace !== undefined && r.namespace !== g.namespace) return false;
  const resource = resourceOf(r);
  return (
    (g.apiGroups.includes(r.group) || g.apiGroups.includes('*')) &&
    (g.resources.includes(resource) || g.resources.includes('*')) &&
    (g.verbs.includes(verb) || g.verbs.includes('*')) &&
    (!g.resourceNames || (r.name !== '' && g.resourceNames.includes(r.name)))
  );
}

const describeReq = (r: RequestRecord) =>
  `${r.group || 'core'}/${r.resource}${r.subresource ? `/${r.subresource}` : ''}${r.namespace ? ` in ${r.namespace}` : ' (cluster)'}${r.name ? ` ${r.name}` : ''}`;
