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
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  describeRun,
  environment,
  fmt,
  median,
  METRICS,
  RECIPIENT,
  REPO_ROOT,
  runOnce,
  scenario,
  SENDER,
  SESSIONS,
  type AfterRun,
  type Metric,
  type RunResult,
  type Scenario,
} from './measure.js';
import { killAll, sleep } from './proc.js';
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

interface Options {
  quick: boolean;
  rounds: number;
  tenants: number;
  scenarios: Scenario[];
  timeoutMs: number;
  stallMs: number;
  dir: string;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      rounds: { type: 'string', default: '3' },
      tenants: { type: 'string', default: '200' },
      scenarios: { type: 'string' },
      timeout: { type: 'string', default: '300' },
      stall: { type: 'string', default: '60' },
      dir: { type: 'string', default: path.join(REPO_ROOT, '.tmp', 'bench-tenants') },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(
      'usage: node dist/bench/tenants.js [--quick] [--rounds N] [--tenants N] [--scenarios ' +
        `${SCENARIOS.map((s) => s.id).join(',')}] [--timeout SEC] [--stall SEC] [--dir PATH]`,
    );
    process.exit(0);
  }
  const positive = (name: string, v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer`);
    return n;
  };
  const tenants = positive('tenants', values.tenants);
  if (tenants > 250) throw new Error('--tenants must be at most 250 (egress addresses 127.0.3.1-250)');
  let scenarios = SCENARIOS;
  if (values.scenarios) {
    const ids = values.scenarios.split(',');
    const unknown = ids.filter((id) => !SCENARIOS.some((s) => s.id === id));
    if (unknown.length > 0) throw new Error(`unknown scenario(s): ${unknown.join(', ')}`);
    scenarios = SCENARIOS.filter((s) => ids.includes(s.id));
  }
  return {
    quick: values.quick,
    rounds: positive('rounds', values.rounds),
    tenants,
    scenarios: scenarios.map((s) => (values.quick ? { ...s, messages: s.messages / 10 } : s)),
    timeoutMs: positive('timeout', values.timeout) * 1000,
    stallMs: positive('stall', values.stall) * 1000,
    dir: path.resolve(values.dir),
  };
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

interface Report extends Scenario {
  median: Record<string, Record<Metric, number | null>>;
  /** (b) median ÷ (a) median, per metric. */
  ratio: Record<Metric, number | null>;
  incomplete: Record<string, boolean>;
  runs: RunResult[];
}

function summarise(sc: Scenario, runs: RunResult[]): Report {
  const med: Report['median'] = {};
  const incomplete: Record<string, boolean> = {};
  for (const s of [BASE, TENANTS]) {
    const mine = runs.filter((r) => r.system === s);
    const complete = mine.filter((r) => r.error === undefined);
    med[s] = Object.fromEntries(
      METRICS.map(({ key }) => [key, median(complete.map((r) => r[key]))]),
    ) as Record<Metric, number | null>;
    incomplete[s] = complete.length < mine.length;
  }
  const ratio = Object.fromEntries(
    METRICS.map(({ key }) => {
      const a = med[BASE][key];
      const b = med[TENANTS][key];
      return [key, a && b !== null ? b / a : null];
    }),
  ) as Record<Metric, number | null>;
  return { ...sc, median: med, ratio, incomplete, runs };
}

function table(reports: Report[], opts: Options): string {
  const cols = [10, 8, 17, 15, 15, 9];
  const row = (cells: string[]) =>
    cells
      .map((c, i) => (i < 3 ? c.padEnd(cols[i]) : c.padStart(cols[i])))
      .join('  ')
      .trimEnd();
  const lines = [
    `Tenancy overhead: smtp-source -s ${SESSIONS} → Cartero → smtp-sink, median of ${opts.rounds} round(s)` +
      (opts.quick ? ' (--quick: message counts ÷ 10)' : ''),
    `(a) single tenant (core benchmark config); (b) + ${opts.tenants} tenants with rate limits, quota,` +
      ` sender domains and an IP pool each; the load is tenant ${loadedTenant(opts.tenants)}'s.`,
    '',
    row(['scenario', 'messages', 'metric', '(a) 1 tenant', `(b) ${opts.tenants} tenants`, '(b)/(a)']),
    row(cols.map((w) => '-'.repeat(w))),
  ];
  const notes: string[] = [];
  const verdicts: string[] = [];
  for (const rep of reports) {
    METRICS.forEach(({ key, label }, i) => {
      const digits = key === 'cpuMsPerMessage' ? 3 : key === 'peakRssMiB' ? 1 : 0;
      const cell = (s: string) => fmt(rep.median[s][key], digits) + (rep.incomplete[s] ? '*' : '');
      lines.push(
        row([
          i === 0 ? rep.id : '',
          i === 0 ? String(rep.messages) : '',
          label,
          cell(BASE),
          cell(TENANTS),
          fmt(rep.ratio[key], 2),
        ]),
      );
    });
    for (const key of ['deliveredRate', 'acceptRate'] as const) {
      const r = rep.ratio[key];
      verdicts.push(
        `  ${rep.id.padEnd(9)} ${METRICS.find((m) => m.key === key)!.label.padEnd(16)} (b)/(a) = ${fmt(r, 2)}: ` +
          (r === null ? 'no figure' : r >= TARGET_RATIO ? 'met' : 'NOT met'),
      );
    }
    for (const r of rep.runs) {
      if (r.error) notes.push(`  ${rep.id} round ${r.round} ${r.system}: ${r.error.split('\n')[0]}`);
    }
  }
  lines.push('', `target (b)/(a) ≥ ${TARGET_RATIO} for the rates:`, ...verdicts);
  lines.push('', 'checks (relay /metrics after every run):', ...checkSummary(reports, opts));
  lines.push('', 'scenarios:', ...reports.map((r) => `  ${r.id.padEnd(9)} ${r.title}`));
  if (notes.length > 0)
    lines.push('', '* some runs did not complete or failed a check, and are left out:', ...notes);
  return lines.join('\n');
}

/** One line per system: what the metrics of all its runs add up to. */
function checkSummary(reports: Report[], opts: Options): string[] {
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
  mkdirSync(opts.dir, { recursive: true, mode: 0o755 });
  rmSync(path.join(opts.dir, 'logs'), { recursive: true, force: true });
  mkdirSync(path.join(opts.dir, 'logs'));
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
    generatedAt: new Date().toISOString(),
    command: ['node', 'dist/bench/tenants.js', ...process.argv.slice(2)].join(' '),
    options: {
      quick: opts.quick,
      rounds: opts.rounds,
      tenants: opts.tenants,
      timeoutSeconds: opts.timeoutMs / 1000,
      stallSeconds: opts.stallMs / 1000,
    },
    environment: environment(),
    load: {
      source: `smtp-source -c -s ${SESSIONS} -m N -l SIZE -f ${SENDER} -t ${RECIPIENT} [-d] 127.0.0.1:PORT`,
      sink: 'smtp-sink -c -u postfix 127.0.0.1:PORT 1000',
      loadedTenant: loadedTenant(n),
      tenancyConfigBytes: JSON.stringify(extra).length,
    },
    interrupted: false,
    scenarios: [] as Report[],
  };
  const save = () => {
    output.scenarios = results.map(({ scenario: sc, runs }) => summarise(sc, runs));
    mkdirSync(path.dirname(RESULTS_FILE), { recursive: true });
    writeFileSync(RESULTS_FILE, JSON.stringify(output, null, 2) + '\n');
  };
  const teardown = () => {
    base.stopSync();
    tenants.stopSync();
    killAll();
  };
  process.once('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      console.error(`\n${sig}: stopping relays and sinks`);
      teardown();
      output.interrupted = true;
      save();
      process.exit(130);
    });
  }
  await base.prepare();
  await tenants.prepare();
  try {
    for (const sc of opts.scenarios) {
      const runs: RunResult[] = [];
      results.push({ scenario: sc, runs });
      for (let round = 1; round <= opts.rounds; round++) {
        // a, b in odd rounds, b, a in even ones: a slow drift of the machine favours neither.
        const order = round % 2 ? [base, tenants] : [tenants, base];
        for (const s of order) {
          const r = await runOnce(s, sc, round, opts, checks[s.name]);
          runs.push(r);
          console.error(describeRun(sc, r));
          save();
          await sleep(1000); // let sockets and disk settle between runs
        }
      }
    }
  } finally {
    teardown();
  }
  save();
  console.log(table(output.scenarios, opts));
  console.log(`\nJSON: ${path.relative(process.cwd(), RESULTS_FILE) || RESULTS_FILE}`);
  if (results.some(({ runs }) => runs.some((r) => r.error !== undefined))) process.exitCode = 1;
}

main().catch((e: Error) => {
  console.error(`bench: ${e.message}`);
  killAll();
  process.exitCode = 1;
});
