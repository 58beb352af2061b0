/**
 * `npm start`: the Kubernetes playground. Starts the project's Kubernetes API server and process kubelet
 * (test/k8s/), installs crds/, runs the operator against it, applies examples/kubernetes/, and starts a
 * capture MX that keeps every message it receives under .tmp/playground/captured/. Then it prints how to
 * send mail, where the metrics are and the kubectl line to look around. Ctrl-C stops every process it
 * started.
 *
 * The playground has no Internet: MX lookups fail here. So that mail arrives somewhere you can read it,
 * the playground runs a dnsmasq that resolves every domain to the capture MX and sets spec.dns of every
 * SmtpRelay to use it (a field the examples leave out, so re-applying an example keeps it). It says so.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import YAML from 'yaml';
import { startCaptureMx } from './capture-mx.js';
import { dnsmasqBaseArgs } from '../test/helpers/dnsmasq.js';
import { startApiServer } from '@cartero/k8s-testbed/apiserver/server.js';
import { loopbackAddresses, startKubelet } from '@cartero/k8s-testbed/kubelet/kubelet.js';
import { kubectlFor } from '@cartero/k8s-testbed/harness.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
// CARTERO_PLAYGROUND_DIR: where state goes (default .tmp/playground; the playground test uses a temp dir)
const root = process.env.CARTERO_PLAYGROUND_DIR ?? path.join(repo, '.tmp/playground');
const captured = path.join(root, 'captured');
const RELAY_IMAGE = 'ghcr.io/cartero/relay:0.1.0';
const CAPTURE = { host: '127.0.4.25', port: 2525 };
const say = (s: string) => process.stdout.write(s + '\n');

rmSync(root, { recursive: true, force: true });
mkdirSync(captured, { recursive: true });

// --- capture MX
const mx = await startCaptureMx({ ...CAPTURE, dir: captured, relativeTo: repo, onMessage: say });

// --- API server and kubelet
const api = await startApiServer({ dir: path.join(root, 'api') });
const kubelet = startKubelet({
  server: api,
  images: { [RELAY_IMAGE]: { command: process.execPath, args: [path.join(repo, 'dist/relay/src/main.js')] } },
  dir: path.join(root, 'pods'),
  podAddresses: loopbackAddresses('127.0.1'),
});
const kubectl = kubectlFor(api.kubeconfig, path.join(root, 'kube-cache'), { timeoutMs: 180_000 });

// --- operator, as a process with the kubeconfig (what the chart runs as a Deployment)
let stopping = false;
const operator: ChildProcess = spawn(process.execPath, [path.join(repo, 'dist/operator/src/main.js')], {
  env: {
    ...process.env,
    KUBECONFIG: api.kubeconfig,
    CARTERO_RELAY_IMAGE: RELAY_IMAGE,
    POD_NAMESPACE: 'default',
    POD_NAME: 'playground-operator',
    METRICS_PORT: '0',
    METRICS_ADDRESS: '127.0.0.1',
  },
  stdio: ['ignore', 'pipe', 'inherit'],
});
let opBuf = '';
operator.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
  opBuf += chunk;
  let i;
  while ((i = opBuf.indexOf('\n')) >= 0) {
    const line = opBuf.slice(0, i);
    opBuf = opBuf.slice(i + 1);
    try {
      const ev = JSON.parse(line) as { level: number; msg: string; err?: string; smtprelay?: string };
      if (ev.level >= 40) say(`operator: ${ev.msg} ${ev.smtprelay ?? ''} ${ev.err ?? ''}`);
    } catch {
      say(`operator: ${line}`);
    }
  }
});
operator.on('exit', (code, signal) => {
  if (!stopping) {
    say(`operator exited (${code ?? signal}); stopping the playground`);
    void stop();
  }
});

// --- DNS that sends every domain to the capture MX (no Internet here)
// dnsmasq answers every A query with the capture MX's address; MX queries get no records, so relays use
// the A record (implicit MX). Every SmtpRelay gets spec.dns pointing at it, a field the examples leave
// out, so re-applying an example keeps it.
// The example IpPool's addresses get forward-confirmed reverse DNS (a PTR naming the EHLO name, whose A
// record is the address: dnsmasq's host records take precedence over the catch-all), so `kubectl get ipp`
// shows them VERIFIED as they would be with a provider's PTR records.
const DNS = { host: '127.0.4.26', port: 5353 };
const dnsmasq: ChildProcess = spawn(
  'dnsmasq',
  [
    ...dnsmasqBaseArgs(DNS.port, DNS.host),
    ...examplePoolHosts().map(({ ip, ehlo }) => `--host-record=${ehlo},${ip}`),
    `--address=/#/${CAPTURE.host}`,
    '--local=/#/', // every name is local: MX queries get an empty answer, so relays use the A record
  ],
  { stdio: ['ignore', 'ignore', 'pipe'] },
);
dnsmasq.on('error', (e) => {
  say(`playground: cannot run dnsmasq (${e.message}); npm start installs it with scripts/setup-system.sh`);
  void stop();
});
const playgroundDns = {
  servers: [`${DNS.host}:${DNS.port}`],
  allowPrivateTargets: ['127.0.4.0/24'],
  mxPort: CAPTURE.port,
};
let routing = false;
async function routeToCapture(): Promise<void> {
  // one pass at a time: a slow kubectl must not let two passes patch (and announce) the same relay
  if (routing) return;
  routing = true;
  try {
    await routeOnce();
  } finally {
    routing = false;
  }
}
async function routeOnce(): Promise<void> {
  const list = JSON.parse(await kubectl(['get', 'smr', '-A', '-o', 'json'])) as {
    items: { metadata: { name: string; namespace: string }; spec: { dns?: unknown } }[];
  };
  for (const r of list.items) {
    // A real difference only: the API server returns the object with its keys in its own order, and a
    // user may have set more of spec.dns (a merge patch leaves those alone).
    const dns = (r.spec.dns ?? {}) as Record<string, unknown>;
    if (Object.entries(playgroundDns).every(([k, v]) => isDeepStrictEqual(dns[k], v))) continue;
    await kubectl([
      'patch',
      'smr',
      r.metadata.name,
      '-n',
      r.metadata.namespace,
      '--type=merge',
      '-p',
      JSON.stringify({ spec: { dns: playgroundDns } }),
    ]);
    say(
      `playground: SmtpRelay ${r.metadata.namespace}/${r.metadata.name} resolves every domain to the capture MX ${CAPTURE.host}:${CAPTURE.port} (spec.dns)`,
    );
  }
}

let timer: NodeJS.Timeout | undefined;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  say('\nstopping the playground...');
  if (timer) clearInterval(timer);
  operator.kill('SIGTERM');
  dnsmasq.kill('SIGTERM');
  await new Promise<void>((resolve) =>
    operator.exitCode !== null ? resolve() : operator.once('exit', () => resolve()),
  );
  await kubelet.stop();
  await api.stop();
  await new Promise<void>((resolve) => mx.close(() => resolve()));
  say('stopped.');
  process.exit(0);
}
process.on('SIGINT', () => void stop());
process.on('SIGTERM', () => void stop());

try {
  await kubectl(['apply', '-f', path.join(repo, 'crds')]);
  await kubectl([
    'wait',
    '--for=condition=Established',
    'crd/smtprelays.cartero.io',
    'crd/ippools.cartero.io',
  ]);
  await kubectl(['apply', '-f', path.join(repo, 'examples/kubernetes')]);
  await routeToCapture();
  timer = setInterval(() => void routeToCapture().catch((e: Error) => say(`playground: ${e.message}`)), 2000);
  say('waiting for the fleet to become Ready...');
  await kubectl(['wait', '--for=condition=Ready', 'smr', '--all', '-A', '--timeout=120s']);
} catch (e) {
  say(`playground: ${(e as Error).message}`);
  await stop();
}

const relays = JSON.parse(await kubectl(['get', 'smr', '-A', '-o', 'json'])) as {
  items: {
    metadata: { name: string; namespace: string };
    spec: { tenants?: { name: string; credentialsSecret?: string }[] };
  }[];
};
const lines: string[] = [];
for (const r of relays.items) {
  const ns = r.metadata.namespace;
  const pods = JSON.parse(
    await kubectl([
      'get',
      'pods',
      '-n',
      ns,
      '-l',
      `app.kubernetes.io/instance=${r.metadata.name}`,
      '-o',
      'json',
    ]),
  ) as {
    items: { metadata: { name: string }; status: { podIP?: string } }[];
  };
  const ip = pods.items[0]?.status.podIP ?? '<pod ip>';
  const svc = (
    await kubectl(['get', 'svc', r.metadata.name, '-n', ns, '-o', 'jsonpath={.spec.clusterIP}'])
  ).trim();
  lines.push(
    `  SmtpRelay ${ns}/${r.metadata.name}: pods ${pods.items.map((p) => `${p.metadata.name} ${p.status.podIP}`).join(', ')}`,
  );
  for (const t of r.spec.tenants ?? []) {
    if (!t.credentialsSecret) continue;
    const s = YAML.parse(await kubectl(['get', 'secret', t.credentialsSecret, '-n', ns, '-o', 'yaml'])) as {
      data: Record<string, string>;
    };
    const dec = (k: string) => Buffer.from(s.data[k] ?? '', 'base64').toString();
    lines.push(
      `    tenant ${t.name}: swaks --server ${ip} --port 5870 --auth PLAIN --auth-user ${dec('username')} --auth-password '${dec('password')}' \\`,
      `        --from someone@${t.name === 'newsletter' ? 'news' : t.name}.example.com --to anyone@example.org`,
    );
  }
  lines.push(
    `    or through the Service (to a Ready pod): --server ${svc} --port 587 (AUTH), --port 25 (trusted networks)`,
    `    metrics: curl http://${ip}:9025/metrics    readiness: curl http://${ip}:9025/readyz`,
  );
}
const rel = path.relative(process.cwd(), root) || '.';
say(`
Cartero playground is running: Kubernetes API ${api.url}, the operator, and the fleet it built from
examples/kubernetes/. (Pods are local processes; their output is in ${rel}/pods/<ns>_<pod>_<uid>/<container>.log,
which \`kubectl logs\` serves.)

${lines.join('\n')}

  Look around:  kubectl --kubeconfig ${api.kubeconfig} get smr,ipp,sts,pods -A
  Logs:         kubectl --kubeconfig ${api.kubeconfig} logs -n <ns> <pod> [-f] [--tail=N]
  Change the fleet: edit examples/kubernetes/*.yaml, then
                kubectl --kubeconfig ${api.kubeconfig} apply -f examples/kubernetes/
  Captured mail: ${rel}/captured/ (every domain resolves to the capture MX here)
  Ctrl-C stops everything.
`);

/** The addresses (and EHLO names) of the IpPools in examples/kubernetes. */
function examplePoolHosts(): { ip: string; ehlo: string }[] {
  const dir = path.join(repo, 'examples/kubernetes');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .flatMap((f) =>
      YAML.parseAllDocuments(readFileSync(path.join(dir, f), 'utf8')).map((d) => d.toJS() as unknown),
    )
    .flatMap((o) => {
      const doc = o as { kind?: string; spec?: { addresses?: { ip?: unknown; ehlo?: unknown }[] } } | null;
      return doc?.kind === 'IpPool' ? (doc.spec?.addresses ?? []) : [];
    })
    .filter((a): a is { ip: string; ehlo: string } => typeof a.ip === 'string' && typeof a.ehlo === 'string');
}
