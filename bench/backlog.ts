/**
 * Backlog benchmark: what a large queue costs the Cartero relay, and how it copes with large messages.
 *
 *   node dist/bench/backlog.js [--sizes 100000,1000000] [--quick] [--clients 50] [--message-mib 20]
 *                              [--index-timeout SEC] [--no-large] [--regenerate] [--dir PATH]
 *
 * 1. RSS per queued message: a spool of N deferred 1 KB messages (generated once through the Spool class and
 *    cached under <dir>/cache/<N>/), the relay started on a fresh copy of it; RSS once the whole spool is
 *    indexed, minus the RSS of the same relay on an empty spool measured in the same run, ÷ N.
 * 2. Time from process start to the first `220` on the listener, and to a fully indexed queue (GET /queue:
 *    `recovering: false` when the relay reports that flag, else `depth` = N).
 * 3. Peak RSS while C clients (default 50) each send one M MiB message (default 20) at once.
 *
 * See docs/benchmarks.md ("Backlog benchmark") for the method and the figures.
 */
import { execFileSync, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, statfsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Spool } from '../relay/src/spool/disk.js';
import { newQueueId, type DeliveryState, type Envelope } from '../relay/src/spool/types.js';
import { environment, REPO_ROOT } from './measure.js';
import {
  freePort,
  isRunning,
  killAll,
  probeSmtp,
  sleep,
  spawnTracked,
  stopChild,
  tailLines,
  treeCpuMs,
} from './proc.js';
import { positive } from './rounds.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const MAIN_JS = path.join(REPO_ROOT, 'dist', 'relay', 'src', 'main.js');
const SPOOL_JS_DIR = path.join(REPO_ROOT, 'dist', 'relay', 'src', 'spool');
/** Tenants and recipient domains of the generated backlog. */
const TENANTS = ['acme', 'globex', 'initech', 'umbrella'];
const DOMAINS = ['gmail.com', 'yahoo.com', 'outlook.com', 'hotmail.com', 'icloud.com', 'example.org'];
/** Size of every generated message, exactly. */
const MESSAGE_BYTES = 1024;
/** How far ahead the generated messages' next attempt lies (waiting on a provider cap, retried much later). */
const DEFER_MS = 30 * 24 * 3600 * 1000;
/** A cached spool is regenerated when its messages would become due within this. */
const MIN_DEFER_LEFT_MS = 24 * 3600 * 1000;
/** Rough disk use per generated message: one 4 KiB block for the queue file and one for the state file. */
const DISK_PER_MESSAGE = 8 * 1024;
/** Sampling period of VmRSS. */
const SAMPLE_MS = 50;
/** After the queue is indexed: wait this long, then take the median of a few RSS readings. */
const SETTLE_MS = 2000;

interface Options {
  sizes: number[];
  quick: boolean;
  clients: number;
  messageMiB: number;
  large: boolean;
  indexTimeoutMs: number;
  regenerate: boolean;
  concurrency: number;
  dir: string;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      sizes: { type: 'string' },
      quick: { type: 'boolean', default: false },
      clients: { type: 'string', default: '50' },
      'message-mib': { type: 'string', default: '20' },
      'no-large': { type: 'boolean', default: false },
      'index-timeout': { type: 'string', default: '1200' },
      regenerate: { type: 'boolean', default: false },
      concurrency: { type: 'string', default: '64' },
      dir: { type: 'string', default: path.join(REPO_ROOT, '.tmp', 'bench-backlog') },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(
      'usage: node dist/bench/backlog.js [--sizes 100000,1000000] [--quick] [--clients 50] [--message-mib 20]\n' +
        '                                  [--index-timeout SEC] [--no-large] [--regenerate] [--concurrency 64]\n' +
        '                                  [--dir PATH]',
    );
    process.exit(0);
  }
  const sizes = (values.sizes ?? (values.quick ? '10000,100000' : '100000,1000000'))
    .split(',')
    .map((s) => positive('sizes', s.trim().replace(/_/g, '')));
  return {
    sizes,
    quick: values.quick,
    clients: positive('clients', values.clients),
    messageMiB: positive('message-mib', values['message-mib']),
    large: !values['no-large'],
    indexTimeoutMs: positive('index-timeout', values['index-timeout']) * 1000,
    regenerate: values.regenerate,
    concurrency: positive('concurrency', values.concurrency),
    dir: path.resolve(values.dir),
  };
}

const log = (s: string) => console.error(`[backlog] ${s}`);
const secs = (ms: number) => (ms / 1000).toFixed(ms < 10_000 ? 2 : 1);

// ---------------------------------------------------------------------------------------------------------
// Temp dirs: removed on any exit, including a failure or a signal.

const tempDirs = new Set<string>();

function removeDir(dir: string): void {
  // rm -rf is much faster than rmSync on a million files, and works from an 'exit' handler.
  spawnSync('rm', ['-rf', '--one-file-system', dir], { stdio: 'ignore' });
}

function cleanupTemps(): void {
  for (const d of tempDirs) removeDir(d);
  tempDirs.clear();
}

// ---------------------------------------------------------------------------------------------------------
// Generating a spool (through the Spool class only: the file format belongs to relay/src/spool).

/** Identifies the spool code that wrote a cached template: a different one means regenerate. */
function spoolFingerprint(): string {
  const h = createHash('sha256');
  for (const f of readdirSync(SPOOL_JS_DIR).sort()) {
    if (!f.endsWith('.js')) continue;
    h.update(f).update(readFileSync(path.join(SPOOL_JS_DIR, f)));
  }
  return h.digest('hex').slice(0, 16);
}

interface Marker {
  messages: number;
  fingerprint: string;
  generatedAt: string;
  nextAttemptAt: number;
  seconds: number;
  commit: string | null;
}

function freeBytes(dir: string): number {
  const s = statfsSync(dir);
  return s.bavail * s.bsize;
}

function duBytes(dir: string): number | undefined {
  try {
    return (
      Number(execFileSync('du', ['-s', '--block-size=1', dir], { encoding: 'utf8' }).split('\t')[0]) ||
      undefined
    );
  } catch {
    return undefined;
  }
}

function fmtBytes(b: number): string {
  return b >= GiB ? `${(b / GiB).toFixed(1)} GiB` : `${(b / MiB).toFixed(0)} MiB`;
}

/** A 1 KB message: headers and a body padded to exactly MESSAGE_BYTES. */
function rawMessage(i: number, tenant: string, rcpt: string, id: string, at: number): Buffer {
  const head =
    `Received: from client.${tenant}.example (client.${tenant}.example [192.0.2.${1 + (i % 250)}])\r\n` +
    `\tby bench.cartero.test with ESMTP id ${id}; ${new Date(at).toUTCString()}\r\n` +
    `From: Newsletter <news@${tenant}.example>\r\n` +
    `To: <${rcpt}>\r\n` +
    `Subject: Weekly offers #${i}\r\n` +
    `Date: ${new Date(at).toUTCString()}\r\n` +
    `Message-ID: <${id}.${i}@${tenant}.example>\r\n` +
    'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n';
  const line = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n';
  let body = '';
  while (head.length + body.length + line.length <= MESSAGE_BYTES) body += line;
  body += 'x'.repeat(MESSAGE_BYTES - head.length - body.length - 2) + '\r\n';
  return Buffer.from(head + body, 'latin1');
}

/**
 * The cached spool of `n` messages (`<dir>/cache/<n>/spool`), generated when missing, written by different
 * spool code, or about to become due. Every message is deferred: one attempt made, the next 30 days ahead.
 */
async function template(opts: Options, n: number): Promise<string> {
  const base = path.join(opts.dir, 'cache', String(n));
  const spoolDir = path.join(base, 'spool');
  const markerFile = path.join(base, 'complete.json');
  const fingerprint = spoolFingerprint();
  if (!opts.regenerate && existsSync(markerFile)) {
    const m = JSON.parse(readFileSync(markerFile, 'utf8')) as Marker;
    const why =
      m.messages !== n
        ? 'message count differs'
        : m.fingerprint !== fingerprint
          ? 'written by different spool code'
          : m.nextAttemptAt - Date.now() < MIN_DEFER_LEFT_MS
            ? 'its messages are about to become due'
            : undefined;
    if (!why) {
      log(`spool of ${n}: reusing ${spoolDir} (generated ${m.generatedAt} in ${m.seconds.toFixed(0)} s)`);
      return spoolDir;
    }
    log(`spool of ${n}: regenerating (${why})`);
  }
  removeDir(base);
  mkdirSync(base, { recursive: true });
  // Room for the template and one run's copy of it (its state files are copied, queue files hard-linked).
  const need = Math.max(n >= 500_000 ? 10 * GiB : GiB, 1.5 * n * DISK_PER_MESSAGE);
  const free = freeBytes(base);
  if (free < need)
    throw new Error(
      `not generating a spool of ${n} messages: ${fmtBytes(free)} free under ${base}, ` +
        `need at least ${fmtBytes(need)} (about ${fmtBytes(n * DISK_PER_MESSAGE)} for the spool and as much ` +
        'again for a run). Free some space, or run with smaller --sizes.',
    );

  // The spool's own free-space floor stops generation cleanly, well before the disk is full.
  const spool = new Spool({ dir: spoolDir, maxMessages: n + 1000, minFreeBytes: 4 * GiB });
  await spool.open();
  const started = performance.now();
  const now = Date.now();
  const nextAttemptAt = now + DEFER_MS;
  let next = 0;
  let done = 0;
  const one = async (i: number) => {
    const tenant = TENANTS[i % TENANTS.length];
    const domain = DOMAINS[(i * 7) % DOMAINS.length];
    const rcpt = `user${i}@${domain}`;
    const arrivedAt = now - (n - i); // distinct, in order
    const id = newQueueId(arrivedAt);
    const raw = rawMessage(i, tenant, rcpt, id, arrivedAt);
    const env: Envelope = {
      v: 1,
      id,
      tenant,
      pool: null,
      arrivedAt,
      from: `news@${tenant}.example`,
      rcpts: [{ address: rcpt }],
      dsn: {},
      size: raw.length,
      eightBit: false,
      smtpUtf8: false,
      origin: 'smtp',
      client: { address: `192.0.2.${1 + (i % 250)}`, helo: `client.${tenant}.example`, listener: 'smtp' },
    };
    await spool.write(env, [raw]);
    const reply = `451 4.7.1 mx.${domain}: rate limited for this sender, try again later`;
    const state: DeliveryState = {
      v: 1,
      attempts: 1,
      nextAttemptAt,
      delayWarned: false,
      rcpts: [
        {
          status: 'pending',
          attempts: 1,
          lastAttemptAt: now,
          lastReply: reply,
          lastStatus: '4.7.1',
          remoteMta: `mx.${domain}`,
        },
      ],
    };
    await spool.saveState(id, state);
  };
  let lastReport = performance.now();
  const worker = async () => {
    while (next < n) {
      await one(next++);
      done++;
      const t = performance.now();
      if (t - lastReport >= 5000) {
        lastReport = t;
        const rate = done / ((t - started) / 1000);
        log(
          `spool of ${n}: ${done} written (${((100 * done) / n).toFixed(1)} %), ${rate.toFixed(0)} msg/s, ` +
            `about ${((n - done) / rate / 60).toFixed(1)} min left`,
        );
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency, n) }, worker));
  const seconds = (performance.now() - started) / 1000;
  const marker: Marker = {
    messages: n,
    fingerprint,
    generatedAt: new Date().toISOString(),
    nextAttemptAt,
    seconds,
    commit: (environment().commit as string | null) ?? null,
  };
  await writeFile(markerFile, JSON.stringify(marker, null, 2) + '\n');
  const used = duBytes(spoolDir);
  log(
    `spool of ${n}: generated in ${seconds.toFixed(0)} s (${(n / seconds).toFixed(0)} msg/s)` +
      (used ? `, ${fmtBytes(used)} on disk` : ''),
  );
  return spoolDir;
}

/**
 * A fresh spool for one run, from the template: queue files (immutable once written) are hard-linked,
 * everything else (state files, which the relay rewrites, and anything a later spool format adds) copied.
 */
function copySpool(templateDir: string, dest: string): number {
  const t0 = performance.now();
  mkdirSync(dest, { recursive: true });
  for (const name of readdirSync(templateDir)) {
    const args = name === 'queue' ? ['-al'] : ['-a'];
    const r = spawnSync('cp', [...args, path.join(templateDir, name), path.join(dest, name)], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    if (r.status !== 0)
      throw new Error(`cp ${args.join(' ')} ${name} failed: ${r.stderr?.toString().trim()}`);
  }
  return performance.now() - t0;
}

// ---------------------------------------------------------------------------------------------------------
// The relay under test.

/** Current resident set size of a process in bytes (VmRSS), or VmHWM with `peak`; undefined if gone. */
function rssBytes(pid: number, field: 'VmRSS' | 'VmHWM' = 'VmRSS'): number | undefined {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** GET on the admin port; undefined when it does not answer (yet). */
function getJson(port: number, p: string, timeoutMs = 5000): Promise<Record<string, unknown> | undefined> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          resolve(
            res.statusCode === 200 ? (JSON.parse(Buffer.concat(chunks).toString()) as never) : undefined,
          );
        } catch {
          resolve(undefined);
        }
      });
      res.on('error', () => resolve(undefined));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
  });
}

interface Relay {
  child: ChildProcess;
  pid: number;
  port: number;
  adminPort: number;
  /** performance.now() just before the spawn. */
  startedAt: number;
  output: () => string;
  alive: () => boolean;
}

async function startRelay(runDir: string, spoolDir: string, queued: number, opts: Options): Promise<Relay> {
  const port = await freePort();
  const adminPort = await freePort();
  // Nothing listens there: an attempt that does happen is refused and deferred, like a destination that
  // is down. The backlog's messages are not due for 30 days, so none should be attempted at all.
  const deadPort = await freePort();
  const config = {
    version: 1,
    hostname: 'bench.cartero.test',
    paths: { root: runDir, spool: spoolDir },
    listeners: [{ name: 'smtp', address: '127.0.0.1', port, tls: 'none', auth: 'optional' }],
    trustedNetworks: ['127.0.0.0/8'],
    tenants: TENANTS.map((name) => ({ name })),
    routing: {
      default: { type: 'smarthost', smarthost: { host: '127.0.0.1', port: deadPort, tls: 'none' } },
    },
    queue: { maxMessages: Math.max(2 * queued, 1_000_000), maxAge: '30d' },
    limits: { maxConnections: 1000, maxMessageSize: (opts.messageMiB + 1) * MiB },
    logging: { level: 'warn' },
    admin: { port: adminPort },
  };
  const configFile = path.join(runDir, 'relay.yaml');
  // JSON is YAML.
  await writeFile(configFile, JSON.stringify(config, null, 2) + '\n');
  const logFile = createWriteStream(path.join(opts.dir, 'logs', `relay-${queued}.log`));
  const startedAt = performance.now();
  const child = spawnTracked(process.execPath, [MAIN_JS, '--config', configFile], { cwd: REPO_ROOT });
  child.stdout!.pipe(logFile, { end: false });
  child.stderr!.pipe(logFile, { end: false });
  child.once('exit', () => logFile.end());
  const out = tailLines(child.stdout);
  const err = tailLines(child.stderr);
  if (child.pid === undefined) throw new Error('could not start the relay');
  return {
    child,
    pid: child.pid,
    port,
    adminPort,
    startedAt,
    output: () => `${out()}\n${err()}`.trim(),
    alive: () => isRunning(child),
  };
}

interface StartupFigures {
  queued: number;
  /** From the spawn to the first 220 greeting. */
  to220Ms: number;
  /** From the spawn to a fully indexed queue. */
  toIndexMs: number;
  /** How the end of indexing was seen: the `recovering` flag, or the depth. */
  indexedBy: 'recovering' | 'depth';
  depth: number;
  /** VmRSS after indexing and SETTLE_MS (median of 5 readings). */
  rss: number;
  /** Highest VmRSS sampled from start to the end of the settle time, and the kernel's VmHWM. */
  peakRss: number;
  hwm: number;
  /** CPU time of the relay from its start to the end of indexing. */
  cpuMs: number;
}

/** Waits for the 220 and the full index, sampling RSS throughout; then lets the process settle. */
async function measureStartup(r: Relay, queued: number, opts: Options): Promise<StartupFigures> {
  let peak = 0;
  const sampler = setInterval(() => (peak = Math.max(peak, rssBytes(r.pid) ?? 0)), SAMPLE_MS);
  const deadline = r.startedAt + opts.indexTimeoutMs;
  const died = () => new Error(`the relay exited while starting with ${queued} queued:\n${r.output()}`);
  try {
    let to220: number | undefined;
    const greet = (async () => {
      while (to220 === undefined && performance.now() < deadline) {
        if (!r.alive()) throw died();
        if (await probeSmtp(r.port, 5000)) to220 = performance.now() - r.startedAt;
        else await sleep(25);
      }
    })();
    let indexed: { at: number; by: 'recovering' | 'depth'; depth: number } | undefined;
    let lastReport = performance.now();
    let lastDepth: unknown;
    const index = (async () => {
      while (!indexed && performance.now() < deadline) {
        if (!r.alive()) throw died();
        const q = await getJson(r.adminPort, '/queue?limit=0');
        const t = performance.now();
        if (q) {
          lastDepth = q.depth;
          const depth = typeof q.depth === 'number' ? q.depth : NaN;
          if (typeof q.recovering === 'boolean') {
            if (!q.recovering) indexed = { at: t, by: 'recovering', depth };
          } else if (depth >= queued) indexed = { at: t, by: 'depth', depth };
        }
        if (t - lastReport > 10_000) {
          lastReport = t;
          log(
            `  ${queued} queued: ${secs(t - r.startedAt)} s, depth ${String(lastDepth ?? 'n/a (admin port not up)')}` +
              `, RSS ${fmtBytes(rssBytes(r.pid) ?? 0)}`,
          );
        }
        if (!indexed) await sleep(200);
      }
    })();
    await Promise.all([greet, index]);
    if (to220 === undefined || !indexed)
      throw new Error(
        `with ${queued} queued: ${to220 === undefined ? 'no 220' : 'queue not indexed'} within ` +
          `${opts.indexTimeoutMs / 1000} s (last depth ${String(lastDepth)}); raise --index-timeout`,
      );
    const cpuMs = treeCpuMs(r.pid);
    await sleep(SETTLE_MS);
    const readings: number[] = [];
    for (let i = 0; i < 5; i++) {
      readings.push(rssBytes(r.pid) ?? NaN);
      await sleep(200);
    }
    if (!r.alive()) throw died();
    readings.sort((a, b) => a - b);
    return {
      queued,
      to220Ms: to220,
      toIndexMs: indexed.at - r.startedAt,
      indexedBy: indexed.by,
      depth: indexed.depth,
      rss: readings[2],
      peakRss: peak,
      hwm: rssBytes(r.pid, 'VmHWM') ?? NaN,
      cpuMs,
    };
  } finally {
    clearInterval(sampler);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Large messages: C clients, one M MiB message each, all at once.

/** The message every client sends: headers and 78-character lines, exactly `bytes` long, no leading dots. */
function largeMessage(bytes: number): Buffer {
  const head =
    'From: <bench@source.test>\r\nTo: <sink@sink.test>\r\nSubject: large\r\n' +
    'Message-ID: <large@source.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n';
  const buf = Buffer.alloc(bytes, 'a');
  buf.write(head, 0, 'latin1');
  for (let i = head.length + 76; i + 1 < bytes; i += 78) buf.write('\r\n', i, 'latin1');
  buf.write('\r\n', bytes - 2, 'latin1');
  return buf;
}

/** One SMTP transaction over a raw socket; resolves with the final reply to DATA (e.g. "250 ..."). */
function sendOne(port: number, msg: Buffer, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = '';
    let step = 0;
    const timer = setTimeout(() => fail(new Error(`timed out at step ${step}`)), timeoutMs);
    const fail = (e: Error) => {
      clearTimeout(timer);
      sock.destroy();
      reject(e);
    };
    const commands = [
      'EHLO client.source.test',
      `MAIL FROM:<bench@source.test> SIZE=${msg.length}`,
      'RCPT TO:<sink@sink.test>',
      'DATA',
    ];
    const expect = ['220', '250', '250', '250', '354', '250'];
    sock.on('error', fail);
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      for (;;) {
        // one complete reply: lines up to one whose 4th character is a space
        const m = /^(?:\d{3}-[^\n]*\n)*(\d{3}) [^\n]*\n/.exec(buf);
        if (!m) return;
        const reply = m[0].trim();
        buf = buf.slice(m[0].length);
        if (m[1] !== expect[step]) return fail(new Error(`step ${step}: ${reply}`));
        if (step === 5) {
          clearTimeout(timer);
          sock.end('QUIT\r\n');
          return resolve(reply.split('\n').pop()!);
        }
        if (step === 4) {
          step++;
          if (sock.write(msg)) sock.write('.\r\n');
          else sock.once('drain', () => sock.write('.\r\n'));
          continue;
        }
        sock.write(`${commands[step]}\r\n`);
        step++;
      }
    });
  });
}

interface LargeFigures {
  clients: number;
  messageBytes: number;
  accepted: number;
  failures: string[];
  seconds: number;
  baseline: number;
  peak: number;
}

async function measureLarge(r: Relay, baseline: number, opts: Options): Promise<LargeFigures> {
  const msg = largeMessage(opts.messageMiB * MiB);
  let peak = baseline;
  const sampler = setInterval(() => (peak = Math.max(peak, rssBytes(r.pid) ?? 0)), SAMPLE_MS);
  const t0 = performance.now();
  try {
    const results = await Promise.allSettled(
      Array.from({ length: opts.clients }, () => sendOne(r.port, msg, 600_000)),
    );
    const seconds = (performance.now() - t0) / 1000;
    await sleep(500); // the last samples after the last 250
    const failures = results.flatMap((x) => (x.status === 'rejected' ? [(x.reason as Error).message] : []));
    return {
      clients: opts.clients,
      messageBytes: msg.length,
      accepted: results.length - failures.length,
      failures,
      seconds,
      baseline,
      peak,
    };
  } finally {
    clearInterval(sampler);
  }
}

// ---------------------------------------------------------------------------------------------------------

function table(
  baseline: StartupFigures,
  sizes: StartupFigures[],
  large: LargeFigures | undefined,
  failed: string[],
): string {
  const mib = (b: number) => (b / MiB).toFixed(0);
  const lines = [
    'Backlog benchmark: Cartero relay on a spool of N deferred 1 KB messages (4 tenants, 6 domains)',
    '',
    'queued     220 after  indexed after  index CPU   RSS MiB  RSS-empty MiB  bytes/msg  peak RSS MiB  indexed by',
    '---------  ---------  -------------  ---------  --------  -------------  ---------  ------------  ----------',
  ];
  for (const f of [baseline, ...sizes]) {
    const delta = f.rss - baseline.rss;
    lines.push(
      [
        f.queued.toLocaleString('en-US').padEnd(9),
        `${secs(f.to220Ms)} s`.padStart(9),
        `${secs(f.toIndexMs)} s`.padStart(13),
        `${secs(f.cpuMs)} s`.padStart(9),
        mib(f.rss).padStart(8),
        (f === baseline ? '—' : mib(delta)).padStart(13),
        (f === baseline ? '—' : (delta / f.queued).toFixed(0)).padStart(9),
        mib(Math.max(f.peakRss, f.hwm)).padStart(12),
        `${f.indexedBy}${f.depth !== f.queued ? ` (depth ${f.depth})` : ''}`,
      ].join('  '),
    );
  }
  if (sizes.length >= 2) {
    const [a, b] = [sizes[0], sizes[sizes.length - 1]];
    const k = b.queued / a.queued;
    lines.push(
      '',
      `ratios ${b.queued.toLocaleString('en-US')} ÷ ${a.queued.toLocaleString('en-US')} (×${k}): ` +
        `time to 220 ×${(b.to220Ms / a.to220Ms).toFixed(1)}, to index ×${(b.toIndexMs / a.toIndexMs).toFixed(1)}, ` +
        `RSS above empty ×${((b.rss - baseline.rss) / (a.rss - baseline.rss)).toFixed(1)}`,
    );
  }
  for (const f of sizes) {
    const targets = [`RSS ${mib(f.rss)} MiB`];
    if (f.queued >= 100_000)
      targets.push(`${((f.rss - baseline.rss) / f.queued).toFixed(0)} B/msg (target ≤ 1024)`);
    lines.push(
      `  ${f.queued.toLocaleString('en-US')} queued: ${targets.join(', ')}; 220 after ${secs(f.to220Ms)} s (target ≤ 5 s)` +
        (f.queued >= 1_000_000
          ? `; indexed after ${secs(f.toIndexMs)} s (target ≤ 60 s, RSS < 512 MiB)`
          : ''),
    );
  }
  if (large) {
    const total = large.clients * large.messageBytes;
    lines.push(
      '',
      `Large messages: ${large.clients} clients × ${mib(large.messageBytes)} MiB at once, empty spool: ` +
        `${large.accepted}/${large.clients} accepted (250) in ${large.seconds.toFixed(1)} s`,
      `  RSS before ${mib(large.baseline)} MiB, peak ${mib(large.peak)} MiB: peak − before = ` +
        `${mib(large.peak - large.baseline)} MiB = ${((large.peak - large.baseline) / total).toFixed(3)} × the ` +
        `${mib(total)} MiB sent; peak ÷ sent = ${(large.peak / total).toFixed(3)}`,
    );
    for (const f of large.failures.slice(0, 5)) lines.push(`  failed: ${f}`);
  }
  for (const f of failed) lines.push('', `not measured: ${f}`);
  return lines.join('\n');
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  if (!existsSync(MAIN_JS)) throw new Error(`${MAIN_JS} not found (build with npx tsc -p .)`);
  mkdirSync(path.join(opts.dir, 'logs'), { recursive: true });
  const env = environment();
  log(`commit ${String(env.commit)}, sizes ${opts.sizes.join(', ')}, scratch ${opts.dir}`);

  // Templates first, so that the relay runs are not interleaved with minutes of fsyncs.
  const templates = new Map<number, string>();
  for (const n of opts.sizes) templates.set(n, await template(opts, n));

  // A run's spool is removed only before the next run and after the results are out: removing a million
  // files takes minutes on some disks.
  const removeRunDirs = () => {
    for (const d of tempDirs) {
      const t0 = performance.now();
      removeDir(d);
      tempDirs.delete(d);
      log(`removed ${path.basename(d)} in ${secs(performance.now() - t0)} s`);
    }
  };
  const run = async <T>(queued: number, body: (r: Relay, runDir: string) => Promise<T>): Promise<T> => {
    removeRunDirs();
    const runDir = path.join(opts.dir, `run-${process.pid}-${queued}`);
    tempDirs.add(runDir);
    removeDir(runDir);
    mkdirSync(runDir, { recursive: true });
    const spoolDir = path.join(runDir, 'spool');
    if (queued > 0) {
      const ms = copySpool(templates.get(queued)!, spoolDir);
      log(`${queued} queued: spool copied in ${secs(ms)} s`);
    }
    const r = await startRelay(runDir, spoolDir, queued, opts);
    try {
      return await body(r, runDir);
    } finally {
      await stopChild(r.child, 'SIGTERM', 30_000);
    }
  };

  // Empty spool: the baseline, then (same process) the large-message load.
  log('empty spool: starting the relay');
  let large: LargeFigures | undefined;
  const baseline = await run(0, async (r) => {
    const f = await measureStartup(r, 0, opts);
    log(`empty spool: 220 after ${secs(f.to220Ms)} s, RSS ${fmtBytes(f.rss)}`);
    if (opts.large) {
      log(`large messages: ${opts.clients} clients × ${opts.messageMiB} MiB`);
      large = await measureLarge(r, f.rss, opts);
      log(`large messages: ${large.accepted}/${large.clients} accepted, peak RSS ${fmtBytes(large.peak)}`);
    }
    return f;
  });

  const sizes: StartupFigures[] = [];
  const failed: string[] = [];
  for (const n of opts.sizes) {
    log(`${n} queued: starting the relay`);
    try {
      const f = await run(n, (r) => measureStartup(r, n, opts));
      log(
        `${n} queued: 220 after ${secs(f.to220Ms)} s, indexed after ${secs(f.toIndexMs)} s, RSS ${fmtBytes(f.rss)}` +
          ` (${((f.rss - baseline.rss) / n).toFixed(0)} B/msg above empty)`,
      );
      sizes.push(f);
    } catch (e) {
      const msg = (e as Error).message;
      log(`${n} queued: failed: ${msg}`);
      failed.push(`${n} queued: ${msg.split('\n').slice(0, 6).join('\n    ')}`);
    }
  }

  console.log(table(baseline, sizes, large, failed));
  const resultsFile = path.join(REPO_ROOT, 'bench', 'results', 'backlog-latest.json');
  mkdirSync(path.dirname(resultsFile), { recursive: true });
  await writeFile(
    resultsFile,
    JSON.stringify(
      {
        generatedAt: new Date().toISOString(),
        command: ['node', 'dist/bench/backlog.js', ...process.argv.slice(2)].join(' '),
        environment: env,
        baseline,
        sizes: sizes.map((f) => ({ ...f, bytesPerMessage: (f.rss - baseline.rss) / f.queued })),
        large,
        failed,
      },
      null,
      2,
    ) + '\n',
  );
  console.error(`results: ${path.relative(REPO_ROOT, resultsFile)}`);
  removeRunDirs();
  if (failed.length > 0 || (large && large.accepted < large.clients)) process.exitCode = 1;
}

process.once('exit', () => {
  killAll();
  cleanupTemps();
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    console.error(`\n${sig}: stopping the relay and removing the run's spool`);
    process.exit(130);
  });
}

main().catch((e: unknown) => {
  console.error(`backlog benchmark failed: ${(e as Error).stack ?? String(e)}`);
  process.exitCode = 1;
});
