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
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  environment,
  fmt,
  METRICS,
  RECIPIENT,
  REPO_ROOT,
  scenario,
  SENDER,
  SESSIONS,
  type RunResult,
  type Scenario,
} from './measure.js';
import { killAll } from './proc.js';
import {
  outputHead,
  prepareDir,
  readRoundOptions,
  roundOptions,
  runMain,
  runNotes,
  runRounds,
  saveJson,
  summarise,
  tableRow,
  type RoundOptions,
  type ScenarioReport,
} from './rounds.js';
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

interface Options extends RoundOptions {
  systems: ('postfix' | 'cartero')[];
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: { ...roundOptions({ rounds: '2', dir: 'bench' }), only: { type: 'string' } },
  });
  if (values.help) {
    console.log(
      'usage: node dist/bench/run.js [--quick] [--rounds N] [--only postfix|cartero] [--scenarios ' +
        `${SCENARIOS.map((s) => s.id).join(',')}] [--timeout SEC] [--stall SEC] [--dir PATH]`,
    );
    process.exit(0);
  }
  if (values.only !== undefined && values.only !== 'postfix' && values.only !== 'cartero') {
    throw new Error('--only must be postfix or cartero');
  }
  return {
    ...readRoundOptions(values, SCENARIOS),
    systems: values.only ? [values.only] : ['postfix', 'cartero'],
  };
}

/** The results table printed on stdout. */
function table(reports: ScenarioReport[], opts: Options, unavailable: Record<string, string>): string {
  const cols = [18, 8, 17, 11, 11, 16];
  const row = tableRow(cols);
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
    notes.push(...runNotes(rep));
  }
  lines.push('', 'scenarios:', ...reports.map((r) => `  ${r.id.padEnd(16)} ${r.title}`));
  for (const [name, why] of Object.entries(unavailable)) lines.push('', `${name} not measured: ${why}`);
  if (notes.length > 0)
    lines.push('', '* some runs did not complete and are left out of the medians:', ...notes);
  return lines.join('\n');
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  prepareDir(opts.dir);
  const all: RelaySystem[] = [new PostfixRelay(opts.dir), new CarteroRelay(REPO_ROOT, opts.dir)];
  const systems = all.filter((s) => (opts.systems as string[]).includes(s.name));
  const ready: RelaySystem[] = [];
  const results: { scenario: Scenario; runs: RunResult[] }[] = [];
  const output = {
    ...outputHead('dist/bench/run.js', opts, {}),
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
    output.scenarios = results.map(({ scenario, runs }) =>
      summarise(scenario, runs, names, ['cartero', 'postfix']),
    );
    saveJson(RESULTS_FILE, output);
  };
  const prepare = async () => {
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
  };
  await runRounds(opts, () => ready, results, {
    save,
    prepare,
    teardown: () => {
      for (const s of systems) s.stopSync();
      killAll();
    },
    interrupted: () => (output.interrupted = true),
  });
  console.log(table(output.scenarios, opts, output.unavailable));
  console.log(`\nJSON: ${path.relative(process.cwd(), RESULTS_FILE) || RESULTS_FILE}`);
  // Non-zero when a figure is missing: a system could not run, or a run did not complete.
  const incomplete = results.some(({ runs }) => runs.some((r) => r.error !== undefined));
  if (incomplete || Object.keys(output.unavailable).length > 0) process.exitCode = 1;
}

runMain(main);
