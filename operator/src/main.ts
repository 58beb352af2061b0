#!/usr/bin/env node
/**
 * cartero-operator: reconciles SmtpRelay and IpPool objects. Configuration comes from the environment
 * (the chart sets it): CARTERO_RELAY_IMAGE (image for SmtpRelays that name none), WATCH_NAMESPACE (comma-separated
 * namespaces; all when empty), POD_NAMESPACE and POD_NAME (Lease namespace and identity), METRICS_PORT
 * (8080: /metrics, /healthz, /readyz), LOG_LEVEL, DNS_CHECK_INTERVAL_MS (how often IpPool addresses and
 * DKIM records are checked in DNS through a relay pod; default 600000). The API client is configured like kubectl:
 * KUBECONFIG, ~/.kube/config, or the in-cluster service account.
 *
 * `--uninstall-check` (the Helm chart's pre-delete hook) only checks that no SmtpRelay is left where it
 * watches, and exits 0, or 1 with what to do (see uninstall-check.ts).
 *
 * Signals: SIGTERM and SIGINT stop the work queue, release the Lease and exit (within 10 s); the process
 * handles them itself, so it can run as PID 1 in a container (`ENTRYPOINT ["node", ...]`, no init).
 */
import http from 'node:http';
import os from 'node:os';
import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { Operator } from './controller.js';
import { startLeaderElection } from './runtime/leader.js';
import { uninstallCheck } from './uninstall-check.js';

const env = process.env;
/** WATCH_NAMESPACE: empty for all namespaces, or a comma-separated list. */
const watchNamespaces = (env.WATCH_NAMESPACE ?? '')
  .split(',')
  .map((n) => n.trim())
  .filter(Boolean);
/** DNS_CHECK_INTERVAL_MS: how often IpPool addresses and DKIM records are checked (10 s to 1 day). */
const dnsCheckIntervalMs = env.DNS_CHECK_INTERVAL_MS ? Number(env.DNS_CHECK_INTERVAL_MS) : undefined;
if (
  dnsCheckIntervalMs !== undefined &&
  !(Number.isInteger(dnsCheckIntervalMs) && dnsCheckIntervalMs >= 10_000 && dnsCheckIntervalMs <= 86_400_000)
) {
  process.stderr.write(
    'cartero-operator: DNS_CHECK_INTERVAL_MS must be milliseconds from 10000 to 86400000\n',
  );
  process.exit(2);
}
const log = pino({ level: env.LOG_LEVEL ?? 'info', base: { component: 'cartero-operator' } });
const registry = new Registry();
collectDefaultMetrics({ register: registry });

const kc = new KubeConfig();
kc.loadFromDefault();
if (!kc.getCurrentCluster()) {
  log.fatal('no Kubernetes API configured (KUBECONFIG, ~/.kube/config or in-cluster service account)');
  process.exit(2);
}

if (process.argv.includes('--uninstall-check')) {
  const result = await uninstallCheck(kc, watchNamespaces);
  process.stdout.write(`${result.message}\n`);
  process.exit(result.ok ? 0 : 1);
}

const operator = new Operator({
  kc,
  log,
  defaultImage: env.CARTERO_RELAY_IMAGE ?? 'ghcr.io/cartero/relay:0.1.0',
  ...(watchNamespaces.length ? { namespaces: watchNamespaces } : {}),
  metrics: registry,
  ...(env.STATUS_INTERVAL_MS ? { statusIntervalMs: Number(env.STATUS_INTERVAL_MS) } : {}),
  ...(dnsCheckIntervalMs ? { dnsCheckIntervalMs } : {}),
});

let leading = false;
let stopping = false;
const server = http.createServer((req, res) => {
  const url = (req.url ?? '/').split('?')[0];
  if (url === '/metrics') {
    registry
      .metrics()
      .then((body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body))
      .catch((e: Error) => res.writeHead(500).end(e.message));
    return;
  }
  if (url === '/healthz') return void res.writeHead(200).end('ok\n');
  // every replica is ready (the standby too); the leader is the one with the Lease
  if (url === '/readyz')
    return void res.writeHead(stopping ? 503 : 200).end(stopping ? 'stopping\n' : 'ok\n');
  if (url === '/leader') return void res.writeHead(200).end(`${leading}\n`);
  res.writeHead(404).end();
});
const port = Number(env.METRICS_PORT ?? 8080);
server.listen(port, env.METRICS_ADDRESS ?? '0.0.0.0', () => {
  const a = server.address();
  log.info({ port: typeof a === 'object' && a ? a.port : port }, 'metrics.listening');
});

const identity = env.POD_NAME ?? `${os.hostname()}-${process.pid}`;
const elector = startLeaderElection({
  kc,
  namespace: env.POD_NAMESPACE ?? 'default',
  name: 'cartero-operator',
  identity,
  log,
  onStartedLeading: () => {
    leading = true;
    log.info({ identity }, 'leader.elected');
    operator.start().catch((e: Error) => {
      log.fatal({ err: e.message }, 'operator.start.failed');
      process.exit(1);
    });
  },
  onStoppedLeading: () => {
    if (stopping) return;
    // like controller-runtime: a replica that lost the Lease exits and starts over as a candidate
    log.error('leader.lost');
    process.exit(1);
  },
});

async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'operator.stopping');
  const timer = setTimeout(() => process.exit(1), 10_000);
  timer.unref();
  await operator.stop().catch(() => undefined);
  await elector.release().catch(() => undefined);
  server.close();
  log.info('operator.stopped');
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
