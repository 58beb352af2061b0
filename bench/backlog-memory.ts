/**
 * Backlog memory: RSS per queued message the engine holds for a spool of N messages that are not due soon,
 * and how long the background index takes.
 *
 *   node dist/bench/backlog-memory.js write <dir> <N>     # N messages through DiskSpool.write
 *   node --expose-gc dist/bench/backlog-memory.js index <dir>
 *   node --expose-gc dist/bench/backlog-memory.js start <dir>  # a whole Relay: time to 220, to full index
 *
 * `index` opens the spool with a clock one hour ahead, so every message without a state file is scheduled
 * an hour from now (held in the index, never loaded), starts the engine, indexes the spool, and prints RSS
 * before and after (after GC).
 */
import { Spool } from '../relay/src/spool/disk.js';
import { newQueueId, type Envelope } from '../relay/src/spool/types.js';
import { DeliveryEngine } from '../relay/src/delivery/engine.js';
import { resolveConfig } from '../relay/src/config.js';
import { RelayMetrics } from '../relay/src/metrics.js';
import { MxResolver } from '../relay/src/dns.js';
import { TenantRuntime } from '../relay/src/tenant-runtime.js';
import { createLogger } from '../relay/src/log.js';

const [mode, dir, nArg] = process.argv.slice(2);
const mib = (b: number) => Math.round((b / 1048576) * 10) / 10;

async function write(n: number): Promise<void> {
  const spool = new Spool({ dir, maxMessages: 10_000_000, minFreeBytes: 0 });
  await spool.open();
  const tenants = ['acme', 'globex', 'initech', 'umbrella'];
  const domains = ['gmail.test', 'yahoo.test', 'outlook.test', 'example.test', 'corp.test'];
  let next = 0;
  const t0 = Date.now();
  const worker = async () => {
    for (let i = next++; i < n; i = next++) {
      const raw = Buffer.from(
        `Received: from client\r\nFrom: a@sender.test\r\nTo: r${i}@${domains[i % 5]}\r\nSubject: backlog ${i}\r\n\r\n${'x'.repeat(2000)}\r\n`,
      );
      const env: Envelope = {
        v: 1,
        id: newQueueId(),
        tenant: tenants[i % 4],
        pool: null,
        arrivedAt: Date.now(),
        from: 'bounces@sender.test',
        rcpts: [{ address: `r${i}@${domains[i % 5]}` }],
        dsn: {},
        size: raw.length,
        eightBit: false,
        smtpUtf8: false,
        origin: 'smtp',
        client: { address: '10.0.0.1', helo: 'client.test', listener: 'smtp' },
      };
      await spool.write(env, [raw]);
      if (i % 10000 === 0) process.stdout.write(`${i} `);
    }
  };
  await Promise.all(Array.from({ length: 64 }, worker));
  console.log(`\nwrote ${n} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

async function index(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with --expose-gc');
  const cfg = resolveConfig(
    {
      version: 1,
      hostname: 'bench.test',
      listeners: [{ name: 'smtp', port: 0 }],
      paths: { spool: dir },
      routing: { default: { type: 'smarthost', smarthost: { host: '127.0.0.1', port: 9, tls: 'none' } } },
      admin: { port: 0 },
      tenants: [{ name: 'acme' }, { name: 'globex' }, { name: 'initech' }, { name: 'umbrella' }],
    },
    process.cwd(),
  );
  const log = createLogger('silent');
  const spool = new Spool({
    dir,
    maxMessages: 10_000_000,
    minFreeBytes: 0,
    now: () => Date.now() + 3_600_000,
  });
  const ref: { e?: DeliveryEngine } = {};
  const metrics = new RelayMetrics({
    queue: () => ref.e!.stats(),
    bounceRates: () => new Map(),
    now: Date.now,
  });
  const e = (ref.e = new DeliveryEngine({
    cfg,
    spool,
    resolver: new MxResolver({
      servers: cfg.dns.servers,
      timeoutMs: 1000,
      allowPrivateTargets: cfg.dns.allowPrivateTargets,
    }),
    metrics,
    tenancy: await TenantRuntime.open(cfg, Date.now, log),
    log,
    now: Date.now,
  }));
  await spool.open();
  e.start();
  gc();
  const before = process.memoryUsage();
  const t0 = Date.now();
  const n = await e.recover(spool.scan(() => undefined));
  const secs = (Date.now() - t0) / 1000;
  gc();
  await new Promise((r) => setTimeout(r, 200));
  gc();
  const afterMem = process.memoryUsage();
  const s = e.summary();
  const t1 = Date.now();
  e.summary();
  e.stats();
  const summaryMs = Date.now() - t1;
  console.log(
    JSON.stringify({
      messages: n,
      depth: s.depth,
      indexSeconds: secs,
      rssBeforeMiB: mib(before.rss),
      rssAfterMiB: mib(afterMem.rss),
      heapUsedAfterMiB: mib(afterMem.heapUsed),
      rssPerMessageBytes: Math.round((afterMem.rss - before.rss) / n),
      heapPerMessageBytes: Math.round((afterMem.heapUsed - before.heapUsed) / n),
      loaded: e.active.loaded,
      summaryAndStatsMs: summaryMs,
    }),
  );
  await e.stop(100);
}

/**
 * A whole relay on the spool: time from start() to the first 220 and to the end of the background index,
 * and RSS then. Every tenant is suspended first (suspensions.json), so nothing is attempted meanwhile.
 */
async function start(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  const { writeFile } = await import('node:fs/promises');
  const net = await import('node:net');
  const { Relay } = await import('../relay/src/relay.js');
  const tenants = ['acme', 'globex', 'initech', 'umbrella'];
  await writeFile(
    `${dir}/suspensions.json`,
    JSON.stringify({
      v: 1,
      suspensions: tenants.map((tenant) => ({
        tenant,
        reason: 'bench',
        source: 'admin',
        since: new Date().toISOString(),
      })),
    }),
  );
  const cfg = resolveConfig(
    {
      version: 1,
      hostname: 'bench.test',
      listeners: [{ name: 'smtp', port: 0 }],
      paths: { spool: dir },
      queue: { maxMessages: 10_000_000 },
      routing: { default: { type: 'smarthost', smarthost: { host: '127.0.0.1', port: 9, tls: 'none' } } },
      admin: { port: 0 },
      tenants: tenants.map((name) => ({ name })),
    },
    process.cwd(),
  );
  const relay = new Relay(cfg, { log: createLogger('silent') });
  const t0 = performance.now();
  await relay.start();
  const port = relay.inbound.ports.smtp;
  const greeting = await new Promise<string>((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    sock.once('data', (d) => (sock.destroy(), resolve(d.toString())));
    sock.once('error', reject);
  });
  const to220 = performance.now() - t0;
  console.log(
    JSON.stringify({ secondsTo220: Math.round(to220) / 1000, queuedSoFar: relay.engine.stats().depth }),
  );
  await relay.recovery;
  const toIndexed = performance.now() - t0;
  gc?.();
  console.log(
    JSON.stringify({
      depth: relay.engine.stats().depth,
      greeting: greeting.slice(0, 3),
      secondsTo220: Math.round(to220) / 1000,
      secondsToIndexed: Math.round(toIndexed) / 1000,
      rssMiB: mib(process.memoryUsage().rss),
    }),
  );
  await relay.stop(1000);
  const { rm } = await import('node:fs/promises');
  await rm(`${dir}/suspensions.json`, { force: true });
}

if (mode === 'write') await write(Number(nArg));
else if (mode === 'index') await index();
else if (mode === 'start') await start();
else throw new Error('usage: write <dir> <N> | index <dir> | start <dir>');
