/**
 * Runs Debian's redis-server (scripts/setup-system.sh installs it) on a loopback address and a free port,
 * without persistence, for the shared rate-limit store tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { unusedPort } from './ports.js';
import { makeTmpDir, removeTmpDir } from './tmp.js';

export interface RedisProc {
  readonly address: string;
  readonly port: number;
  readonly pid: number;
  /** `address:port`, as fleet.rateLimitStore.address takes it. */
  readonly hostPort: string;
  /** SIGKILL (a store that vanishes), resolves when it has exited. */
  kill(): Promise<void>;
  /** SIGTERM, wait for exit, remove the working directory. */
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
let hooked = false;

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((r) => child.once('exit', () => r()));
}

/**
 * Starts redis-server (on `port`, e.g. a killed one's, else a free one); resolves once it accepts
 * connections (deadline `timeoutMs`, default 10 s).
 */
export async function startRedis(
  opts: { address?: string; port?: number; password?: string; timeoutMs?: number } = {},
): Promise<RedisProc> {
  const address = opts.address ?? '127.0.0.1';
  const dir = await makeTmpDir('cartero-redis-');
  let lastErr = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = opts.port ?? (await unusedPort(address));
    const args = [
      '--bind',
      address,
      '--port',
      String(port),
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      '--protected-mode',
      'no',
      '--daemonize',
      'no',
      '--loglevel',
      'notice',
      ...(opts.password ? ['--requirepass', opts.password] : []),
    ];
    const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    if (!hooked) {
      hooked = true;
      process.on('exit', () => {
        for (const c of running) c.kill('SIGKILL');
      });
    }
    running.add(child);
    child.once('exit', () => running.delete(child));
    let out = '';
    const ready = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), opts.timeoutMs ?? 10_000);
      const onData = (b: Buffer) => {
        out += b.toString();
        if (out.includes('Ready to accept connections')) {
          clearTimeout(timer);
          resolve(true);
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('error', (e) => {
        out += String(e);
        clearTimeout(timer);
        resolve(false);
      });
      child.once('exit', () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
    if (ready) {
      return {
        address,
        port,
        pid: child.pid!,
        hostPort: `${address}:${port}`,
        async kill() {
          child.kill('SIGKILL');
          await exited(child);
        },
        async stop() {
          child.kill('SIGTERM');
          await exited(child);
          await removeTmpDir(dir);
        },
      };
    }
    child.kill('SIGKILL');
    await exited(child);
    lastErr = out.slice(-2000);
  }
  await removeTmpDir(dir);
  throw new Error(`redis-server did not start on ${address}: ${lastErr}`);
}
