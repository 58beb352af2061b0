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
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { freePort, killAll, sleep, spawnTracked, stopChild, tailLines, treeCpuMs } from './proc.js';
import { CarteroRelay, PostfixRelay, Sink, type RelaySystem, type RunningRelay } from './systems.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const REFERENCE_DIR = '/work/shared/bench/postfix';
const RESULTS_FILE = path.join(REPO_ROOT, 'bench', 'results', 'latest.json');
const SESSIONS = 50;
const SENDER = 'bench@source.test';
const RECIPIENT = 'sink@sink.test';

/** One load pattern. */
interface Scenario {
  id: string;
  title: string;
  messages: number;
  /** smtp-source -l: payload bytes per message. */
  size: number;
  /** smtp-source -d: several messages per connection instead of a new connection per message. */
  reuse: boolean;
  /** The sink is not running: only acceptance is measured, messages stay queued. */
  acceptOnly: boolean;
}

/** A scenario; its title is derived from the parameters. */
function scenario(id: string, messages: number, size: number, reuse: boolean, acceptOnly: boolean): Scenario {
  const title = [`${size / 1024} KB`, reuse ? 'connections reused (-d)' : 'new connection per message'];
  if (acceptOnly) title.push('sink down (accept only)');
  return { id, title: title.join(', '), messages, size, reuse, acceptOnly };
}

const SCENARIOS: Scenario[] = [
  scenario('1k-new', 20_000, 1024, false, false),
  scenario('1k-reuse', 20_000, 1024, true, false),
  scenario('20k-new', 5_000, 20_480, false, false),
  scenario('20k-reuse', 5_000, 20_480, true, false),
  scenario('accept-1k-new', 20_000, 1024, false, true),
  scenario('accept-1k-reuse', 20_000, 1024, true, true),
];

/** The measurements of one run of one system on one scenario. */
interface RunResult {
  system: 'postfix' | 'cartero';
  round: number;
  /** Messages smtp-source was told to send. */
  messages: number;
  /** Messages smtp-source reports sent (its -c counter). */
  sent: number;
  /** smtp-source exit code, or the signal that ended it. */
  sourceExit: number | string | null;
  /** Messages the sink counted (null when accept-only). */
  delivered: number | null;
  /** Seconds from start until smtp-source exited (null if it had to be killed). */
  acceptSeconds: number | null;
  /** Seconds from start until the sink counted every message (null if it never did). */
  deliverSeconds: number | null;
  /** sent ÷ acceptSeconds (= messages ÷ acceptSeconds when complete). */
  acceptRate: number | null;
  /** messages ÷ deliverSeconds. */
  deliveredRate: number | null;
  /** CPU ms (user+system) of the relay's process tree per message handled, over the measured window. */
  cpuMsPerMessage: number | null;
  /** VmHWM of the relay process (Cartero only). */
  peakRssMiB: number | null;
  /** Why the run ended early: timeout, stalled, relay exited, or a start-up error. */
  error?: string;
}

type Metric = 'deliveredRate' | 'acceptRate' | 'cpuMsPerMessage' | 'peakRssMiB';
const METRICS: { key: Metric; label: string }[] = [
  { key: 'deliveredRate', label: 'delivered msg/s' },
  { key: 'acceptRate', label: 'accept msg/s' },
  { key: 'cpuMsPerMessage', label: 'CPU ms/msg' },
  { key: 'peakRssMiB', label: 'peak RSS MiB' },
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

/** The smtp-source arguments for a scenario against 127.0.0.1:port. */
function sourceArgs(sc: Pick<Scenario, 'messages' | 'size' | 'reuse'>, port: number): string[] {
  // prettier-ignore
  return [
    '-c',
    '-s', String(SESSIONS),
    '-m', String(sc.messages),
    '-l', String(sc.size),
    '-f', SENDER,
    '-t', RECIPIENT,
    ...(sc.reuse ? ['-d'] : []),
    `127.0.0.1:${port}`,
  ];
}

/** smtp-source sending one scenario's load, tracking its `-c` counter and its exit. */
class Source {
  /** Messages sent so far (the -c counter). */
  sent = 0;
  /** performance.now() of the last change of `sent`. */
  lastChange = performance.now();
  /** performance.now() at exit; undefined while running. */
  exitedAt?: number;
  /** Exit code, or the signal that ended it. */
  exit: number | string | null = null;
  readonly stderr: () => string;
  private readonly child: ChildProcess;

  constructor(sc: Scenario, port: number, onExit: () => void) {
    this.child = spawnTracked('smtp-source', sourceArgs(sc, port));
    this.stderr = tailLines(this.child.stderr, 5);
    let rest = '';
    this.child.stdout!.on('data', (d: Buffer) => {
      // -c prints a running counter, "N\r" per message.
      const parts = (rest + d.toString('latin1')).split(/[\r\n]/);
      rest = parts.pop()!;
      const last = parts.reverse().find((p) => /^\d+$/.test(p));
      if (last !== undefined && Number(last) !== this.sent) {
        this.sent = Number(last);
        this.lastChange = performance.now();
      }
    });
    this.child.once('exit', (code, signal) => {
      this.exitedAt = performance.now();
      this.exit = signal ?? code;
      onExit();
    });
  }

  kill(): Promise<void> {
    return stopChild(this.child, 'SIGKILL');
  }
}

/**
 * Waits until smtp-source has exited and (unless accept-only) the sink has counted every message.
 * Bounded: ends early, with the reason, on the overall timeout, when neither the source nor the
 * sink has made progress for the stall time, or when the relay exits.
 */
function waitForEnd(
  sc: Scenario,
  relay: RunningRelay,
  sink: Sink | undefined,
  start: (onExit: () => void) => Source,
  opts: Options,
): Promise<{ source: Source; deliveredAt?: number; failure?: string }> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let deliveredAt: number | undefined;
    const finish = (failure?: string) => {
      clearInterval(ticker);
      if (sink) sink.onCount = () => {};
      resolve({ source, deliveredAt, failure });
    };
    const check = () => {
      if (source.exitedAt !== undefined && (!sink || deliveredAt !== undefined)) finish();
    };
    if (sink) {
      sink.onCount = (n) => {
        if (n >= sc.messages && deliveredAt === undefined) {
          deliveredAt = performance.now();
          check();
        }
      };
    }
    const source = start(() => setImmediate(check));
    const ticker = setInterval(() => {
      const now = performance.now();
      const progress = Math.max(source.lastChange, source.exitedAt ?? 0, sink?.lastChange ?? 0);
      if (!relay.alive()) finish('relay exited');
      else if (now - t0 > opts.timeoutMs) finish(`timeout after ${opts.timeoutMs / 1000} s`);
      else if (now - progress > opts.stallMs) finish(`no progress for ${opts.stallMs / 1000} s`);
    }, 250);
  });
}

/**
 * One measured run: starts the sink (unless accept-only) and a fresh relay with an empty queue, sends
 * the scenario's load with smtp-source and waits for the end (see waitForEnd). CPU is the relay
 * tree's delta from just before smtp-source starts to the end of that wait.
 */
async function runOnce(system: RelaySystem, sc: Scenario, round: number, opts: Options): Promise<RunResult> {
  const result: RunResult = {
    system: system.name,
    round,
    messages: sc.messages,
    sent: 0,
    sourceExit: null,
    delivered: sc.acceptOnly ? null : 0,
    acceptSeconds: null,
    deliverSeconds: null,
    acceptRate: null,
    deliveredRate: null,
    cpuMsPerMessage: null,
    peakRssMiB: null,
  };
  const sinkPort = system.fixedSinkPort ?? (await freePort());
  let sink: Sink | undefined;
  let relay: RunningRelay | undefined;
  try {
    // Accept-only: nothing listens on the sink port, so every delivery attempt is refused.
    if (!sc.acceptOnly) sink = await Sink.start(sinkPort);
    relay = await system.start(
      sinkPort,
      path.join(opts.dir, 'logs', `${sc.id}-r${round}-${system.name}.log`),
    );
    const port = relay.port;
    const cpuBefore = treeCpuMs(relay.pid);
    const t0 = performance.now();
    const end = await waitForEnd(sc, relay, sink, (onExit) => new Source(sc, port, onExit), opts);
    // A relay that exited has no /proc entry left to read: no CPU figure then.
    const cpuAfter = treeCpuMs(relay.pid);
    const cpuMs = relay.alive() && cpuAfter >= cpuBefore ? cpuAfter - cpuBefore : null;
    const { source } = end;
    // Read before kill(), which would set it: a source that had to be killed has no accept time.
    const exitedAt = source.exitedAt;
    if (exitedAt === undefined) await source.kill();

    result.sent = source.sent;
    if (exitedAt !== undefined) {
      result.sourceExit = source.exit;
      result.acceptSeconds = (exitedAt - t0) / 1000;
      result.acceptRate = source.sent / result.acceptSeconds;
    }
    if (sink) {
      result.delivered = sink.count;
      if (end.deliveredAt !== undefined) {
        result.deliverSeconds = (end.deliveredAt - t0) / 1000;
        result.deliveredRate = sc.messages / result.deliverSeconds;
      }
    }
    const handled = sink ? sink.count : source.sent;
    if (cpuMs !== null && handled > 0) result.cpuMsPerMessage = cpuMs / handled;
    result.peakRssMiB = relay.peakRssMiB() ?? null;
    const problems = [end.failure];
    if (exitedAt === undefined) problems.push(`smtp-source killed after ${source.sent} messages`);
    else if (source.exit !== 0) problems.push(`smtp-source exited with ${source.exit}: ${source.stderr()}`);
    else if (source.sent !== sc.messages) problems.push(`smtp-source sent only ${source.sent}`);
    if (problems.some(Boolean)) result.error = problems.filter(Boolean).join('; ');
  } catch (e) {
    result.error = (e as Error).message;
  } finally {
    await relay?.stop();
    await sink?.stop();
  }
  return result;
}

/** Median of the non-null values; null if there are none. */
function median(values: (number | null)[]): number | null {
  const v = values.filter((x): x is number => x !== null).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
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

function fmt(v: number | null | undefined, digits: number): string {
  return v === null || v === undefined ? '—' : v.toFixed(digits);
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

function describeRun(sc: Scenario, r: RunResult): string {
  const parts = [`[${sc.id}] round ${r.round} ${r.system.padEnd(7)}`];
  parts.push(`sent ${r.sent}/${r.messages}`);
  if (r.acceptSeconds !== null)
    parts.push(`accept ${r.acceptSeconds.toFixed(2)} s (${fmt(r.acceptRate, 0)}/s)`);
  if (r.delivered !== null) {
    parts.push(
      r.deliverSeconds !== null
        ? `delivered ${r.deliverSeconds.toFixed(2)} s (${fmt(r.deliveredRate, 0)}/s)`
        : `delivered ${r.delivered}`,
    );
  }
  parts.push(`CPU ${fmt(r.cpuMsPerMessage, 3)} ms/msg`);
  if (r.peakRssMiB !== null) parts.push(`RSS ${r.peakRssMiB.toFixed(1)} MiB`);
  if (r.error) parts.push(`ERROR: ${r.error.split('\n')[0]}`);
  return parts.join(', ');
}

/** Versions and load of the machine, recorded with the results. */
function environment(): Record<string, unknown> {
  const run = (cmd: string, args: string[]) => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      return null;
    }
  };
  return {
    hostname: os.hostname(),
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? null,
    memoryMiB: Math.round(os.totalmem() / 2 ** 20),
    loadavgAtStart: os.loadavg(),
    node: process.version,
    postfix: run('postconf', ['-dh', 'mail_version']),
    commit: run('git', ['-C', REPO_ROOT, 'rev-parse', '--short', 'HEAD']),
  };
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  mkdirSync(opts.dir, { recursive: true, mode: 0o755 });
  rmSync(path.join(opts.dir, 'logs'), { recursive: true, force: true });
  mkdirSync(path.join(opts.dir, 'logs'));
  const all: RelaySystem[] = [
    new PostfixRelay(REFERENCE_DIR, opts.dir),
    new CarteroRelay(REPO_ROOT, opts.dir),
  ];
  const systems = all.filter((s) => opts.systems.includes(s.name));
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
