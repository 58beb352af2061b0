/**
 * Process and socket helpers for the benchmark: CPU time of a process tree and peak RSS from /proc,
 * free ports, SMTP banner probes, and a registry of child processes that are killed on any exit.
 */
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';

/** Kernel clock ticks per second, the unit of the times in /proc/<pid>/stat. */
const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

interface ProcStat {
  ppid: number;
  /** utime + stime + cutime + cstime, in clock ticks. */
  ticks: number;
}

/** Parses /proc/<pid>/stat; undefined if the process is gone. */
function readStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // Field 2 (comm) is in parentheses and may hold spaces: split after the last ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state); ppid is field 4, utime..cstime are fields 14..17.
  return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) };
}

/** `root` and all its live descendants, each with its stat, from one pass over /proc. */
function treeStats(root: number): Map<number, ProcStat> {
  const stats = new Map<number, ProcStat>();
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    const st = readStat(pid);
    if (!st) continue;
    stats.set(pid, st);
    const list = children.get(st.ppid);
    if (list) list.push(pid);
    else children.set(st.ppid, [pid]);
  }
  const tree = new Map<number, ProcStat>();
  const todo = [root];
  while (todo.length > 0) {
    const pid = todo.pop()!;
    const st = stats.get(pid);
    if (st) tree.set(pid, st);
    todo.push(...(children.get(pid) ?? []));
  }
  return tree;
}

/** The pids of `root` and all its live descendants. */
export function processTree(root: number): number[] {
  return [...treeStats(root).keys()];
}

/**
 * CPU milliseconds (user + system) used so far by a process tree: each live process's own time
 * plus that of its exited, reaped children (cutime/cstime), so work done by short-lived children
 * (Postfix smtpd, cleanup, smtp) still counts after they exit. Threads are included in their process.
 */
export function treeCpuMs(root: number): number {
  let ticks = 0;
  for (const st of treeStats(root).values()) ticks += st.ticks;
  return (ticks * 1000) / CLOCK_TICKS;
}

/** Peak resident set size (VmHWM) of one process, in MiB; undefined if unreadable. */
export function peakRssMiB(pid: number): number | undefined {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** A TCP port on 127.0.0.1 that nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** Throws if something already listens on 127.0.0.1:port. */
export function assertPortFree(port: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', (e: NodeJS.ErrnoException) =>
      reject(new Error(`port ${port} (${what}) is not free: ${e.code ?? e.message}`)),
    );
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve()));
  });
}

/** Connects once, reads a `220` banner and says QUIT; resolves true on success. */
export function probeSmtp(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = '';
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.on('error', () => done(false));
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      if (!buf.includes('\n')) return;
      if (!buf.startsWith('220')) return done(false);
      sock.end('QUIT\r\n', () => done(true));
    });
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Waits until an SMTP server answers with a 220 banner on 127.0.0.1:port. Fails after `timeoutMs`,
 * or as soon as `alive()` says the server process has gone.
 */
export async function waitForSmtp(port: number, timeoutMs: number, alive: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!alive()) throw new Error(`server process exited before 127.0.0.1:${port} answered`);
    if (await probeSmtp(port, 2000)) return;
    await sleep(100);
  }
  throw new Error(`no SMTP banner on 127.0.0.1:${port} within ${timeoutMs} ms`);
}

/** Child processes started by the benchmark; all are SIGKILLed by `killAll` (on exit or signal). */
const children = new Set<ChildProcess>();

/**
 * `spawn`, with the child registered for cleanup until it exits. Children get their own process group,
 * so a Ctrl-C reaches only the benchmark, which then stops them in order.
 */
export function spawnTracked(cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, ...opts });
  children.add(child);
  child.once('exit', () => children.delete(child));
  child.once('error', () => children.delete(child));
  return child;
}

/** True until the child has exited (or failed to start). */
export function isRunning(child: ChildProcess): boolean {
  return (
    child.exitCode === null && child.signalCode === null && child.pid !== undefined && children.has(child)
  );
}

/** Sends `signal`, waits up to `graceMs` for the exit, then SIGKILLs the process. */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000) {
  if (!isRunning(child)) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill(signal);
  const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(t);
}

/** SIGKILLs every tracked child that is still running (synchronous; safe in 'exit' handlers). */
export function killAll(): void {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** Collects a child's output into a ring of its last lines, for error messages. */
export function tailLines(stream: NodeJS.ReadableStream | null, keep = 20): () => string {
  const lines: string[] = [];
  stream?.on('data', (d: Buffer) => {
    lines.push(...d.toString('utf8').split(/\r?\n/).filter(Boolean));
    lines.splice(0, Math.max(0, lines.length - keep));
  });
  return () => lines.join('\n');
}
