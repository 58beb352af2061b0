/**
 * The measurement core shared by the benchmarks (run.ts: Cartero vs Postfix; tenants.ts: Cartero with
 * and without tenancy): load patterns, one measured run of one relay (smtp-source → relay → smtp-sink,
 * rates, CPU per message, peak RSS), medians, and the machine description recorded with the results.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, spawnTracked, stopChild, tailLines, treeCpuMs } from './proc.js';
import { Sink, type RelaySystem, type RunningRelay } from './systems.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SESSIONS = 50;
export const SENDER = 'bench@source.test';
export const RECIPIENT = 'sink@sink.test';

/** One load pattern. */
export interface Scenario {
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
export function scenario(
  id: string,
  messages: number,
  size: number,
  reuse: boolean,
  acceptOnly: boolean,
): Scenario {
  const title = [`${size / 1024} KB`, reuse ? 'connections reused (-d)' : 'new connection per message'];
  if (acceptOnly) title.push('sink down (accept only)');
  return { id, title: title.join(', '), messages, size, reuse, acceptOnly };
}

/** The measurements of one run of one system on one scenario. */
export interface RunResult {
  /** The system's name (postfix, cartero, or a variant of the Cartero config such as cartero-tenants). */
  system: string;
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
  /** What the `afterRun` hook of runOnce read from the running relay (e.g. its metrics). */
  checks?: Record<string, unknown>;
  /** Why the run ended early (timeout, stalled, relay exited, a start-up error) or a failed check. */
  error?: string;
}

/** What a measured run needs besides the system and the scenario. */
export interface MeasureOptions {
  /** Longest a run may take, ms. */
  timeoutMs: number;
  /** A run ends when neither smtp-source nor the sink progressed for this long, ms. */
  stallMs: number;
  /** Scratch directory; per-run logs go to <dir>/logs. */
  dir: string;
}

/**
 * Called at the end of a run, after the measured window and before the relay is stopped: reads what it
 * needs from the running relay into `result.checks`, and returns the reason the run is not valid, if so.
 */
export type AfterRun = (relay: RunningRelay, result: RunResult) => Promise<string | undefined>;

export type Metric = 'deliveredRate' | 'acceptRate' | 'cpuMsPerMessage' | 'peakRssMiB';
export const METRICS: { key: Metric; label: string }[] = [
  { key: 'deliveredRate', label: 'delivered msg/s' },
  { key: 'acceptRate', label: 'accept msg/s' },
  { key: 'cpuMsPerMessage', label: 'CPU ms/msg' },
  { key: 'peakRssMiB', label: 'peak RSS MiB' },
];

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
  opts: MeasureOptions,
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
 * tree's delta from just before smtp-source starts to the end of that wait; `afterRun`, if given,
 * runs after that window, before the relay is stopped.
 */
export async function runOnce(
  system: RelaySystem,
  sc: Scenario,
  round: number,
  opts: MeasureOptions,
  afterRun?: AfterRun,
): Promise<RunResult> {
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
    if (afterRun && relay.alive()) problems.push(await afterRun(relay, result));
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
export function median(values: (number | null)[]): number | null {
  const v = values.filter((x): x is number => x !== null).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

export function fmt(v: number | null | undefined, digits: number): string {
  return v === null || v === undefined ? '—' : v.toFixed(digits);
}

export function describeRun(sc: Scenario, r: RunResult): string {
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
export function environment(): Record<string, unknown> {
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
