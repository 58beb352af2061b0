/**
 * Runs the relay (dist/relay/src/main.js) as a child process for black-box tests.
 *
 * Contract with the relay: its stdout is pino JSON lines; at startup it logs
 * `{"event":"listening","listener":NAME,"address":IP,"port":N}` per listener,
 * `{"event":"admin.listening","port":N}` and then `{"event":"ready"}`. A bad config makes it exit
 * with code 2 after printing `cartero-relay: config error: <field>: <reason>` on stderr.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { waitFor } from './poll.js';
import { isUnderTmpDir, makeTmpDir, removeTmpDir } from './tmp.js';

/** The relay's entry point, found relative to this compiled file (dist/test/helpers/relay.js). */
export const RELAY_MAIN = fileURLToPath(new URL('../../relay/src/main.js', import.meta.url));

/** One parsed stdout line; a line that is not JSON becomes `{ msg: line, unparsed: true }`. */
export type LogLine = Record<string, unknown>;

export interface RelayExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface StartRelayOptions {
  /**
   * A relay config document (see relay/src/contract/config-schema.ts). Filled in when absent: `version: 1`,
   * `listeners: [{ name: 'smtp' }]`, `port: 0` on each listener, `admin.port: 0`,
   * `shutdown.gracePeriod: '5s'`; `paths.root` is always set to the root directory.
   */
  config: Record<string, unknown>;
  /** Extra environment variables for the relay (on top of this process's environment). */
  env?: Record<string, string>;
  /** Secret files to write under `<root>/<paths.secrets>` (default `<root>/secrets`), mode 0600. */
  secrets?: Record<string, string | Buffer>;
  /** Any other files to write, paths relative to the root (e.g. `tls/cert.pem`). */
  files?: Record<string, string | Buffer>;
  /**
   * Root directory to use, e.g. the `root` of an earlier, stopped relay (restart tests). Otherwise
   * `config.paths.root` when given, else a fresh temporary directory.
   */
  dir?: string;
  /** How long to wait for the `ready` line (default 15 000 ms). */
  startTimeoutMs?: number;
  /** Script to run instead of RELAY_MAIN (for testing this helper with a stand-in). */
  main?: string;
}

export interface RelayProc {
  /** Listener name -> bound port, from the `listening` lines. */
  readonly ports: Record<string, number>;
  readonly adminPort: number;
  /** The root directory (config file, spool, secrets). */
  readonly root: string;
  readonly configFile: string;
  readonly pid: number;
  /** Every stdout line so far, parsed. */
  readonly logs: LogLine[];
  /** Everything written to stderr so far. */
  readonly stderr: string;
  /**
   * Resolves with the first log line (at index `since` or later, default 0) matching `pred`.
   * Rejects when `timeoutMs` (default 10 000) passes, or when the relay exits without such a line.
   */
  waitForLog(pred: (line: LogLine) => boolean, timeoutMs?: number, since?: number): Promise<LogLine>;
  /** Sends a signal (default SIGTERM). */
  kill(signal?: NodeJS.Signals): void;
  /** Settles when the process has exited and its output is closed. */
  readonly exited: Promise<RelayExit>;
  /** SIGTERM, then SIGKILL if still running after 15 s; resolves with the exit status. */
  stop(): Promise<RelayExit>;
  /** stop(), then remove the root directory if it lies under os.tmpdir(). */
  cleanup(): Promise<void>;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Makes sure no relay outlives the test process, even when a test fails before stopping it. */
function track(child: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const c of running) c.kill('SIGKILL');
    });
  }
  running.add(child);
  child.once('close', () => running.delete(child));
}

/** The environment for a relay child: ours plus `extra`, without node:test's own markers. */
function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete env.NODE_TEST_CONTEXT;
  return env;
}

async function writeFiles(
  base: string,
  files: Record<string, string | Buffer>,
  mode?: number,
): Promise<void> {
  for (const [name, content] of Object.entries(files)) {
    const file = path.resolve(base, name);
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, content, mode === undefined ? {} : { mode });
  }
}

function asRecord(v: unknown): Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
    ? { ...(v as Record<string, unknown>) }
    : {};
}

/** Fills in the defaults described in StartRelayOptions.config. */
function withDefaults(config: Record<string, unknown>, root: string): Record<string, unknown> {
  const doc: Record<string, unknown> = structuredClone(config);
  doc.version ??= 1;
  const listeners = Array.isArray(doc.listeners) ? doc.listeners : [{ name: 'smtp' }];
  doc.listeners = listeners.map((l: unknown) => ({ port: 0, ...asRecord(l) }));
  doc.admin = { port: 0, ...asRecord(doc.admin) };
  doc.paths = { ...asRecord(doc.paths), root };
  doc.shutdown = { gracePeriod: '5s', ...asRecord(doc.shutdown) };
  return doc;
}

/** Starts the relay and resolves once it logged `ready`; rejects (with its stderr) if it exits or stalls. */
export async function startRelay(opts: StartRelayOptions): Promise<RelayProc> {
  const givenRoot = asRecord(opts.config.paths).root;
  const fresh = opts.dir === undefined && typeof givenRoot !== 'string';
  const root =
    opts.dir ??
    (typeof givenRoot === 'string' ? path.resolve(givenRoot) : await makeTmpDir('cartero-relay-'));
  await mkdir(root, { recursive: true });
  const doc = withDefaults(opts.config, root);
  const secretsDir = path.resolve(root, String(asRecord(doc.paths).secrets ?? 'secrets'));
  if (opts.secrets) await writeFiles(secretsDir, opts.secrets, 0o600);
  if (opts.files) await writeFiles(root, opts.files);
  const configFile = path.join(root, 'relay.yaml');
  await writeFile(configFile, YAML.stringify(doc));

  const child = spawn(process.execPath, [opts.main ?? RELAY_MAIN, '--config', configFile], {
    env: childEnv(opts.env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  track(child);
  const logs: LogLine[] = [];
  let stderr = '';
  let exit: RelayExit | undefined;
  const exited = new Promise<RelayExit>((resolve) => {
    child.once('error', (err) => {
      stderr += `spawn error: ${err.message}\n`;
      exit ??= { code: null, signal: null };
      resolve(exit);
    });
    child.once('close', (code, signal) => {
      exit = { code, signal };
      resolve(exit);
    });
  });
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      const parsed: unknown = JSON.parse(line);
      logs.push(
        parsed !== null && typeof parsed === 'object' ? (parsed as LogLine) : { msg: line, unparsed: true },
      );
    } catch {
      logs.push({ msg: line, unparsed: true });
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    if (stderr.length < 1_000_000) stderr += s;
  });

  const describeExit = () => `relay exited (code ${exit?.code}, signal ${exit?.signal}); stderr:\n${stderr}`;

  const waitForLog = async (
    pred: (line: LogLine) => boolean,
    timeoutMs = 10_000,
    since = 0,
  ): Promise<LogLine> => {
    const find = () => logs.slice(since).find(pred);
    return waitFor(
      () => {
        const hit = find();
        if (hit) return hit;
        if (exit) throw new Error(`no matching log line: ${describeExit()}`);
        return undefined;
      },
      { timeoutMs, what: 'a matching relay log line' },
    );
  };

  const stop = async (): Promise<RelayExit> => {
    if (exit) return exit;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    try {
      return await exited;
    } finally {
      clearTimeout(timer);
    }
  };

  try {
    await waitForLog((l) => l.event === 'ready', opts.startTimeoutMs ?? 15_000);
  } catch (e) {
    child.kill('SIGKILL');
    await exited;
    if (fresh) await removeTmpDir(root);
    const tail = logs
      .slice(-20)
      .map((l) => JSON.stringify(l))
      .join('\n');
    throw new Error(
      `relay did not become ready: ${(e as Error).message}\nstderr:\n${stderr}\nlast log lines:\n${tail}`,
      { cause: e },
    );
  }

  const ports: Record<string, number> = {};
  let adminPort = 0;
  for (const l of logs) {
    if (l.event === 'listening' && typeof l.listener === 'string' && typeof l.port === 'number')
      ports[l.listener] = l.port;
    if (l.event === 'admin.listening' && typeof l.port === 'number') adminPort = l.port;
  }

  return {
    ports,
    adminPort,
    root,
    configFile,
    pid: child.pid!,
    logs,
    get stderr() {
      return stderr;
    },
    waitForLog,
    kill(signal = 'SIGTERM') {
      child.kill(signal);
    },
    exited,
    stop,
    async cleanup() {
      await stop();
      if (isUnderTmpDir(root)) await removeTmpDir(root);
    },
  };
}

export interface RelayFailure {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Writes `configText` verbatim as the config file of a fresh root, runs the relay and waits (at most
 * 15 s, then SIGKILL and an error) for it to exit. For config error tests.
 */
export async function runRelayExpectFailure(
  configText: string,
  opts: Pick<StartRelayOptions, 'env' | 'secrets' | 'files' | 'main'> = {},
): Promise<RelayFailure> {
  const root = await makeTmpDir('cartero-relay-fail-');
  try {
    if (opts.secrets) await writeFiles(path.join(root, 'secrets'), opts.secrets, 0o600);
    if (opts.files) await writeFiles(root, opts.files);
    const configFile = path.join(root, 'relay.yaml');
    await writeFile(configFile, configText);
    const child = spawn(process.execPath, [opts.main ?? RELAY_MAIN, '--config', configFile], {
      env: childEnv(opts.env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    track(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, 15_000);
    const result = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.once('error', (err) => {
        stderr += `spawn error: ${err.message}\n`;
        resolve({ code: null, signal: null });
      });
      child.once('close', (code, signal) => resolve({ code, signal }));
    });
    clearTimeout(timer);
    if (timedOut) throw new Error(`relay did not exit within 15 s; stderr:\n${stderr}\nstdout:\n${stdout}`);
    return { ...result, stdout, stderr };
  } finally {
    await removeTmpDir(root);
  }
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the relay with `args` and waits (at most 15 s) for it to exit. */
export function runRelayCli(args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env.NODE_TEST_CONTEXT;
    const child = spawn(process.execPath, [RELAY_MAIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`relay ${args.join(' ')} did not exit within 15 s; stderr:\n${stderr}`));
    }, 15_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
