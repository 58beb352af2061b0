/**
 * Abuse resistance, tried as an attacker would, on a real relay over loopback: password guessing on one
 * connection, from one address and from many; connection floods; clients that trickle bytes. Client
 * addresses are spread over 127.0.0.0/8 (every one of them reaches a listener on 127.0.0.1).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { rawSmtp } from '../helpers/rawsmtp.js';
import { waitFor } from '../helpers/poll.js';

const USER = 'alice';
const PASS = 's3cret-Pa55';
const plain = (user: string, pass: string) =>
  `AUTH PLAIN ${Buffer.from(`\0${user}\0${pass}`).toString('base64')}`;

async function metric(relay: RelayProc, re: RegExp): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${relay.adminPort}/metrics`)).text();
  const m = re.exec(text);
  return m ? Number(m[1]) : 0;
}

/** One connection from `from`: EHLO, then AUTH with each password until the server closes. */
async function authSession(
  relay: RelayProc,
  from: string,
  passwords: string[],
  user = USER,
): Promise<string[]> {
  const replies = await rawSmtp(
    relay.ports.submission,
    ['EHLO attacker.test', ...passwords.map((p) => plain(user, p))],
    {
      localAddress: from,
      timeoutMs: 15_000,
    },
  );
  return replies.slice(2); // the greeting and the EHLO reply
}

describe('AUTH throttling', () => {
  let relay: RelayProc;
  before(async () => {
    relay = await startRelay({
      config: {
        hostname: 'relay.test',
        listeners: [{ name: 'submission', auth: 'required' }],
        trustedNetworks: ['127.0.9.0/24'],
        accounts: [
          { username: USER, passwordFile: 'alice' },
          { username: 'bob', passwordFile: 'bob' },
        ],
        limits: {
          auth: {
            failuresPerConnection: 3,
            failureDelay: '20ms',
            maxFailureDelay: '40ms',
            clientFailures: 10,
            accountFailures: 25,
            window: '10m',
            lockout: '20s', // longer than the 1,000 attempts take, even on a loaded machine
          },
        },
      },
      secrets: { alice: PASS, bob: 'b0b-Pa55word' },
    });
  });
  after(async () => {
    await relay?.cleanup();
  });

  it('1,000 wrong passwords from one address: 3 per connection, then a lock that refuses the right one too', async () => {
    const from = '127.0.5.1';
    let attempts = 0;
    let connections = 0;
    const codes = new Map<string, number>();
    while (attempts < 1000) {
      const replies = await authSession(
        relay,
        from,
        Array.from({ length: 10 }, (_, i) => `wrong-${attempts + i}`),
      );
      connections++;
      assert.ok(replies.length <= 3, `at most 3 AUTH answers per connection, got ${JSON.stringify(replies)}`);
      assert.match(replies.at(-1)!, /^421 4\.7\.0 /, 'the third failure closes the connection');
      for (const r of replies) codes.set(r.slice(0, 3), (codes.get(r.slice(0, 3)) ?? 0) + 1);
      attempts += replies.length;
    }
    // 10 failures lock the address; from then on every attempt is refused without a password check
    assert.ok(
      (codes.get('535') ?? 0) <= 10,
      `at most the budget answered 535: ${JSON.stringify([...codes])}`,
    );
    assert.ok((codes.get('454') ?? 0) > 500, `the lock answered 454: ${JSON.stringify([...codes])}`);
    assert.ok(connections >= 334);

    // the right password from the locked address: refused, as a wrong one would be
    const during = await authSession(relay, from, [PASS]);
    assert.match(during[0], /^454 4\.7\.0 /);
    // another address is not locked
    assert.match((await authSession(relay, '127.0.5.2', [PASS]))[0], /^235 /);

    const lockLines = relay.logs.filter((l) => l.event === 'auth.lockout' && l.client === from);
    assert.equal(lockLines.length, 1, 'one log line for the lockout');
    const failedLines = relay.logs.filter((l) => l.event === 'auth.failed' && l.client === from);
    assert.ok(failedLines.length < 10, `no log line per attempt once locked (${failedLines.length})`);
    assert.equal(await metric(relay, /^cartero_auth_lockouts_total\{scope="client"\} (\d+)$/m), 1);
    assert.ok(
      (await metric(
        relay,
        /^cartero_auth_failures_total\{listener="submission",reason="locked_client"\} (\d+)$/m,
      )) > 500,
    );
    assert.equal(await metric(relay, /^cartero_auth_locked_clients (\d+)$/m), 1);

    // after the lock, the right password works again
    await waitFor(async () => /^235 /.test((await authSession(relay, from, [PASS]))[0]), {
      what: 'the lock to end',
      timeoutMs: 40_000,
      intervalMs: 500,
    });
  });

  it('20 addresses against one account: the account lock holds for every untrusted address, not trusted ones', async () => {
    // 20 addresses × 2 failures = 40 > 25: none reaches its own budget of 10, the account does
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        authSession(relay, `127.0.6.${i + 1}`, ['nope-1', 'nope-2'], 'bob'),
      ),
    );
    const fresh = await authSession(relay, '127.0.6.200', ['b0b-Pa55word'], 'bob');
    assert.match(
      fresh[0],
      /^454 4\.7\.0 /,
      'the right password from a new address is refused while bob is locked',
    );
    // the same reply as for a locked account that does not exist: nothing tells which accounts exist
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => authSession(relay, `127.0.7.${i + 1}`, ['x', 'y'], 'nobody')),
    );
    assert.deepEqual(
      (await authSession(relay, '127.0.7.200', ['x'], 'nobody')).map((r) => r.slice(0, 9)),
      [fresh[0].slice(0, 9)],
    );
    // trusted networks are exempt from the locks
    assert.match((await authSession(relay, '127.0.9.1', ['b0b-Pa55word'], 'bob'))[0], /^235 /);
    assert.equal(
      relay.logs.filter((l) => l.event === 'auth.lockout' && l.username === 'bob').length,
      1,
      'one log line for the account lock',
    );
    // alice (another account) is not locked
    assert.match((await authSession(relay, '127.0.6.201', [PASS]))[0], /^235 /);
  });
});

/** Opens a connection from `from` and resolves with its first reply line (or 'closed'); keeps it open. */
function hold(port: number, from: string): Promise<{ socket: net.Socket; greeting: string }> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: from });
    let buf = '';
    const done = (greeting: string) => {
      socket.removeAllListeners('data');
      resolve({ socket, greeting });
    };
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      buf += d;
      if (buf.includes('\n')) done(buf.split('\r\n')[0]);
    });
    socket.on('error', () => done('error'));
    socket.on('close', () => done(buf ? buf.split('\r\n')[0] : 'closed'));
  });
}

/** Reads what the server sends on `socket` until it closes; resolves with the text and when it closed. */
function untilClosed(socket: net.Socket): Promise<{ text: string; closedAt: number }> {
  return new Promise((resolve) => {
    let text = '';
    socket.on('data', (d: Buffer | string) => (text += d.toString()));
    socket.on('error', () => undefined);
    if (socket.destroyed) resolve({ text, closedAt: Date.now() });
    else socket.on('close', () => resolve({ text, closedAt: Date.now() }));
  });
}

/** Sends `text` one byte every `everyMs` until the socket closes (a client that trickles). */
function trickle(socket: net.Socket, text: string, everyMs: number): void {
  let i = 0;
  const t = setInterval(() => {
    if (socket.destroyed || !socket.writable) return clearInterval(t);
    socket.write(text[i++ % text.length]);
  }, everyMs);
  t.unref();
  socket.on('close', () => clearInterval(t));
}

/** A whole transaction from a trusted address; resolves with every reply. */
function trustedMail(relay: RelayProc, from: string): Promise<string[]> {
  return rawSmtp(
    relay.ports.smtp,
    [
      'EHLO app.test',
      'MAIL FROM:<app@src.test>',
      'RCPT TO:<someone@dest.test>',
      'DATA',
      { raw: 'Subject: hi\r\n\r\nhello\r\n.\r\n', expectReplies: 1 },
      'QUIT',
    ],
    { localAddress: from, timeoutMs: 15_000 },
  );
}

/** A relay started with `config` before the suite's tests, and the sockets they open; all closed after. */
function relayForSuite(config: Record<string, unknown>): { relay: RelayProc; sockets: net.Socket[] } {
  const suite = { relay: undefined as unknown as RelayProc, sockets: [] as net.Socket[] };
  before(async () => {
    suite.relay = await startRelay({ config });
  });
  after(async () => {
    for (const s of suite.sockets) s.destroy();
    await suite.relay?.cleanup();
  });
  return suite;
}

describe('connection floods and slow clients', () => {
  const suite = relayForSuite({
    hostname: 'relay.test',
    // the flood's deadline is longer than opening 3,000 connections takes on a loaded machine (else the
    // first ones are cut, and their slots taken again, before the last ones arrive); the tricklers use
    // a listener of their own with a short one
    listeners: [
      { name: 'smtp', limits: { maxConnectionsPerClient: 20, commandTimeout: '30s' } },
      { name: 'slow', limits: { commandTimeout: '4s' } },
    ],
    trustedNetworks: ['127.0.9.0/24'],
    // mail from the trusted client goes nowhere it could be delivered: it stays queued
    routing: { default: { type: 'smarthost', smarthost: { host: '127.0.0.1', port: 9, tls: 'none' } } },
    limits: {
      maxConnections: 1000,
      reservedForTrusted: 50,
      minDataRate: 200,
      stress: { commandTimeout: '30s', idleTimeout: '1m' },
    },
  });

  it('3,000 idle connections: per-address cap, a reserve for trusted clients, all cut at the command deadline', async () => {
    // 60 untrusted addresses try 50 connections each, one after the other; 20 each are allowed, and
    // untrusted clients 950 in all
    const opened: {
      from: string;
      socket: net.Socket;
      greeting: string;
      closed: Promise<{ text: string; closedAt: number }>;
    }[] = [];
    for (let batch = 0; batch < 15; batch++) {
      const got = await Promise.all(
        Array.from({ length: 200 }, async (_, i) => {
          const n = batch * 200 + i;
          const from = `127.1.${Math.floor(n / 50)}.1`;
          const h = await hold(suite.relay.ports.smtp, from);
          suite.sockets.push(h.socket);
          return { from, ...h, closed: untilClosed(h.socket) };
        }),
      );
      opened.push(...got);
    }
    const admitted = opened.filter((o) => o.greeting.startsWith('220 '));
    const perAddress = new Map<string, number>();
    for (const o of admitted) perAddress.set(o.from, (perAddress.get(o.from) ?? 0) + 1);
    assert.ok(Math.max(...perAddress.values()) <= 20, 'at most 20 per address');
    assert.ok(
      admitted.length <= 950,
      `untrusted clients leave the reserve free (${admitted.length} admitted)`,
    );
    for (const o of opened.filter((x) => !x.greeting.startsWith('220 ')))
      assert.match(o.greeting, /^421 |^closed$|^error$/, o.greeting);
    assert.ok(
      opened.some((o) => /^421 4\.7\.0 Too many concurrent connections from your address/.test(o.greeting)),
      'the per-address cap answered',
    );

    // a trusted client is served while the flood holds every untrusted slot
    const t0 = Date.now();
    const replies = await trustedMail(suite.relay, '127.0.9.1');
    assert.match(replies[5] ?? '', /^250 /, JSON.stringify(replies));
    const trustedMs = Date.now() - t0;

    // nobody completed a command: every admitted connection is cut at the deadline (30 s), with a 421
    const ends = await Promise.all(admitted.map((o) => o.closed));
    for (const e of ends) assert.match(e.text, /421 4\.4\.2 Error: timeout exceeded/, e.text);
    assert.ok(
      (await metric(
        suite.relay,
        /^cartero_smtp_rejected_total\{listener="smtp",reason="client_connections"\} (\d+)$/m,
      )) > 0,
    );
    assert.ok(
      (await metric(
        suite.relay,
        /^cartero_smtp_rejected_total\{listener="smtp",reason="command_timeout"\} (\d+)$/m,
      )) >= admitted.length,
    );
    console.log(`# flood: ${admitted.length} of 3000 admitted, trusted transaction in ${trustedMs} ms`);
  });

  it('200 clients that trickle a byte at a time are cut within the deadline, in commands and in DATA', async () => {
    const started = Date.now();
    const slow = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        // the DATA tricklers come from the trusted network (untrusted ones never get to DATA without AUTH):
        // trusted clients are exempt from the per-address caps, not from deadlines
        const h = await hold(suite.relay.ports.slow, i < 150 ? `127.2.${i % 10}.1` : `127.0.9.${i - 140}`);
        suite.sockets.push(h.socket);
        assert.match(h.greeting, /^220 /);
        const closed = untilClosed(h.socket);
        if (i < 150) {
          // a command line that never ends in time: one byte every 200 ms
          trickle(h.socket, 'EHLO slow-client.example.test', 200);
        } else {
          // a message that arrives at 5 bytes a second, below minDataRate (200 B/s)
          h.socket.write('EHLO slow.test\r\nMAIL FROM:<a@src.test>\r\nRCPT TO:<b@dest.test>\r\nDATA\r\n');
          trickle(h.socket, 'Subject: slow\r\n\r\nxxxxxxxxxxxxxxxxxxxx\r\n', 200);
        }
        return closed;
      }),
    );
    const cmd = slow.slice(0, 150);
    const data = slow.slice(150);
    for (const e of cmd) assert.match(e.text, /421 4\.4\.2 Error: timeout exceeded/, e.text);
    for (const e of data) {
      assert.match(e.text, /^354 /m, e.text);
      assert.match(e.text, /421 4\.4\.2 Error: data transfer too slow/, e.text);
    }
    assert.equal(
      await metric(
        suite.relay,
        /^cartero_smtp_rejected_total\{listener="slow",reason="data_too_slow"\} (\d+)$/m,
      ),
      50,
    );
    const worst = Math.max(...slow.map((e) => e.closedAt - started));
    // the deadline is 4 s, checked every second; the idle timer (5 m) would never have fired
    assert.ok(worst < 15_000, `every slow client was cut (${worst} ms)`);
  });
});

describe('stress mode', () => {
  const suite = relayForSuite({
    hostname: 'relay.test',
    trustedNetworks: [],
    limits: {
      maxConnections: 20,
      reservedForTrusted: 0,
      commandTimeout: '5m',
      stress: { threshold: 0.5, commandTimeout: '2s', idleTimeout: '2s' },
    },
  });

  it('from half of maxConnections open, idle clients get the short stress deadline, and stress ends with the load', async () => {
    const stress = () => metric(suite.relay, /^cartero_smtp_stress\{listener="smtp"\} (\d+)$/m);
    // 10 busy clients (a NOOP every 300 ms keeps each within its deadline) hold the listener at its
    // threshold (10 of 20) for as long as the test needs
    const busy = await Promise.all(
      Array.from({ length: 10 }, (_, i) => hold(suite.relay.ports.smtp, `127.4.0.${i + 1}`)),
    );
    suite.sockets.push(...busy.map((h) => h.socket));
    const timers = busy.map((h) => setInterval(() => h.socket.write('NOOP\r\n'), 300));
    try {
      await waitFor(async () => (await stress()) === 1, { what: 'stress mode' });
      assert.ok(suite.relay.logs.some((l) => l.event === 'smtp.stress.on'));
      // idle clients now get the 2 s stress deadline, not the normal 5 minutes
      const idle = await Promise.all(
        Array.from({ length: 5 }, (_, i) => hold(suite.relay.ports.smtp, `127.4.1.${i + 1}`)),
      );
      suite.sockets.push(...idle.map((h) => h.socket));
      for (const h of idle) assert.match(h.greeting, /^220 /);
      const ends = await Promise.all(idle.map((h) => untilClosed(h.socket)));
      // whichever of the two stress timeouts (command deadline, idle timer; both 2 s) fires first
      for (const e of ends)
        assert.match(e.text, /^421 (4\.4\.2 Error: timeout exceeded|Timeout - closing connection)/);
      for (const h of busy) assert.ok(!h.socket.destroyed, 'busy clients keep their connections');
    } finally {
      for (const t of timers) clearInterval(t);
    }
    for (const h of busy) h.socket.destroy();
    await waitFor(async () => (await stress()) === 0, { what: 'stress mode to end' });
    await waitFor(() => suite.relay.logs.some((l) => l.event === 'smtp.stress.off'), {
      what: 'smtp.stress.off',
    });
  });
});
