/**
 * Relay benchmark: Postfix (the reference peer) and Cartero, measured in the same run, end to end:
 * smtp-source → relay → smtp-sink. Runs are interleaved (postfix, cartero, postfix, cartero, ...);
 * medians and the cartero/postfix ratio go to stdout as a table and to bench/results/latest.json.
 *
 *   node dist/bench/run.js [--quick] [--rounds N] [--only postfix|cartero] [--scenarios a,b]
 *                          [--timeout SEC] [--stall SEC] [--dir PATH]
 *
 * See docs/benchmarks.md for what each figure means.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
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
  type Metric,
  type RunResult,
  type Scenario,
} from './measure.js';
import { killAll, sleep } from './proc.js';
import { CarteroRelay, PostfixRelay, type RelaySystem } from './systems.js';

const RESULTS_FILE = path.join(REPO_ROOT, 'bench', 'results', 'latest.json');

const SCENARIOS: Scenario[] = [
  scenario('1k-new', 20_000, 1024, false, false),
  scenario('1k-reuse', 20_000, 1024, true, false),
  scenario('20k-new', 5_000, 20_480, false, false),
  scenario('20k-reuse', 5_000, 20_480, true, false),
  scenario('accept-1k-new', 20_000, 1024, false, true),
  scenario('accept-1k-reuse', 20_000, 1024, true, true),
];

interface Options {
  quick: boolean;
  rounds: number;
  systems: ('postfix' | 'cartero')[];
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
      rounds: { type: 'string', default: '2' },
      only: { type: 'string' },
      scenarios: { type: 'string' },
      timeout: { type: 'string', default: '300' },
      stall: { type: 'string', default: '60' },
      dir: { type: 'string', default: path.join(REPO_ROOT, '.tmp', 'bench') },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(
      'usage: node dist/bench/run.js [--quick] [--rounds N] [--only postfix|cartero] [--scenarios ' +
        `${SCENARIOS.map((s) => s.id).join(',')}] [--timeout SEC] [--stall SEC] [--dir PATH]`,
    );
    process.exit(0);
  }
  const positive = (name: string, v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer`);
    return n;
  };
  if (values.only !== undefined && values.only !== 'postfix' && values.only !== 'cartero') {
    throw new Error('--only must be postfix or cartero');
  }
  let scenarios = SCENARIOS;
  if (values.scenarios) {
    const ids = values.scenarios.split(',');
    const unknown = ids.filter((id) => !SCENARIOS.some((s) => s.id === id));
    if (unknown.length > 0) throw new Error(`unknown scenario(s): ${unknown.join(', ')}`);
    scenarios = SCENARIOS.filter((s) => ids.includes(s.id));
  }
  const quick = values.quick;
  return {
    quick,
    rounds: positive('rounds', values.rounds),
    systems: values.only ? [values.only] : ['postfix', 'cartero'],
    scenarios: scenarios.map((s) => (quick ? { ...s, messages: s.messages / 10 } : s)),
    timeoutMs: positive('timeout', values.timeout) * 1000,
    stallMs: positive('stall', values.stall) * 1000,
    dir: path.resolve(values.dir),
  };
}

interface ScenarioReport extends Scenario {
  median: Record<string, Record<Metric, number | null>>;
  /** cartero median ÷ postfix median, per metric. */
  ratio: Record<Metric, number | null>;
  /** Some run of that system did not complete (timeout, stall, error); medians are over complete runs only. */
  incomplete: Record<string, boolean>;
  runs: RunResult[];
}

function summarise(sc: Scenario, runs: RunResult[], systems: string[]): ScenarioReport {
  const med: ScenarioReport['median'] = {};
  const incomplete: Record<string, boolean> = {};
  for (const s of systems) {
    const mine = runs.filter((r) => r.system === s);
    const complete = mine.filter((r) => r.error === undefined);
    med[s] = Object.fromEntries(
      METRICS.map(({ key }) => [key, median(complete.map((r) => r[key]))]),
    ) as Record<Metric, number | null>;
    incomplete[s] = complete.length < mine.length;
  }
  const ratio = Object.fromEntries(
    METRICS.map(({ key }) => {
      const p = med.postfix?.[key];
      const c = med.cartero?.[key];
      return [key, p && c !== null && c !== undefined ? c / p : null];
    }),
  ) as Record<Metric, number | null>;
  return { ...sc, median: med, ratio, incomplete, runs };
}

/** The results table printed on stdout. */
function table(reports: ScenarioReport[], opts: Options, unavailable: Record<string, string>): string {
  const cols = [18, 8, 17, 11, 11, 16];
  const row = (cells: string[]) =>
    cells
      .map((c, i) => (i < 3 ? c.padEnd(cols[i]) : c.padStart(cols[i])))
      .join('  ')
      .trimEnd();
  const lines = [
    `Relay benchmark: smtp-source -s ${SESSIONS} → relay → smtp-sink, median of ${opts.rounds} round(s)` +
      (opts.quick ? ' (--quick: message counts ÷ 10)' : ''),
    '',
    row(['scenario', 'messages', 'metric', 'postfix', 'cartero', 'cartero/postfix']),
    row(cols.map((w) => '-'.repeat(w))),
  ];
  const notes: string[] = [];
  for (const rep of reports) {
    METRICS.forEach(({ key, label }, i) => {
      if (rep.acceptOnly && key === 'deliveredRate') return;
      const digits = key === 'cpuMsPerMessage' ? 3 : key === 'peakRssMiB' ? 1 : 0;
      const cell = (s: string) =>
        rep.median[s] ? fmt(rep.median[s][key], digits) + (rep.incomplete[s] ? '*' : '') : 'n/a';
      const first = i === 0 || (rep.acceptOnly && i === 1);
      lines.push(
        row([
          first ? rep.id : '',
          first ? String(rep.messages) : '',
          label,
          cell('postfix'),
          cell('cartero'),
          fmt(rep.ratio[key], 2),
        ]),
      );
    });
    for (const r of rep.runs) {
      if (r.error) notes.push(`  ${rep.id} round ${r.round} ${r.system}: ${r.error.split('\n')[0]}`);
    }
  }
  lines.push('', 'scenarios:', ...reports.map((r) => `  ${r.id.padEnd(16)} ${r.title}`));
  for (const [name, why] of Object.entries(unavailable)) lines.push('', `${name} not measured: ${why}`);
  if (notes.length > 0)
    lines.push('', '* some runs did not complete and are left out of the medians:', ...notes);
  return lines.join('\n');
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  mkdirSync(opts.dir, { recursive: true, mode: 0o755 });
  rmSync(path.join(opts.dir, 'logs'), { recursive: true, force: true });
  mkdirSync(path.join(opts.dir, 'logs'));
  const all: RelaySystem[] = [new PostfixRelay(opts.dir), new CarteroRelay(REPO_ROOT, opts.dir)];
  const systems = all.filter((s) => (opts.systems as string[]).includes(s.name));
  const ready: RelaySystem[] = [];
  const results: { scenario: Scenario; runs: RunResult[] }[] = [];
  const output = {
    generatedAt: new Date().toISOString(),
    command: ['node', 'dist/bench/run.js', ...process.argv.slice(2)].join(' '),
    options: {
      quick: opts.quick,
      rounds: opts.rounds,
      timeoutSeconds: opts.timeoutMs / 1000,
      stallSeconds: opts.stallMs / 1000,
    },
    environment: environment(),
    load: {
      source: `smtp-source -c -s ${SESSIONS} -m N -l SIZE -f ${SENDER} -t ${RECIPIENT} [-d] 127.0.0.1:PORT`,
      sink: 'smtp-sink -c -u postfix 127.0.0.1:PORT 1000',
    },
    unavailable: {} as Record<string, string>,
    interrupted: false,
    scenarios: [] as ScenarioReport[],
  };
  const save = () => {
    const names = ready.map((s) => s.name);
    output.scenarios = results.map(({ scenario, runs }) => summarise(scenario, runs, names));
    mkdirSync(path.dirname(RESULTS_FILE), { recursive: true });
    writeFileSync(RESULTS_FILE, JSON.stringify(output, null, 2) + '\n');
  };
  const teardown = () => {
    for (const s of systems) s.stopSync();
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

  for (const s of systems) {
    try {
      await s.prepare();
      ready.push(s);
    } catch (e) {
      output.unavailable[s.name] = (e as Error).message;
      console.error(`${s.name}: not available: ${(e as Error).message}`);
    }
  }
  if (ready.length === 0) throw new Error('no system to measure');

  try {
    for (const sc of opts.scenarios) {
      const runs: RunResult[] = [];
      results.push({ scenario: sc, runs });
      for (let round = 1; round <= opts.rounds; round++) {
        for (const s of ready) {
          const r = await runOnce(s, sc, round, opts);
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
  console.log(table(output.scenarios, opts, output.unavailable));
  console.log(`\nJSON: ${path.relative(process.cwd(), RESULTS_FILE) || RESULTS_FILE}`);
  // Non-zero when a figure is missing: a system could not run, or a run did not complete.
  const incomplete = results.some(({ runs }) => runs.some((r) => r.error !== undefined));
  if (incomplete || Object.keys(output.unavailable).length > 0) process.exitCode = 1;
}

main().catch((e: Error) => {
  console.error(`bench: ${e.message}`);
  killAll();
  process.exitCode = 1;
});
