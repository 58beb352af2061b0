/**
 * Runs a real dnsmasq on a free loopback port for tests, serving a small zone from its command line.
 *
 * Everything is local: no upstream resolvers, no /etc/hosts, no config file. Every query is logged to a
 * file so tests can count what reached the server. A dnsmasq that is not stopped is killed when the test
 * process exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { promises as dns } from 'node:dns';
import { rmSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface DnsZone {
  /** MX records: `domain` has an MX pointing at `host` with preference `pref`. */
  mx?: { domain: string; host: string; pref: number }[];
  /** A records; repeat a name for several addresses. */
  a?: { name: string; ip: string }[];
  /** AAAA records; repeat a name for several addresses. */
  aaaa?: { name: string; ip: string }[];
  /**
   * PTR records only (no forward record): `ip`'s reverse name points at `name`. Note that `a`/`aaaa`
   * records also answer the reverse lookup of their address.
   */
  ptr?: { ip: string; name: string }[];
  /**
   * TXT records (e.g. DKIM keys at `<selector>._domainkey.<domain>`); a value longer than 255 octets is
   * served as several strings, which readers join (RFC 7208 3.3, RFC 6376 3.6.2.2).
   */
  txt?: { name: string; value: string }[];
  /** Domains with a null MX (`MX 0 .`, RFC 7505). */
  nullMx?: string[];
  /** Domains whose lookups (the domain and names under it) answer SERVFAIL. */
  servfail?: string[];
  /** Domains whose lookups get no answer at all, so clients time out. */
  noAnswer?: string[];
  /** Zones dnsmasq is authoritative for: unknown names under them are NXDOMAIN. Default `['test']`. */
  localDomains?: string[];
}

export interface DnsQuery {
  type: string;
  name: string;
}

export interface DnsServer {
  /** `127.0.0.1:PORT`, as `dns.servers` and `Resolver.setServers` take it. */
  server: string;
  port: number;
  /** Queries received so far, oldest first (readiness probes left out). */
  queries(): Promise<DnsQuery[]>;
  /** Stops dnsmasq (and its helper instance, if any) and waits for it to exit. Idempotent. */
  stop(): Promise<void>;
}

const DNSMASQ = process.env.DNSMASQ_BIN ?? '/usr/sbin/dnsmasq';
/** Asked while waiting for dnsmasq to come up; left out of `queries()`. */
const PROBE_NAME = 'cartero-ready-probe.invalid';
/**
 * Any DS digest will do: names under a trust anchor whose upstream serves no DNSSEC records validate
 * as BOGUS, which dnsmasq answers with SERVFAIL.
 */
const BOGUS_TRUST_ANCHOR = '20326,8,2,E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D';
const START_ATTEMPTS = 5;
const START_DEADLINE_MS = 10_000;
const STOP_DEADLINE_MS = 5_000;

/** What a test that never called `stop()` leaves behind, cleaned up when the process exits. */
const running = new Set<ChildProcess>();
const tempDirs = new Set<string>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

const NAME = /^[A-Za-z0-9_.-]+$/;
function checkName(name: string): string {
  if (!NAME.test(name)) throw new Error(`dnsmasq helper: unsupported DNS name ${JSON.stringify(name)}`);
  return name;
}

/** A port that is free for both UDP and TCP on 127.0.0.1 at the time of the call. */
async function freePort(): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    const tcp = net.createServer();
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen(0, '127.0.0.1', resolve);
    });
    const port = (tcp.address() as net.AddressInfo).port;
    const udp = dgram.createSocket('udp4');
    const udpFree = await new Promise<boolean>((resolve) => {
      udp.once('error', () => resolve(false));
      udp.bind(port, '127.0.0.1', () => resolve(true));
    });
    await new Promise<void>((resolve) => udp.close(() => resolve()));
    await new Promise<void>((resolve) => tcp.close(() => resolve()));
    if (udpFree) return port;
    if (attempt >= 20) throw new Error('dnsmasq helper: no port free for both UDP and TCP');
  }
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** True once the server on `port` answers at all (any rcode); false while it refuses or is silent. */
async function answers(port: number): Promise<boolean> {
  const resolver = new dns.Resolver({ timeout: 200, tries: 1 });
  resolver.setServers([`127.0.0.1:${port}`]);
  try {
    await resolver.resolve4(PROBE_NAME);
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code !== 'ECONNREFUSED' && code !== 'ETIMEOUT';
  }
}

interface Instance {
  port: number;
  stop(): Promise<void>;
}

/**
 * Starts one dnsmasq on a free port (or on `fixedPort`) with `args(port)`, retrying on another port if the
 * bind fails.
 */
async function startInstance(args: (port: number) => string[], fixedPort?: number): Promise<Instance> {
  for (let attempt = 1; ; attempt++) {
    const port = fixedPort ?? (await freePort());
    const child = spawn(DNSMASQ, args(port), { stdio: ['ignore', 'ignore', 'pipe'] });
    running.add(child);
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (s: string) => {
      if (stderr.length < 10_000) stderr += s;
    });
    const exited = new Promise<void>((resolve) => {
      child.once('exit', () => {
        running.delete(child);
        resolve();
      });
      child.once('error', (e) => {
        stderr += String(e);
        running.delete(child);
        resolve();
      });
    });
    const stop = async () => {
      if (child.exitCode !== null || child.signalCode !== null || !running.has(child)) return exited;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_DEADLINE_MS);
      await exited;
      clearTimeout(timer);
    };

    const deadline = Date.now() + START_DEADLINE_MS;
    let ready = false;
    while (!ready && running.has(child) && Date.now() < deadline) {
      ready = await answers(port);
      if (!ready) await delay(20);
    }
    if (ready && running.has(child)) return { port, stop };
    await stop();
    const inUse = /address (already )?in use/i.test(stderr);
    if (inUse && attempt < START_ATTEMPTS) {
      if (fixedPort !== undefined) await delay(100 * attempt); // wait for the port, not another one
      continue;
    }
    throw new Error(
      `dnsmasq did not start on port ${port}: ${stderr.trim() || 'no answer before the deadline'}`,
    );
  }
}

/**
 * Options every instance gets: foreground, on `address` (default 127.0.0.1) only, nothing from the host
 * system. The playground (scripts/playground.ts) starts its dnsmasq with these too.
 */
export function dnsmasqBaseArgs(port: number, address = '127.0.0.1'): string[] {
  return [
    '--keep-in-foreground',
    '--conf-file=/dev/null',
    '--no-resolv',
    '--no-hosts',
    '--no-poll',
    '--bind-interfaces',
    `--listen-address=${address}`,
    `--port=${port}`,
    '--pid-file', // no argument: write no pid file
    // As root dnsmasq would switch to its own user; stay root so a container without that user works.
    ...(process.getuid?.() === 0 ? ['--user=root'] : []),
  ];
}

/**
 * Starts dnsmasq serving `zone`; resolves once it answers queries. `opts.port`: on this port (e.g. the
 * port of a dnsmasq just stopped, to change the records a running relay sees: dnsmasq reads its
 * command-line records only at start).
 */
export async function startDns(zone: DnsZone, opts: { port?: number } = {}): Promise<DnsServer> {
  const servfail = (zone.servfail ?? []).map(checkName);
  const noAnswer = (zone.noAnswer ?? []).map(checkName);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'cartero-dnsmasq-'));
  tempDirs.add(dir);
  const logFile = path.join(dir, 'queries.log');
  const instances: Instance[] = [];
  const stopAll = async () => {
    await Promise.all(instances.map((i) => i.stop()));
    await rm(dir, { recursive: true, force: true });
    tempDirs.delete(dir);
  };

  try {
    const args: string[] = [];
    for (const d of zone.localDomains ?? ['test']) args.push(`--local=/${checkName(d)}/`);
    for (const m of zone.mx ?? [])
      args.push(`--mx-host=${checkName(m.domain)},${checkName(m.host)},${m.pref}`);
    for (const d of zone.nullMx ?? []) args.push(`--mx-host=${checkName(d)},.,0`);
    for (const t of zone.txt ?? []) {
      if (/["\\,]/.test(t.value))
        throw new Error(`dnsmasq helper: unsupported TXT value ${JSON.stringify(t.value)}`);
      const strings = t.value.match(/.{1,255}/gs) ?? [''];
      args.push(`--txt-record=${checkName(t.name)},${strings.join(',')}`); // argv: no quoting
    }
    for (const r of zone.ptr ?? []) {
      if (net.isIP(r.ip) !== 4) throw new Error(`dnsmasq helper: PTR records for IPv4 only: ${r.ip}`);
      const reverse = `${r.ip.split('.').reverse().join('.')}.in-addr.arpa`;
      args.push(`--ptr-record=${reverse},${checkName(r.name)}`);
    }
    for (const r of [...(zone.a ?? []), ...(zone.aaaa ?? [])]) {
      if (net.isIP(r.ip) === 0) throw new Error(`dnsmasq helper: not an IP address: ${r.ip}`);
      args.push(`--host-record=${checkName(r.name)},${r.ip}`);
    }
    if (noAnswer.length > 0) {
      // Nothing listens on a port just found free: forwarded queries go unanswered.
      const dead = await freePort();
      for (const d of noAnswer) args.push(`--server=/${d}/127.0.0.1#${dead}`);
    }
    if (servfail.length > 0) {
      // A dead upstream only makes dnsmasq time out (or answer REFUSED if it cannot send), never SERVFAIL.
      // So: forward to a second dnsmasq that serves the names unsigned, under a trust anchor that
      // cannot match; validation fails as BOGUS and dnsmasq answers SERVFAIL at once.
      const upstream = await startInstance((port) => [
        ...dnsmasqBaseArgs(port),
        ...servfail.map((d) => `--local=/${d}/`),
      ]);
      instances.push(upstream);
      args.push('--dnssec', `--trust-anchor=.,${BOGUS_TRUST_ANCHOR}`);
      for (const d of servfail) {
        args.push(`--server=/${d}/127.0.0.1#${upstream.port}`, `--trust-anchor=${d},${BOGUS_TRUST_ANCHOR}`);
      }
    }
    const main = await startInstance(
      (port) => [...dnsmasqBaseArgs(port), '--log-queries', `--log-facility=${logFile}`, ...args],
      opts.port,
    );
    instances.push(main);

    let stopped: Promise<void> | undefined;
    return {
      server: `127.0.0.1:${main.port}`,
      port: main.port,
      async queries() {
        // dnsmasq writes the log line before it answers, so a query already answered is in the file.
        const text = await readFile(logFile, 'utf8').catch(() => '');
        const out: DnsQuery[] = [];
        for (const m of text.matchAll(/\]: query\[(\w+)\] (\S+) from /g)) {
          if (m[2] !== PROBE_NAME) out.push({ type: m[1], name: m[2] });
        }
        return out;
      },
      stop: () => (stopped ??= stopAll()),
    };
  } catch (e) {
    await stopAll();
    throw e;
  }
}
