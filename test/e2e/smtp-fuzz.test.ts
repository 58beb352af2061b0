/**
 * 20,000 fuzzed SMTP sessions from untrusted addresses without AUTH against a real relay: protocol
 * fragments, mutated commands, binary garbage, relay tricks, pipelining, over-long lines, abrupt closes.
 * The relay must stay up, answer every session, keep its memory bounded and relay nothing. The PRNG is
 * seeded (CARTERO_FUZZ_SEED to replay a run; the seed is printed).
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { startTestMx, type TestMx } from '../helpers/testmx.js';
import { rawSmtp } from '../helpers/rawsmtp.js';

const SESSIONS = 20_000;
const PARALLEL = 64;
const seed = Number(process.env.CARTERO_FUZZ_SEED ?? Date.now() % 2 ** 31);

/** mulberry32: small, seedable. */
function prng(a: number): () => number {
  return () => {
    a |= 0;
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = prng(seed);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
const int = (n: number) => Math.floor(rand() * n);

const ADDRESSES = [
  '<a@dest.test>',
  '<>',
  '<postmaster>',
  '<a%b@dest.test>',
  '<@hop.test:a@dest.test>',
  '<dest.test!a>',
  '<"a@b"@dest.test>',
  '<a@[127.0.0.1]>',
  '<a@dest.test> SIZE=99999999999999999999',
  '<a@dest.test> BODY=8BITMIME SMTPUTF8',
  '<a@dest.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y',
  '<ä@dëst.test>',
  'a@dest.test',
  '<' + 'x'.repeat(600) + '@dest.test>',
];
const COMMANDS = [
  'EHLO fuzz.test',
  'HELO fuzz.test',
  'EHLO',
  'MAIL FROM:',
  'RCPT TO:',
  'DATA',
  'BDAT 10 LAST',
  'RSET',
  'NOOP',
  'VRFY root',
  'EXPN staff',
  'HELP',
  'STARTTLS',
  'AUTH PLAIN',
  'AUTH LOGIN',
  'AUTH CRAM-MD5',
  'AUTH PLAIN =',
  'AUTH PLAIN ' + Buffer.from('\0alice\0guess').toString('base64'),
  'AUTH XOAUTH2 ' + 'A'.repeat(100),
  'XCLIENT ADDR=127.0.0.1',
  'XFORWARD ADDR=127.0.0.1',
  'GET / HTTP/1.1',
  'QUIT',
];

function garbage(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = int(256);
  return b;
}

function mutate(line: string): string | Buffer {
  switch (int(8)) {
    case 0:
      return line.toLowerCase();
    case 1:
      return line + ' ' + 'A'.repeat(int(20_000));
    case 2:
      return line.replace(/ /g, '\t');
    case 3:
      return Buffer.concat([Buffer.from(line), garbage(int(64))]);
    case 4:
      return line.slice(0, int(line.length + 1));
    case 5:
      return line + '\0' + line;
    case 6:
      return line.split('').reverse().join('');
    default:
      return line;
  }
}

/** One fuzzed session's bytes. */
function session(): Buffer {
  const parts: Buffer[] = [];
  const steps = 1 + int(12);
  for (let s = 0; s < steps; s++) {
    let line: string | Buffer;
    const r = rand();
    if (r < 0.25) line = `MAIL FROM:${pick(ADDRESSES)}`;
    else if (r < 0.45) line = `RCPT TO:${pick(ADDRESSES)}`;
    else if (r < 0.85) line = pick(COMMANDS);
    else line = garbage(1 + int(300));
    if (typeof line === 'string' && rand() < 0.4) line = mutate(line);
    parts.push(Buffer.isBuffer(line) ? line : Buffer.from(line, 'utf8'));
    parts.push(Buffer.from(pick(['\r\n', '\r\n', '\r\n', '\n', '\r', '\r\n\r\n'])));
    if (rand() < 0.1) parts.push(Buffer.from('Subject: x\r\n\r\nbody\r\n.\r\n'));
  }
  return Buffer.concat(parts);
}

/** Sends a session's bytes (all at once, or in a few writes), then closes after the replies stop. */
function run(port: number, from: string, bytes: Buffer): Promise<number> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: from });
    let got = 0;
    let quiet: NodeJS.Timeout | undefined;
    const end = () => {
      clearTimeout(quiet);
      socket.destroy();
      resolve(got);
    };
    const hard = setTimeout(end, 5_000);
    socket.on('data', (d) => {
      const first = got === 0;
      got += d.length;
      if (first) {
        const abrupt = rand() < 0.1;
        if (abrupt) {
          socket.write(bytes.subarray(0, int(bytes.length + 1)));
          return setImmediate(() => (clearTimeout(hard), end()));
        }
        socket.write(bytes);
      }
      clearTimeout(quiet);
      quiet = setTimeout(() => (clearTimeout(hard), end()), 150);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => (clearTimeout(hard), end()));
  });
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

let relay: RelayProc;
let mx: TestMx;

before(async () => {
  mx = await startTestMx();
  relay = await startRelay({
    config: {
      hostname: 'relay.test',
      trustedNetworks: [],
      accounts: [{ username: 'alice', passwordFile: 'alice' }],
      routing: {
        default: { type: 'smarthost', smarthost: { host: '127.0.0.1', port: mx.port, tls: 'none' } },
      },
      limits: { maxConnections: 1000, auth: { failureDelay: '10ms', maxFailureDelay: '20ms' } },
    },
    secrets: { alice: 'the-Right-pa55word' },
  });
});

after(async () => {
  await relay?.cleanup();
  await mx?.close();
});

it(`${SESSIONS.toLocaleString('en')} fuzzed sessions: the relay stays up, bounded, and relays nothing`, async () => {
  console.log(`# fuzz seed ${seed} (CARTERO_FUZZ_SEED=${seed} replays it)`);
  const baseline = rssKiB(relay.pid);
  let peak = baseline;
  let answered = 0;
  let next = 0;
  const sampler = setInterval(() => (peak = Math.max(peak, rssKiB(relay.pid))), 200);
  try {
    await Promise.all(
      Array.from({ length: PARALLEL }, async () => {
        while (next < SESSIONS) {
          const n = next++;
          // spread over 200 addresses, so the per-address connection rate is not what stops the fuzzer
          const got = await run(relay.ports.smtp, `127.3.${n % 200}.1`, session());
          if (got > 0) answered++;
        }
      }),
    );
  } finally {
    clearInterval(sampler);
  }
  // every session got at least a greeting (or a 421 from a limit)
  assert.ok(answered >= SESSIONS * 0.99, `${answered} of ${SESSIONS} sessions answered`);
  // still up and serving
  assert.equal((await fetch(`http://127.0.0.1:${relay.adminPort}/healthz`)).status, 200);
  const replies = await rawSmtp(relay.ports.smtp, ['EHLO after.test', 'QUIT']);
  assert.match(replies[1], /^250/);
  assert.equal(
    await Promise.race([relay.exited.then(() => 'exited'), Promise.resolve('running')]),
    'running',
  );
  // nothing from an untrusted, unauthenticated source was queued or delivered
  const q = (await (await fetch(`http://127.0.0.1:${relay.adminPort}/queue`)).json()) as { depth: number };
  assert.equal(q.depth, 0);
  assert.equal(mx.messages.length, 0);
  assert.equal(relay.logs.filter((l) => l.event === 'received').length, 0);
  assert.equal(relay.logs.filter((l) => l.event === 'smtp.handler.error').length, 0, 'no handler crashed');
  const grewMiB = (peak - baseline) / 1024;
  console.log(`# fuzz: RSS ${Math.round(baseline / 1024)} MiB before, peak +${grewMiB.toFixed(0)} MiB`);
  assert.ok(grewMiB < 256, `memory bounded (peak grew ${grewMiB.toFixed(0)} MiB)`);
});
