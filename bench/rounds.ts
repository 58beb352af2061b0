/**
 * What the interleaved benchmarks (run.ts, tenants.ts, webhooks.ts) share: their command-line options, the scratch
 * directory, the rounds of measured runs with the results saved after each, medians and ratios per
 * scenario, and the table rows.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  describeRun,
  fmt,
  median,
  METRICS,
  REPO_ROOT,
  runOnce,
  type AfterRun,
  type MeasureOptions,
  type Metric,
  type RunResult,
  type Scenario,
} from './measure.js';
import { killAll, sleep } from './proc.js';
import type { RelaySystem } from './systems.js';

/** `v` as a whole number ≥ 1, for the option `--name`. */
export function positive(name: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${v}`);
  return n;
}

/** The parseArgs options every interleaved benchmark takes, with its own defaults. */
export function roundOptions(defaults: { rounds: string; dir: string }) {
  return {
    quick: { type: 'boolean', default: false },
    rounds: { type: 'string', default: defaults.rounds },
    scenarios: { type: 'string' },
    timeout: { type: 'string', default: '300' },
    stall: { type: 'string', default: '60' },
    dir: { type: 'string', default: path.join(REPO_ROOT, '.tmp', defaults.dir) },
    help: { type: 'boolean', short: 'h', default: false },
  } as const;
}

/** What the options of roundOptions parse to. */
export interface RoundOptions extends MeasureOptions {
  quick: boolean;
  rounds: number;
  scenarios: Scenario[];
}

/** Reads the options of roundOptions: `--scenarios` picks from `all`; `--quick` sends a tenth. */
export function readRoundOptions(
  values: { quick: boolean; rounds: string; scenarios?: string; timeout: string; stall: string; dir: string },
  all: Scenario[],
): RoundOptions {
  let scenarios = all;
  if (values.scenarios) {
    const ids = values.scenarios.split(',');
    const unknown = ids.filter((id) => !all.some((s) => s.id === id));
    if (unknown.length > 0) throw new Error(`unknown scenario(s): ${unknown.join(', ')}`);
    scenarios = all.filter((s) => ids.includes(s.id));
  }
  return {
    quick: values.quick,
    rounds: positive('rounds', values.rounds),
    scenarios: scenarios.map((s) => (values.quick ? { ...s, messages: s.messages / 10 } : s)),
    timeoutMs: positive('timeout', values.timeout) * 1000,
    stallMs: positive('stall', values.stall) * 1000,
    dir: path.resolve(values.dir),
  };
}

/** The scratch directory, with an empty logs/ in it. */
export function prepareDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  rmSync(path.join(dir, 'logs'), { recursive: true, force: true });
  mkdirSync(path.join(dir, 'logs'));
}

/** One scenario's runs summarised. */
export interface ScenarioReport extends Scenario {
  median: Record<string, Record<Metric, number | null>>;
  /** The ratio's numerator system's median ÷ its denominator system's median, per metric. */
  ratio: Record<Metric, number | null>;
  /** Some run of that system did not complete (timeout, stall, error); medians are over complete runs only. */
  incomplete: Record<string, boolean>;
  runs: RunResult[];
}

/** Medians per system of the complete runs, and the ratio `over` ÷ `under` of the medians. */
export function summarise(
  sc: Scenario,
  runs: RunResult[],
  systems: string[],
  [over, under]: [string, string],
): ScenarioReport {
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
      const u = med[under]?.[key];
      const o = med[over]?.[key];
      return [key, u && o !== null && o !== undefined ? o / u : null];
    }),
  ) as Record<Metric, number | null>;
  return { ...sc, median: med, ratio, incomplete, runs };
}

/** A table row of the given column widths: the first three left-aligned, the others right-aligned. */
export function tableRow(cols: number[]): (cells: string[]) => string {
  return (cells) =>
    cells
      .map((c, i) => (i < 3 ? c.padEnd(cols[i]) : c.padStart(cols[i])))
      .join('  ')
      .trimEnd();
}

/**
 * The body of an A/B comparison table (tenants.ts, webhooks.ts): per scenario one row per metric with
 * system `a`'s and `b`'s medians and the ratio b/a (`*`: some runs left out), the verdicts of the two
 * rates against `target`, and the notes on runs that did not complete.
 */
export function abRows(
  reports: ScenarioReport[],
  row: (cells: string[]) => string,
  a: string,
  b: string,
  target: number,
): { rows: string[]; verdicts: string[]; notes: string[] } {
  const rows: string[] = [];
  const verdicts: string[] = [];
  const notes: string[] = [];
  for (const rep of reports) {
    METRICS.forEach(({ key, label }, i) => {
      const digits = key === 'cpuMsPerMessage' ? 3 : key === 'peakRssMiB' ? 1 : 0;
      const cell = (s: string) => fmt(rep.median[s][key], digits) + (rep.incomplete[s] ? '*' : '');
      rows.push(
        row([
          i === 0 ? rep.id : '',
          i === 0 ? String(rep.messages) : '',
          label,
          cell(a),
          cell(b),
          fmt(rep.ratio[key], 2),
        ]),
      );
    });
    for (const key of ['deliveredRate', 'acceptRate'] as const) {
      const r = rep.ratio[key];
      verdicts.push(
        `  ${rep.id.padEnd(9)} ${METRICS.find((m) => m.key === key)!.label.padEnd(16)} (b)/(a) = ${fmt(r, 2)}: ` +
          (r === null ? 'no figure' : r >= target ? 'met' : 'NOT met'),
      );
    }
    notes.push(...runNotes(rep));
  }
  return { rows, verdicts, notes };
}

/** The notes on the runs that did not complete, one line each. */
export function runNotes(rep: ScenarioReport): string[] {
  return rep.runs
    .filter((r) => r.error)
    .map((r) => `  ${rep.id} round ${r.round} ${r.system}: ${r.error!.split('\n')[0]}`);
}

/** The output file's head: when, the command, the options and the load. */
export function outputHead(command: string, opts: RoundOptions, extra: Record<string, unknown>) {
  return {
    generatedAt: new Date().toISOString(),
    command: ['node', command, ...process.argv.slice(2)].join(' '),
    options: {
      quick: opts.quick,
      rounds: opts.rounds,
      ...extra,
      timeoutSeconds: opts.timeoutMs / 1000,
      stallSeconds: opts.stallMs / 1000,
    },
  };
}

/** Writes `output` to `file` as JSON. */
export function saveJson(file: string, output: unknown): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(output, null, 2) + '\n');
}

/**
 * The measured rounds: each scenario, `opts.rounds` times, one run per system in the order `order(round)`
 * gives, with `checks[system]` after each run. `save()` is called after every run and on SIGINT/SIGTERM
 * (after `teardown()` and setting `interrupted`), and the relays are stopped at the end.
 */
export async function runRounds(
  opts: RoundOptions,
  order: (round: number) => RelaySystem[],
  results: { scenario: Scenario; runs: RunResult[] }[],
  hooks: {
    save: () => void;
    teardown: () => void;
    interrupted: () => void;
    checks?: Record<string, AfterRun>;
    prepare?: () => Promise<void>;
  },
): Promise<void> {
  process.once('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      console.error(`\n${sig}: stopping relays and sinks`);
      hooks.teardown();
      hooks.interrupted();
      hooks.save();
      process.exit(130);
    });
  }
  await hooks.prepare?.();
  try {
    for (const sc of opts.scenarios) {
      const runs: RunResult[] = [];
      results.push({ scenario: sc, runs });
      for (let round = 1; round <= opts.rounds; round++) {
        for (const s of order(round)) {
          const r = await runOnce(s, sc, round, opts, hooks.checks?.[s.name]);
          runs.push(r);
          console.error(describeRun(sc, r));
          hooks.save();
          await sleep(1000); // let sockets and disk settle between runs
        }
      }
    }
  } finally {
    hooks.teardown();
  }
  hooks.save();
}

/** Runs a benchmark's main, reporting its error as the exit status. */
export function runMain(main: () => Promise<void>): void {
  main().catch((e: Error) => {
    console.error(`bench: ${e.message}`);
    killAll();
    process.exitCode = 1;
  });
}
