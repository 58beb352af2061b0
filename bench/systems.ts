/**
 * The systems the benchmark drives: the smtp-sink that counts deliveries, the reference Postfix relay
 * (bench/postfix/ in this repository, unchanged apart from @BASE@) and the Cartero relay.
 */
import { execFileSync, spawnSync, type ChildProcess } from 'node:child_process';
import {
  chownSync,
  createWriteStream,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  assertPortFree,
  freePort,
  isRunning,
  peakRssMiB,
  probeSmtp,
  processTree,
  sleep,
  spawnTracked,
  stopChild,
  tailLines,
  waitForSmtp,
} from './proc.js';

const STARTUP_TIMEOUT_MS = 30_000;

/**
 * The reference Postfix configuration, carried in the repository (bench/postfix/: main.cf.in, a template
 * with @BASE@ for the scratch directory, and master.cf), so that a clone can run the benchmark.
 * Resolved from this module: dist/bench/systems.js and bench/systems.ts both sit two levels below the root.
 */
export const POSTFIX_REFERENCE_DIR = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  'bench',
  'postfix',
);

/** `smtp-sink -c` on 127.0.0.1:port, counting completed DATA transactions from its `-c` output. */
export class Sink {
  /** Messages received so far. */
  count = 0;
  /** performance.now() of the last change of `count`. */
  lastChange = performance.now();
  /** Called whenever `count` changes. */
  onCount: (count: number) => void = () => {};

  private constructor(private readonly child: ChildProcess) {
    let rest = '';
    child.stdout!.on('data', (d: Buffer) => {
      // The counter is rewritten in place: "sess=N quit=N mesg=N\r" per event.
      const segments = (rest + d.toString('latin1')).split(/[\r\n]/);
      rest = segments.pop()!;
      for (let i = segments.length - 1; i >= 0; i--) {
        const m = /mesg=(\d+)/.exec(segments[i]);
        if (!m) continue;
        const n = Number(m[1]);
        if (n !== this.count) {
          this.count = n;
          this.lastChange = performance.now();
          this.onCount(n);
        }
        break;
      }
    });
  }

  /** Starts a sink and waits until it answers. */
  static async start(port: number): Promise<Sink> {
    const child = spawnTracked('smtp-sink', ['-c', '-u', 'postfix', `127.0.0.1:${port}`, '1000']);
    const stderr = tailLines(child.stderr);
    const sink = new Sink(child);
    try {
      await waitForSmtp(port, STARTUP_TIMEOUT_MS, () => isRunning(child));
    } catch (e) {
      await stopChild(child, 'SIGKILL');
      throw new Error(`smtp-sink on port ${port}: ${(e as Error).message}\n${stderr()}`, { cause: e });
    }
    sink.count = 0;
    return sink;
  }

  stop(): Promise<void> {
    return stopChild(this.child, 'SIGTERM', 5000);
  }
}

/** A started relay: where to send, and which process tree to measure. */
export interface RunningRelay {
  /** Port on 127.0.0.1 that smtp-source sends to. */
  readonly port: number;
  /** Root of the relay's process tree (CPU is summed over it). */
  readonly pid: number;
  alive(): boolean;
  /** Peak RSS in MiB, where the figure is meaningful (one process). */
  peakRssMiB(): number | undefined;
  /** Port of the relay's admin HTTP server on 127.0.0.1 (/metrics), when the benchmark fixed one. */
  readonly adminPort?: number;
  /** Stops the relay and empties its queue. */
  stop(): Promise<void>;
}

/** A relay the benchmark can start afresh, with an empty queue, for every run. */
export interface RelaySystem {
  /** postfix, cartero, or a named variant of the Cartero config. */
  readonly name: string;
  /** The sink port this system must relay to, if fixed by its configuration. */
  readonly fixedSinkPort?: number;
  /** One-time preparation (files, port checks); throws if the system cannot run at all. */
  prepare(): Promise<void>;
  /** Starts the relay with an empty queue; its log of this run is kept in `logFile`. */
  start(sinkPort: number, logFile: string): Promise<RunningRelay>;
  /** Best-effort synchronous teardown, for signal and crash handlers. */
  stopSync(): void;
}

/** Removes a directory tree if present and recreates it empty. */
function emptyDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true, mode: 0o755 });
}

/** SIGKILLs a process and all its descendants. */
function killTree(root: number): void {
  for (const pid of processTree(root).reverse()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/**
 * The reference Postfix 3.7 relay: main.cf.in/master.cf from bench/postfix/ (POSTFIX_REFERENCE_DIR), with
 * @BASE@ replaced by `base`, laid out as @BASE@/postfix/{etc,spool,data}. It listens on
 * 127.0.0.1:2525 and relays to [127.0.0.1]:2626 (both fixed by that configuration).
 */
export class PostfixRelay implements RelaySystem {
  readonly name = 'postfix';
  readonly fixedSinkPort = 2626;
  private readonly listenPort = 2525;
  private readonly etc: string;
  private readonly spool: string;
  private current?: ChildProcess;

  constructor(
    private readonly base: string,
    private readonly referenceDir: string = POSTFIX_REFERENCE_DIR,
  ) {
    this.etc = path.join(base, 'postfix', 'etc');
    this.spool = path.join(base, 'postfix', 'spool');
  }

  async prepare(): Promise<void> {
    if (process.getuid?.() !== 0) throw new Error('must run as root (the Postfix master starts as root)');
    // A master left over from an interrupted run of this benchmark, in this scratch dir, goes first.
    if (existsSync(path.join(this.etc, 'main.cf'))) this.postfixStop();
    mkdirSync(this.etc, { recursive: true, mode: 0o755 });
    const mainCf = readFileSync(path.join(this.referenceDir, 'main.cf.in'), 'utf8').replaceAll(
      '@BASE@',
      this.base,
    );
    writeFileSync(path.join(this.etc, 'main.cf'), mainCf);
    writeFileSync(path.join(this.etc, 'master.cf'), readFileSync(path.join(this.referenceDir, 'master.cf')));
    const data = path.join(this.base, 'postfix', 'data');
    mkdirSync(data, { recursive: true });
    const { uid, gid } = postfixIds();
    chownSync(data, uid, gid);
    emptyDir(this.spool);
    await assertPortFree(this.listenPort, 'Postfix listener');
    await assertPortFree(this.fixedSinkPort, 'Postfix sink');
    const check = spawnSync('postfix', ['-c', this.etc, 'check'], { encoding: 'utf8', timeout: 60_000 });
    if (check.status !== 0) throw new Error(`postfix check failed: ${check.stderr || check.error?.message}`);
  }

  async start(_sinkPort: number, logFile: string): Promise<RunningRelay> {
    emptyDir(this.spool); // start-fg recreates the queue directories (post-install create-missing)
    rmSync(path.join(this.base, 'postfix', 'maillog'), { force: true });
    const child = spawnTracked('postfix', ['-c', this.etc, 'start-fg']);
    this.current = child;
    const output = tailLines(child.stderr);
    try {
      await waitForSmtp(this.listenPort, STARTUP_TIMEOUT_MS, () => isRunning(child));
    } catch (e) {
      await this.shutdown(child);
      throw new Error(`postfix did not start: ${(e as Error).message}\n${output()}`, { cause: e });
    }
    return {
      port: this.listenPort,
      pid: child.pid!,
      alive: () => isRunning(child),
      peakRssMiB: () => undefined,
      stop: () => this.shutdown(child, logFile),
    };
  }

  /**
   * `postfix stop`, then waits for the start-fg script to end (killing the tree if it will not),
   * keeps the maillog as `logFile` and empties the queue.
   */
  private async shutdown(child: ChildProcess, logFile?: string): Promise<void> {
    this.postfixStop();
    const exited = isRunning(child) ? new Promise<void>((r) => child.once('exit', () => r())) : undefined;
    if (exited) {
      const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 15_000).unref());
      if ((await Promise.race([exited, timeout])) === 'timeout') {
        killTree(child.pid!);
        await exited;
      }
    }
    if (this.current === child) this.current = undefined;
    const maillog = path.join(this.base, 'postfix', 'maillog');
    if (logFile && existsSync(maillog)) renameSync(maillog, logFile);
    emptyDir(this.spool);
  }

  private postfixStop(): void {
    spawnSync('postfix', ['-c', this.etc, 'stop'], { stdio: 'ignore', timeout: 20_000 });
  }

  stopSync(): void {
    this.postfixStop();
    const child = this.current;
    if (child && isRunning(child)) killTree(child.pid!);
  }
}

/** uid and gid of the `postfix` user. */
function postfixIds(): { uid: number; gid: number } {
  try {
    const id = (flag: string) => Number(execFileSync('id', [flag, 'postfix'], { encoding: 'utf8' }).trim());
    return { uid: id('-u'), gid: id('-g') };
  } catch {
    throw new Error('no postfix user (is Postfix installed?)');
  }
}

/** A variant of the benchmark's Cartero config: a name, and what it adds to the base config. */
export interface CarteroVariant {
  /** System name in results and log file names, and the folder under the scratch dir. Default: cartero. */
  name?: string;
  /** Top-level config sections added to (or replacing those of) the base config below. */
  extraConfig?: () => Record<string, unknown>;
  /** Give the admin HTTP port a fixed free port (RunningRelay.adminPort) instead of 0. */
  adminPort?: boolean;
}

/**
 * The Cartero relay, `node dist/relay/src/main.js --config FILE`, configured as a smarthost relay to
 * the sink with a fresh spool for every run. Ready when it logs a line with `"event":"ready"` (or
 * answers on its listener, see waitForReady).
 */
export class CarteroRelay implements RelaySystem {
  readonly name: string;
  private readonly root: string;
  private readonly mainJs: string;
  private current?: ChildProcess;
  private warnedNoReadyLine = false;

  constructor(
    private readonly repoRoot: string,
    base: string,
    private readonly variant: CarteroVariant = {},
  ) {
    this.name = variant.name ?? 'cartero';
    this.root = path.join(base, this.name);
    this.mainJs = path.join(repoRoot, 'dist', 'relay', 'src', 'main.js');
  }

  async prepare(): Promise<void> {
    if (!existsSync(this.mainJs)) throw new Error(`${this.mainJs} not found (build with npx tsc -p .)`);
    mkdirSync(this.root, { recursive: true });
  }

  /** The relay config for one run (see docs/benchmarks.md). */
  private config(port: number, sinkPort: number, adminPort: number): object {
    return {
      version: 1,
      hostname: 'bench.cartero.test',
      paths: { root: this.root },
      listeners: [{ name: 'smtp', address: '127.0.0.1', port, tls: 'none', auth: 'optional' }],
      trustedNetworks: ['127.0.0.0/8'],
      routing: {
        default: { type: 'smarthost', smarthost: { host: '127.0.0.1', port: sinkPort, tls: 'none' } },
      },
      delivery: { concurrency: 100, perDestinationConcurrency: 50 },
      limits: { maxConnections: 1000 },
      logging: { level: 'warn' },
      admin: { port: adminPort },
      ...this.variant.extraConfig?.(),
    };
  }

  async start(sinkPort: number, logFile: string): Promise<RunningRelay> {
    const port = await freePort();
    const adminPort = this.variant.adminPort ? await freePort() : 0;
    emptyDir(path.join(this.root, 'spool'));
    const configFile = path.join(this.root, 'relay.yaml');
    // JSON is YAML: the relay's YAML loader reads it as is.
    writeFileSync(configFile, JSON.stringify(this.config(port, sinkPort, adminPort), null, 2) + '\n');
    const child = spawnTracked(process.execPath, [this.mainJs, '--config', configFile], {
      cwd: this.repoRoot,
    });
    this.current = child;
    const log = createWriteStream(logFile);
    child.stdout!.pipe(log, { end: false });
    child.stderr!.pipe(log, { end: false });
    child.once('exit', () => log.end());
    const stdout = tailLines(child.stdout);
    const stderr = tailLines(child.stderr);
    try {
      const by = await waitForReady(child, port, STARTUP_TIMEOUT_MS);
      if (by === 'banner' && !this.warnedNoReadyLine) {
        this.warnedNoReadyLine = true;
        console.error(
          'cartero: no "event":"ready" log line (logged below level warn?); ready by its SMTP banner',
        );
      }
    } catch (e) {
      await stopChild(child, 'SIGKILL');
      throw new Error(`cartero did not start: ${(e as Error).message}\n${stdout()}\n${stderr()}`.trimEnd(), {
        cause: e,
      });
    }
    return {
      port,
      ...(adminPort ? { adminPort } : {}),
      pid: child.pid!,
      alive: () => isRunning(child),
      peakRssMiB: () => peakRssMiB(child.pid!),
      stop: async () => {
        await stopChild(child, 'SIGTERM', 15_000);
        if (this.current === child) this.current = undefined;
        emptyDir(path.join(this.root, 'spool'));
      },
    };
  }

  stopSync(): void {
    const child = this.current;
    if (child && isRunning(child)) killTree(child.pid!);
  }
}

/**
 * Waits until the relay logs a line with `"event":"ready"` or, failing that, answers with an SMTP
 * banner on its listener (the ready line is logged at info level, which `logging.level: warn` hides).
 * Rejects if the process exits first or after `timeoutMs`.
 */
async function waitForReady(child: ChildProcess, port: number, timeoutMs: number): Promise<'log' | 'banner'> {
  let sawReadyLine = false;
  let rest = '';
  const onData = (d: Buffer) => {
    const lines = (rest + d.toString('utf8')).split('\n');
    rest = lines.pop()!;
    if (lines.some(isReadyLine)) sawReadyLine = true;
  };
  child.stdout!.on('data', onData);
  try {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (sawReadyLine) return 'log';
      if (!isRunning(child)) {
        throw new Error(`exited (${child.signalCode ?? `code ${child.exitCode}`}) before it was ready`);
      }
      if (await probeSmtp(port, 1000)) return sawReadyLine ? 'log' : 'banner';
      await sleep(100);
    }
    throw new Error(`neither a "event":"ready" line nor an SMTP banner within ${timeoutMs} ms`);
  } finally {
    child.stdout!.off('data', onData);
  }
}

function isReadyLine(line: string): boolean {
  try {
    return (JSON.parse(line) as { event?: unknown }).event === 'ready';
  } catch {
    return false;
  }
}
