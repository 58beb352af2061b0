/**
 * Tenancy overhead: the same Cartero relay measured end to end (smtp-source → relay → smtp-sink) with
 * (a) the single-tenant config of the core benchmark and (b) that config plus 200 tenants, each with
 * rate limits, a quota, sender domains and an IP pool of its own. Runs are interleaved (a, b, b, a, ...);
 * medians and the ratio (b)/(a) go to stdout and to bench/results/tenants.json.
 *
 *   node dist/bench/tenants.js [--quick] [--rounds N] [--tenants N] [--scenarios 1k-new,1k-reuse]
 *                              [--timeout SEC] [--stall SEC] [--dir PATH]
 *
 * smtp-source connects from 127.0.0.1 and cannot authenticate, so in (b) all the load is carried by
 * one tenant, the one whose trustedNetworks hold 127.0.0.1 (listed last, so the network lookup passes
 * every other tenant first); the others are configured but idle. After each run the relay's /metrics
 * are read to check that the messages were counted for the expected tenant, left from its pool address
 * (cartero_egress_sent_total), and that nothing was refused (no 451 rate limit, no other refusal).
 * See "Tenancy overhead" in docs/benchmarks.md.
 */
import http from 'node:http';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  environment,
  RECIPIENT,
  REPO_ROOT,
  scenario,
  SENDER,
  SESSIONS,
  type AfterRun,
  type RunResult,
  type Scenario,
} from './measure.js';
import { killAll, sleep } from './proc.js';
import {
  abRows,
  outputHead,
  positive,
  prepareDir,
  readRoundOptions,
  roundOptions,
  runMain,
  runRounds,
  saveJson,
  summarise,
  tableRow,
  type RoundOptions,
  type ScenarioReport,
} from './rounds.js';
import { CarteroRelay, type RunningRelay } from './systems.js';

const RESULTS_FILE = path.join(REPO_ROOT, 'bench', 'results', 'tenants.json');
const SCENARIOS: Scenario[] = [
  scenario('1k-new', 20_000, 1024, false, false),
  scenario('1k-reuse', 20_000, 1024, true, false),
];
const BASE = 'cartero';
const TENANTS = 'cartero-tenants';
/** The target: tenancy costs at most 10 % of the single-tenant rates. */
const TARGET_RATIO = 0.9;
/** Egress addresses: 127.0.3.1, 127.0.3.2, ... (all of 127/8 is local on Linux, so they can be bound). */
const egressIp = (i: number) => `127.0.3.${i}`;
const pad = (i: number) => String(i).padStart(3, '0');

interface Options extends RoundOptions {
  tenants: number;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...roundOptions({ rounds: '3', dir: 'bench-tenants' }),
      tenants: { type: 'string', default: '200' },
    },
  });
  if (values.help) {
    console.log(
      'usage: node dist/bench/tenants.js [--quick] [--rounds N] [--tenants N] [--scenarios ' +
        `${SCENARIOS.map((s) => s.id).join(',')}] [--timeout SEC] [--stall SEC] [--dir PATH]`,
    );
    process.exit(0);
  }
  const tenants = positive('tenants', values.tenants);
  if (tenants > 250) throw new Error('--tenants must be at most 250 (egress addresses 127.0.3.1-250)');
  return { ...readRoundOptions(values, SCENARIOS), tenants };
}

/** The tenant that carries the load: the last one, whose trustedNetworks hold 127.0.0.1. */
const loadedTenant = (n: number) => `tenant-${pad(n)}`;

/**
 * The config sections (b) adds to the core benchmark's config: `n` tenants and `n` pools. Tenant i
 * sends from 198.18.i.0/24 (no traffic), except the last, which sends from 127.0.0.0/24 and may use the
 * benchmark's sender domain. Every limit is far above what a run sends, so none refuses.
 */
function tenancyConfig(n: number): Record<string, unknown> {
  const tenants = [];
  const ipPools = [];
  for (let i = 1; i <= n; i++) {
    const name = `tenant-${pad(i)}`;
    const loaded = i === n;
    tenants.push({
      name,
      trustedNetworks: [loaded ? '127.0.0.0/24' : `198.18.${i}.0/24`],
      senderDomains: [
        `${name}.bench.test`,
        `*.${name}.bench.test`,
        ...(loaded ? [SENDER.slice(SENDER.indexOf('@') + 1)] : []),
      ],
      rateLimits: ['100000/m', '1000000/h'],
      quota: { messages: 1_000_000, bytes: 4 * 2 ** 30 },
      ipPool: `pool-${pad(i)}`,
    });
    ipPools.push({
      name: `pool-${pad(i)}`,
      addresses: [
        {
          ip: egressIp(i),
          ehlo: `mta-${pad(i)}.bench.cartero.test`,
          perHour: 10_000_000,
          perDay: 100_000_000,
        },
      ],
    });
  }
  return { tenants, ipPools };
}

/** GET http://127.0.0.1:port/metrics. */
function fetchMetrics(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/metrics', timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () =>
        res.statusCode === 200 ? resolve(body) : reject(new Error(`/metrics: HTTP ${res.statusCode}`)),
      );
    });
    req.on('timeout', () => req.destroy(new Error('/metrics: timeout')));
    req.on('error', reject);
  });
}

/** The samples of one metric in Prometheus text format: labels and value. */
function samples(text: string, name: string): { labels: Record<string, string>; value: number }[] {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ labels, value: Number(m[3]) });
  }
  return out;
}

/** Sums a metric's samples by the given labels (joined with a space). */
function byLabels(text: string, name: string, keys: string[]): Record<string, number> {
  const sums: Record<string, number> = {};
  for (const s of samples(text, name)) {
    const k = keys.map((key) => s.labels[key] ?? '').join(' ');
    if (s.value !== 0) sums[k] = (sums[k] ?? 0) + s.value;
  }
  return sums;
}

/** What the relay's metrics say about one run. */
interface Checks {
  /** cartero_messages_received_total by tenant. */
  received: Record<string, number>;
  /** cartero_messages_delivered_total by tenant. */
  delivered: Record<string, number>;
  /** cartero_egress_sent_total by "pool ip". */
  egress: Record<string, number>;
  /** cartero_rate_limited_total (451 4.7.1), all tenants. */
  rateLimited: number;
  /** cartero_smtp_rejected_total by reason. */
  rejected: Record<string, number>;
  /** cartero_messages_deferred_total by tenant. */
  deferred: Record<string, number>;
}

function readChecks(text: string): Checks {
  const total = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0);
  return {
    received: byLabels(text, 'cartero_messages_received_total', ['tenant']),
    delivered: byLabels(text, 'cartero_messages_delivered_total', ['tenant']),
    egress: byLabels(text, 'cartero_egress_sent_total', ['pool', 'ip']),
    rateLimited: total(byLabels(text, 'cartero_rate_limited_total', [])),
    rejected: byLabels(text, 'cartero_smtp_rejected_total', ['reason']),
    deferred: byLabels(text, 'cartero_messages_deferred_total', ['tenant']),
  };
}

/**
 * The after-run check of one system: the messages were received and delivered for `tenant`, left from
 * `egress` (pool and ip; none for the single-tenant config), and nothing was refused or deferred. The
 * relay records a delivery just after the sink counted it, so the metrics are polled for up to 5 s.
 */
function checkRun(tenant: string, egress: { pool: string; ip: string } | undefined): AfterRun {
  return async (relay: RunningRelay, result: RunResult) => {
    if (!relay.adminPort) return 'no admin port to read the metrics from';
    const n = result.messages;
    let c: Checks | undefined;
    const deadline = Date.now() + 5000;
    try {
      for (;;) {
        c = readChecks(await fetchMetrics(relay.adminPort));
        if ((c.delivered[tenant] ?? 0) >= n || Date.now() > deadline) break;
        await sleep(100);
      }
    } catch (e) {
      return `could not read the relay's metrics: ${(e as Error).message}`;
    }
    result.checks = c as unknown as Record<string, unknown>;
    const problems: string[] = [];
    const only = (what: string, r: Record<string, number>, key: string | undefined) => {
      const want = key === undefined ? {} : { [key]: n };
      if (JSON.stringify(r) !== JSON.stringify(want))
        problems.push(`${what} ${JSON.stringify(r)}, expected ${JSON.stringify(want)}`);
    };
    only('received', c.received, tenant);
    only('delivered', c.delivered, tenant);
    only('egress', c.egress, egress && `${egress.pool} ${egress.ip}`);
    if (c.rateLimited !== 0) problems.push(`${c.rateLimited} recipients refused by a rate limit (451)`);
    only('refused', c.rejected, undefined);
    only('deferred', c.deferred, undefined);
    return problems.length ? `check failed: ${problems.join('; ')}` : undefined;
  };
}

function table(reports: ScenarioReport[], opts: Options): string {
  const cols = [10, 8, 17, 15, 15, 9];
  const row = tableRow(cols);
  const lines = [
    `Tenancy overhead: smtp-source -s ${SESSIONS} → Cartero → smtp-sink, median of ${opts.rounds} round(s)` +
      (opts.quick ? ' (--quick: message counts ÷ 10)' : ''),
    `(a) single tenant (core benchmark config); (b) + ${opts.tenants} tenants with rate limits, quota,` +
      ` sender domains and an IP pool each; the load is tenant ${loadedTenant(opts.tenants)}'s.`,
    '',
    row(['scenario', 'messages', 'metric', '(a) 1 tenant', `(b) ${opts.tenants} tenants`, '(b)/(a)']),
    row(cols.map((w) => '-'.repeat(w))),
  ];
  const { rows, verdicts, notes } = abRows(reports, row, BASE, TENANTS, TARGET_RATIO);
  lines.push(...rows);
  lines.push('', `target (b)/(a) ≥ ${TARGET_RATIO} for the rates:`, ...verdicts);
  lines.push('', 'checks (relay /metrics after every run):', ...checkSummary(reports, opts));
  lines.push('', 'scenarios:', ...reports.map((r) => `  ${r.id.padEnd(9)} ${r.title}`));
  if (notes.length > 0)
    lines.push('', '* some runs did not complete or failed a check, and are left out:', ...notes);
  return lines.join('\n');
}

/** One line per system: what the metrics of all its runs add up to. */
function checkSummary(reports: ScenarioReport[], opts: Options): string[] {
  const runs = reports.flatMap((r) => r.runs);
  return [BASE, TENANTS].map((s) => {
    const mine = runs.filter((r) => r.system === s);
    const checked = mine.filter((r) => r.checks).map((r) => r.checks as unknown as Checks);
    const sum = (f: (c: Checks) => Record<string, number>) => {
      const t: Record<string, number> = {};
      for (const c of checked) for (const [k, v] of Object.entries(f(c))) t[k] = (t[k] ?? 0) + v;
      return (
        Object.entries(t)
          .map(([k, v]) => `${k}: ${v}`)
          .join(', ') || 'none'
      );
    };
    const sent = mine.reduce((a, r) => a + r.sent, 0);
    const failed = mine.filter((r) => r.error).length;
    return (
      `  ${s.padEnd(15)} ${checked.length}/${mine.length} runs read, ${sent} messages sent; ` +
      `received by tenant {${sum((c) => c.received)}}; egress by pool/ip {${sum((c) => c.egress)}}; ` +
      `451 rate-limited ${checked.reduce((a, c) => a + c.rateLimited, 0)}; ` +
      `refused {${sum((c) => c.rejected)}}; deferred {${sum((c) => c.deferred)}}` +
      (failed ? `; ${failed} run(s) incomplete or failed` : '') +
      (s === TENANTS
        ? ` (expected: ${loadedTenant(opts.tenants)}, pool-${pad(opts.tenants)} ${egressIp(opts.tenants)})`
        : '')
    );
  });
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  prepareDir(opts.dir);
  const extra = tenancyConfig(opts.tenants);
  const base = new CarteroRelay(REPO_ROOT, opts.dir, { name: BASE, adminPort: true });
  const tenants = new CarteroRelay(REPO_ROOT, opts.dir, {
    name: TENANTS,
    adminPort: true,
    extraConfig: () => extra,
  });
  const n = opts.tenants;
  const checks: Record<string, AfterRun> = {
    [BASE]: checkRun('default', undefined),
    [TENANTS]: checkRun(loadedTenant(n), { pool: `pool-${pad(n)}`, ip: egressIp(n) }),
  };
  const results: { scenario: Scenario; runs: RunResult[] }[] = [];
  const output = {
    ...outputHead('dist/bench/tenants.js', opts, { tenants: opts.tenants }),
    environment: environment(),
    load: {
      source: `smtp-source -c -s ${SESSIONS} -m N -l SIZE -f ${SENDER} -t ${RECIPIENT} [-d] 127.0.0.1:PORT`,
      sink: 'smtp-sink -c -u postfix 127.0.0.1:PORT 1000',
      loadedTenant: loadedTenant(n),
      tenancyConfigBytes: JSON.stringify(extra).length,
    },
    interrupted: false,
    scenarios: [] as ScenarioReport[],
  };
  const save = () => {
    output.scenarios = results.map(({ scenario: sc, runs }) =>
      summarise(sc, runs, [BASE, TENANTS], [TENANTS, BASE]),
    );
    saveJson(RESULTS_FILE, output);
  };
  await runRounds(
    opts,
    // a, b in odd rounds, b, a in even ones: a slow drift of the machine favours neither.
    (round) => (round % 2 ? [base, tenants] : [tenants, base]),
    results,
    {
      save,
      checks,
      prepare: async () => {
        await base.prepare();
        await tenants.prepare();
      },
      teardown: () => {
        base.stopSync();
        tenants.stopSync();
        killAll();
      },
      interrupted: () => (output.interrupted = true),
    },
  );
  console.log(table(output.scenarios, opts));
  console.log(`\nJSON: ${path.relative(process.cwd(), RESULTS_FILE) || RESULTS_FILE}`);
  if (results.some(({ runs }) => runs.some((r) => r.error !== undefined))) process.exitCode = 1;
}

runMain(main);
