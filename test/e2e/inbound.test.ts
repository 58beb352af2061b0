/**
 * Inbound SMTP against a real relay process: no open relay, AUTH, TLS, protocol abuse, limits, SMTP
 * smuggling, loops and graceful shutdown. Accepted mail is routed to a test MX, so a test can check that it
 * arrives (or that nothing does).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import nodemailer from 'nodemailer';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { startTestMx, type TestMx } from '../helpers/testmx.js';
import { rawSmtp } from '../helpers/rawsmtp.js';
import { sendMail, swaks } from '../helpers/swaks.js';
import { waitFor } from '../helpers/poll.js';
import { makeSelfSignedCert, type TestCert } from '../helpers/certs.js';
import { connectSmtp } from '../helpers/tls-probe.js';

const USER = 'alice';
const PASS = 's3cret-Pa55';
const AUTH_PLAIN = `AUTH PLAIN ${Buffer.from(`\0${USER}\0${PASS}`).toString('base64')}`;
const QUEUED_RE = /^250 2\.0\.0 Ok: queued as ([0-9A-Z]{20})$/;

/** Config for a relay that nobody may use without AUTH, sending everything to `mx`. */
function relayConfig(mx: TestMx, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    hostname: 'relay.test',
    trustedNetworks: [],
    accounts: [{ username: USER, passwordFile: 'alice' }],
    routing: { default: { type: 'smarthost', smarthost: { host: '127.0.0.1', port: mx.port, tls: 'none' } } },
    ...extra,
  };
}

interface QueueView {
  depth: number;
  recovering: boolean;
  activeDeliveries: number;
  messages: { id: string; attempts: number; rcpts: { address: string; status: string }[] }[];
}

async function queue(relay: RelayProc): Promise<QueueView> {
  const res = await fetch(`http://127.0.0.1:${relay.adminPort}/queue`);
  assert.equal(res.status, 200);
  return (await res.json()) as QueueView;
}

/** Waits until everything the relay accepted has left the queue (delivered or dropped). */
async function drained(relay: RelayProc): Promise<void> {
  await waitFor(async () => (await queue(relay)).depth === 0, { what: 'an empty relay queue' });
}

/** A small message; `extraHead` goes before the other header fields. */
function message(subject: string, body = 'hello\r\n', extraHead = ''): string {
  return `${extraHead}From: <sender@src.test>\r\nTo: <rcpt@dest.test>\r\nSubject: ${subject}\r\n\r\n${body}`;
}

/** A whole authenticated transaction over a raw socket; resolves with every reply. */
function rawTransaction(port: number, rcpts: string[], data: string | Buffer): Promise<string[]> {
  return rawSmtp(port, [
    'EHLO client.test',
    AUTH_PLAIN,
    'MAIL FROM:<sender@src.test>',
    ...rcpts.map((r) => `RCPT TO:<${r}>`),
    'DATA',
    { raw: Buffer.concat([Buffer.from(data), Buffer.from('\r\n.\r\n')]), expectReplies: 1 },
    'QUIT',
  ]);
}

/** STARTTLS by hand, then a TLS handshake limited to the given protocol versions. */
async function starttlsHandshake(
  port: number,
  ca: Buffer,
  minVersion: tls.SecureVersion,
  maxVersion: tls.SecureVersion,
): Promise<{ protocol: string | null } | { error: NodeJS.ErrnoException }> {
  const c = await connectSmtp(port);
  try {
    assert.match(await c.next(), /^220 /);
    assert.match(await c.command('EHLO client.test'), /^250-STARTTLS$/m);
    assert.match(await c.command('STARTTLS'), /^220 /);
    const socket = c.detach();
    return await new Promise((resolve) => {
      // SECLEVEL=0 lets this client really offer TLS 1.0/1.1, so a failure is the server's refusal
      const t = tls.connect({
        socket,
        ca,
        servername: 'localhost',
        minVersion,
        maxVersion,
        ciphers: 'DEFAULT@SECLEVEL=0',
      });
      const timer = setTimeout(
        () => resolve({ error: Object.assign(new Error('handshake timed out'), { code: 'TIMEOUT' }) }),
        10_000,
      );
      t.once('secureConnect', () => {
        clearTimeout(timer);
        resolve({ protocol: t.getProtocol() });
        t.destroy();
      });
      t.once('error', (error: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        resolve({ error });
      });
    });
  } finally {
    c.socket.destroy();
  }
}

describe('inbound SMTP on plaintext listeners (untrusted network)', () => {
  let mx: TestMx;
  let relay: RelayProc;

  before(async () => {
    mx = await startTestMx();
    relay = await startRelay({
      config: relayConfig(mx, {
        listeners: [{ name: 'smtp' }, { name: 'submission', auth: 'required' }],
        limits: { maxRecipients: 2, maxMessageSize: 2048 },
      }),
      secrets: { alice: `${PASS}\n` },
    });
  });

  after(async () => {
    await relay?.cleanup();
    await mx?.close();
  });

  it('is not an open relay: unauthenticated RCPT is refused, whatever the address trick', async () => {
    const before = mx.messages.length;
    const attemptsBefore = mx.rcptAttempts.length;
    const tricks: [string, RegExp][] = [
      ['ok@dest.test', /^550 5\.7\.1 <ok@dest\.test>: Relay access denied$/],
      ['a%b@x.test', /^550 5\.7\.1 /],
      ['x!y@z.test', /^550 5\.7\.1 /],
      ['@a.test:b@c.test', /^550 5\.7\.1 /],
      ['"a b"@x.test', /^501 /],
      ['"a"@x.test', /^550 5\.7\.1 /],
      ['a@b@x.test', /^501 /],
      ['user', /^501 /],
      ['user@localhost', /^550 5\.7\.1 /],
      ['u@[127.0.0.1]', /^550 5\.7\.1 /],
    ];
    const replies = await rawSmtp(relay.ports.smtp, [
      'EHLO client.test',
      'MAIL FROM:<sender@src.test>',
      ...tricks.map(([t]) => `RCPT TO:<${t}>`),
      'DATA',
      'QUIT',
    ]);
    assert.doesNotMatch(replies[1], /STARTTLS/, 'a plaintext listener does not offer STARTTLS');
    assert.match(replies[2], /^250 /, 'MAIL FROM is fine');
    tricks.forEach(([addr, want], i) => assert.match(replies[3 + i], want, `RCPT TO:<${addr}>`));
    assert.match(replies[3 + tricks.length], /^503 /, 'DATA without an accepted recipient');
    assert.equal((await queue(relay)).depth, 0);
    assert.equal(mx.messages.length, before);
    assert.equal(mx.rcptAttempts.length, attemptsBefore, 'the relay never tried to deliver anything');
  });

  it('refuses the address tricks for authenticated clients too, and relays a plain address', async () => {
    const before = mx.messages.length;
    const replies = await rawSmtp(relay.ports.smtp, [
      'EHLO client.test',
      AUTH_PLAIN,
      'MAIL FROM:<sender@src.test>',
      'RCPT TO:<a%b@x.test>',
      'RCPT TO:<x!y@z.test>',
      'RCPT TO:<"a"@x.test>',
      'RCPT TO:<user@localhost>',
      'RCPT TO:<u@[127.0.0.1]>',
      `RCPT TO:<${'a'.repeat(300)}@dest.test>`,
      'RCPT TO:<ok-authed@dest.test>',
      'DATA',
      { raw: `${message('authed')}\r\n.\r\n`, expectReplies: 1 },
      'QUIT',
    ]);
    assert.match(replies[2], /^235 /);
    assert.match(replies[4], /^553 5\.1\.3 <a%b@x\.test>: routing characters/);
    assert.match(replies[5], /^553 5\.1\.3 <x!y@z\.test>: routing characters/);
    assert.match(replies[6], /^553 5\.1\.3 .*quoted local parts/);
    assert.match(replies[7], /^553 5\.1\.3 .*not fully qualified/);
    assert.match(replies[8], /^553 5\.1\.3 .*address literals/);
    assert.match(replies[9], /^(501|553) /, 'an address longer than 256 octets');
    assert.match(replies[10], /^250 /);
    assert.match(replies[12], QUEUED_RE);
    const [msg] = await waitFor(() => mx.messages.length > before && mx.messages.slice(before), {
      what: 'the relayed message',
    });
    assert.deepEqual(msg.rcptTo, ['ok-authed@dest.test']);
    await drained(relay);
    assert.equal(mx.messages.length, before + 1);
  });

  it('relays with AUTH PLAIN and AUTH LOGIN (swaks) and refuses a bad password with 535 5.7.8', async () => {
    const common = [
      '--server',
      '127.0.0.1',
      '--port',
      String(relay.ports.smtp),
      '--from',
      'sender@src.test',
      '--helo',
      'client.test',
      '--timeout',
      '15',
    ];
    const plain = await swaks([
      ...common,
      '--to',
      'ok-plain@dest.test',
      '--auth',
      'PLAIN',
      '--auth-user',
      USER,
      '--auth-password',
      PASS,
    ]);
    assert.equal(plain.code, 0, plain.stdout + plain.stderr);
    assert.match(plain.stdout, /^<- {2}235 /m);
    const login = await swaks([
      ...common,
      '--to',
      'ok-login@dest.test',
      '--auth',
      'LOGIN',
      '--auth-user',
      USER,
      '--auth-password',
      PASS,
    ]);
    assert.equal(login.code, 0, login.stdout + login.stderr);
    assert.match(login.stdout, /^<- {2}235 /m);
    const bad = await swaks([
      ...common,
      '--to',
      'ok-badpass@dest.test',
      '--auth',
      'PLAIN',
      '--auth-user',
      USER,
      '--auth-password',
      'wrong',
    ]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stdout, /^<\S* +535 5\.7\.8 Authentication credentials invalid/m);

    await waitFor(
      () => mx.byRecipient('ok-plain@dest.test').length && mx.byRecipient('ok-login@dest.test').length,
      {
        what: 'both authenticated messages at the test MX',
      },
    );
    await drained(relay);
    assert.equal(mx.byRecipient('ok-badpass@dest.test').length, 0);
  });

  it('requires AUTH before MAIL on an auth: required listener', async () => {
    const badAuth = `AUTH PLAIN ${Buffer.from(`\0${USER}\0nope`).toString('base64')}`;
    const replies = await rawSmtp(relay.ports.submission, [
      'EHLO client.test',
      'MAIL FROM:<sender@src.test>',
      badAuth,
      'MAIL FROM:<sender@src.test>',
      AUTH_PLAIN,
      'MAIL FROM:<sender@src.test>',
      'RCPT TO:<ok-submission@dest.test>',
      'RSET',
      'QUIT',
    ]);
    assert.match(replies[1], /^250-AUTH PLAIN LOGIN$/m);
    assert.match(replies[2], /^530 /);
    assert.match(replies[3], /^535 5\.7\.8 /);
    assert.match(replies[4], /^530 /);
    assert.match(replies[5], /^235 /);
    assert.match(replies[6], /^250 /);
    assert.match(replies[7], /^250 /);
  });

  it('answers commands out of order with 503, unknown ones with 500, and stays usable', async () => {
    const replies = await rawSmtp(relay.ports.smtp, [
      'EHLO client.test',
      'DATA',
      'RCPT TO:<ok@dest.test>',
      'FROB nicate',
      AUTH_PLAIN,
      'DATA',
      'MAIL FROM:<sender@src.test>',
      'MAIL FROM:<sender2@src.test>',
      'RSET',
      'NOOP',
      'QUIT',
    ]);
    assert.match(replies[2], /^503 /, 'DATA before MAIL/RCPT');
    assert.match(replies[3], /^503 /, 'RCPT before MAIL');
    assert.match(replies[4], /^500 /, 'unknown command');
    assert.match(replies[5], /^235 /, 'AUTH still works');
    assert.match(replies[6], /^503 /, 'DATA before RCPT');
    assert.match(replies[7], /^250 /);
    assert.match(replies[8], /^503 /, 'nested MAIL');
    assert.match(replies[9], /^250 /);
    assert.match(replies[10], /^250 /);
    assert.match(replies[11], /^221 /);
  });

  it('refuses an over-long command line', async () => {
    const replies = await rawSmtp(relay.ports.smtp, [
      'EHLO client.test',
      `NOOP ${'x'.repeat(20_000)}`,
      'NOOP',
    ]);
    assert.equal(
      replies.length,
      3,
      `the connection is closed after the refusal: ${JSON.stringify(replies.slice(2))}`,
    );
    assert.match(replies[2], /^(421|5\d\d) .*too long/i);
  });

  it('refuses an oversize message with 552 and queues nothing', async () => {
    const big = message('big', `${'x'.repeat(76)}\r\n`.repeat(40));
    assert.ok(big.length > 3000);
    const replies = await rawSmtp(relay.ports.smtp, [
      'EHLO client.test',
      AUTH_PLAIN,
      'MAIL FROM:<sender@src.test> SIZE=5000',
      'MAIL FROM:<sender@src.test>',
      'RCPT TO:<ok-big@dest.test>',
      'DATA',
      { raw: `${big}\r\n.\r\n`, expectReplies: 1 },
      'NOOP',
      'QUIT',
    ]);
    assert.match(replies[1], /^250 SIZE 2048$/m);
    assert.match(replies[3], /^552 /, 'declared SIZE over the limit');
    assert.match(replies[4], /^250 /);
    assert.match(replies[6], /^354 /);
    assert.match(replies[7], /^552 /, 'message over the limit');
    assert.match(replies[8], /^250 /, 'the session goes on');
    const queued = (await queue(relay)).messages.filter((m) =>
      m.rcpts.some((r) => r.address === 'ok-big@dest.test'),
    );
    assert.deepEqual(queued, []);
    await drained(relay);
    assert.equal(mx.byRecipient('ok-big@dest.test').length, 0);
  });

  it('refuses recipients beyond maxRecipients with 452 4.5.3 and delivers to the others', async () => {
    const replies = await rawTransaction(
      relay.ports.smtp,
      ['ok-r1@dest.test', 'ok-r2@dest.test', 'ok-r3@dest.test'],
      message('rcpts'),
    );
    assert.match(replies[4], /^250 /);
    assert.match(replies[5], /^250 /);
    assert.match(replies[6], /^452 4\.5\.3 /);
    assert.match(replies[8], QUEUED_RE);
    await waitFor(() => mx.byRecipient('ok-r1@dest.test').length, { what: 'the message' });
    await drained(relay);
    const [msg] = mx.byRecipient('ok-r1@dest.test');
    assert.deepEqual([...msg.rcptTo].sort(), ['ok-r1@dest.test', 'ok-r2@dest.test']);
    assert.equal(mx.byRecipient('ok-r3@dest.test').length, 0);
  });

  it('is not fooled by SMTP smuggling: bare LF/CR dots do not end the message', async () => {
    const body =
      'part1\n.\nMAIL FROM:<evil@src.test>\nRCPT TO:<victim1@dest.test>\nDATA\nsmuggled1\n' +
      'part2\r.\rMAIL FROM:<evil@src.test>\rRCPT TO:<victim2@dest.test>\rDATA\rsmuggled2\r' +
      'part3\r\n.\nMAIL FROM:<evil@src.test>\r\nRCPT TO:<victim3@dest.test>\r\nDATA\r\nsmuggled3\r\n' +
      'the end\r\n';
    const replies = await rawSmtp(relay.ports.smtp, [
      'EHLO client.test',
      AUTH_PLAIN,
      'MAIL FROM:<sender@src.test>',
      'RCPT TO:<ok-smuggle@dest.test>',
      'DATA',
      { raw: `${message('smuggling', body)}\r\n.\r\n`, expectReplies: 1 },
      'NOOP',
      'QUIT',
    ]);
    assert.equal(replies.length, 9, JSON.stringify(replies));
    assert.match(replies[5], /^354 /);
    assert.match(replies[6], QUEUED_RE, 'exactly one reply to the whole payload');
    assert.match(replies[7], /^250 /, 'NOOP');
    assert.match(replies[8], /^221 /);

    await waitFor(() => mx.byRecipient('ok-smuggle@dest.test').length, { what: 'the message' });
    await drained(relay);
    const got = mx.byRecipient('ok-smuggle@dest.test');
    assert.equal(got.length, 1);
    const text = got[0].raw.toString('latin1').replace(/\r\n|\r|\n/g, '\n');
    for (const want of [
      'part1\n.\nMAIL FROM:<evil@src.test>',
      'smuggled1',
      'part2\n.\nMAIL FROM',
      'smuggled2',
      'part3\n.\nMAIL FROM',
      'smuggled3',
      'the end',
    ]) {
      assert.ok(text.includes(want), `the delivered message contains ${JSON.stringify(want)}:\n${text}`);
    }
    assert.equal(mx.messages.filter((m) => m.mailFrom === 'evil@src.test').length, 0);
    for (const v of ['victim1@dest.test', 'victim2@dest.test', 'victim3@dest.test'])
      assert.equal(mx.byRecipient(v).length, 0, v);
  });

  it('answers "queued as <id>" and delivers the message under a Received header naming that id', async () => {
    const info = await sendMail(relay.ports.smtp, {
      from: 'sender@src.test',
      to: ['ok-received@dest.test'],
      subject: 'received header',
      auth: { user: USER, pass: PASS },
    });
    const m = /queued as ([0-9A-Z]{20})$/.exec(info.response);
    assert.ok(m, info.response);
    const id = m[1];
    await waitFor(() => mx.byRecipient('ok-received@dest.test').length, { what: 'the message' });
    const raw = mx.byRecipient('ok-received@dest.test')[0].raw.toString('latin1');
    assert.match(
      raw,
      /^Received: from client\.test \(\[127\.0\.0\.1\]\)\r\n\tby relay\.test \(Cartero\) with ESMTPS?A id ([0-9A-Z]{20})\r\n\tfor <ok-received@dest\.test>; /,
    );
    assert.equal(/ id ([0-9A-Z]{20})/.exec(raw)?.[1], id);
    assert.match(raw, /\r\nSubject: received header\r\n/);
  });

  it('refuses a looping message (30 Received headers) with 554 5.4.6 and queues nothing', async () => {
    const hops = (n: number) =>
      Array.from({ length: n }, (_, i) => `Received: from hop${i}.test\r\n`).join('');
    const looped = await rawTransaction(
      relay.ports.smtp,
      ['ok-loop@dest.test'],
      message('loop', 'x\r\n', hops(30)),
    );
    assert.match(looped[6], /^554 5\.4\.6 Mail loop detected \(30 Received headers\)$/);
    assert.ok(
      !(await queue(relay)).messages.some((m) => m.rcpts.some((r) => r.address === 'ok-loop@dest.test')),
    );

    // one hop fewer still passes
    const fine = await rawTransaction(
      relay.ports.smtp,
      ['ok-29hops@dest.test'],
      message('29 hops', 'x\r\n', hops(29)),
    );
    assert.match(fine[6], QUEUED_RE);
    await waitFor(() => mx.byRecipient('ok-29hops@dest.test').length, { what: 'the 29-hop message' });
    await drained(relay);
    assert.equal(mx.byRecipient('ok-loop@dest.test').length, 0);
  });
});

describe('inbound SMTP over TLS', () => {
  let mx: TestMx;
  let relay: RelayProc;
  let cert: TestCert;

  before(async () => {
    cert = await makeSelfSignedCert('localhost');
    mx = await startTestMx();
    relay = await startRelay({
      config: relayConfig(mx, {
        listeners: [
          { name: 'submission', tls: 'starttls' },
          { name: 'smtps', tls: 'implicit' },
        ],
        tls: { certFile: 'cert.pem', keyFile: 'key.pem' },
      }),
      secrets: { alice: PASS },
      files: { 'tls/cert.pem': cert.cert, 'tls/key.pem': cert.key },
    });
  });

  after(async () => {
    await relay?.cleanup();
    await mx?.close();
  });

  /** Sends one message with nodemailer, verifying the relay's certificate against our test CA. */
  async function sendVerified(port: number, secure: boolean, to: string): Promise<string> {
    const transport = nodemailer.createTransport({
      host: '127.0.0.1',
      port,
      secure,
      ...(secure ? {} : { requireTLS: true }),
      tls: { ca: [cert.cert], servername: 'localhost', minVersion: 'TLSv1.2' },
      auth: { user: USER, pass: PASS },
      name: 'client.test',
      connectionTimeout: 15_000,
      greetingTimeout: 15_000,
      socketTimeout: 15_000,
    });
    try {
      const info = await transport.sendMail({
        envelope: { from: 'sender@src.test', to: [to] },
        raw: message(`tls to ${to}`),
      });
      return info.response;
    } finally {
      transport.close();
    }
  }

  it('offers STARTTLS and refuses AUTH before it', async () => {
    const replies = await rawSmtp(relay.ports.submission, [
      'EHLO client.test',
      AUTH_PLAIN,
      'MAIL FROM:<sender@src.test>',
      'RCPT TO:<ok@dest.test>',
      'QUIT',
    ]);
    assert.match(replies[1], /^250-STARTTLS$/m);
    assert.match(replies[2], /^538 .*STARTTLS/);
    assert.match(replies[4], /^550 5\.7\.1 /, 'still no relaying without AUTH');
  });

  it('accepts AUTH after STARTTLS and relays', async () => {
    const response = await sendVerified(relay.ports.submission, false, 'ok-starttls@dest.test');
    assert.match(response, /queued as [0-9A-Z]{20}$/);
    await waitFor(() => mx.byRecipient('ok-starttls@dest.test').length, { what: 'the message' });
    assert.match(
      mx.byRecipient('ok-starttls@dest.test')[0].raw.toString(),
      /^Received: .* with ESMTPSA id /s,
    );
  });

  it('refuses TLS 1.1 and below, and speaks TLS 1.2 and 1.3', async () => {
    const old = await starttlsHandshake(relay.ports.submission, cert.cert, 'TLSv1', 'TLSv1.1');
    assert.ok('error' in old, `a TLS 1.1 handshake must fail, got ${JSON.stringify(old)}`);
    assert.equal(old.error.code, 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', old.error.message);

    const v12 = await starttlsHandshake(relay.ports.submission, cert.cert, 'TLSv1.2', 'TLSv1.2');
    assert.deepEqual(v12, { protocol: 'TLSv1.2' });
    const v13 = await starttlsHandshake(relay.ports.submission, cert.cert, 'TLSv1.2', 'TLSv1.3');
    assert.deepEqual(v13, { protocol: 'TLSv1.3' });
  });

  it('accepts mail on the implicit TLS listener (nodemailer secure: true)', async () => {
    const response = await sendVerified(relay.ports.smtps, true, 'ok-implicit@dest.test');
    assert.match(response, /queued as [0-9A-Z]{20}$/);
    await waitFor(() => mx.byRecipient('ok-implicit@dest.test').length, { what: 'the message' });
    await drained(relay);
  });
});

describe('graceful shutdown', () => {
  let mx: TestMx;
  let relay: RelayProc | undefined;

  before(async () => {
    mx = await startTestMx();
  });

  after(async () => {
    await relay?.cleanup();
    await mx?.close();
  });

  it('says 421 to idle sessions, refuses new connections, exits 0 in time and keeps queued mail', async () => {
    mx.setMode('down-421');
    const config = {
      trustedNetworks: ['127.0.0.0/8'],
      routing: {
        default: { type: 'smarthost', smarthost: { host: '127.0.0.1', port: mx.port, tls: 'none' } },
      },
      queue: { retry: { initial: '1s', max: '1s' } },
      // the 421s make the MX a throttling destination; an attempt by the restarted relay before the MX is
      // back must not back it off for the default minute
      shaping: { backoff: { initial: '1s', max: '1s' } },
      shutdown: { gracePeriod: '5s' },
    };
    const first = (relay = await startRelay({ config }));
    const info = await sendMail(first.ports.smtp, {
      from: 'sender@src.test',
      to: ['ok-kept@dest.test'],
      subject: 'kept',
    });
    const id = /queued as ([0-9A-Z]{20})$/.exec(info.response)?.[1];
    assert.ok(id, info.response);
    // the MX turned it away once; nothing in flight now
    await waitFor(
      async () => {
        const q = await queue(first);
        return q.activeDeliveries === 0 && q.messages.some((m) => m.id === id && m.attempts >= 1);
      },
      { what: 'a deferred delivery attempt' },
    );

    const idle = await connectSmtp(first.ports.smtp);
    assert.match(await idle.next(), /^220 /);
    assert.match(await idle.command('EHLO client.test'), /^250/);

    const t0 = Date.now();
    first.kill('SIGTERM');
    const goodbye = await idle.nextOrClosed(8_000);
    if (goodbye !== null) assert.match(goodbye, /^421 /);
    assert.equal(await idle.nextOrClosed(8_000), null, 'the idle session is closed');
    assert.ok(
      Date.now() - t0 < 5_000,
      `the idle client heard about the shutdown within the grace period (${Date.now() - t0} ms)`,
    );

    await assert.rejects(connectSmtp(first.ports.smtp), { code: 'ECONNREFUSED' });

    const exit = await first.exited;
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.ok(Date.now() - t0 < 5_000, `exited within the grace period (${Date.now() - t0} ms)`);

    // same spool: the message is still queued, and goes out once the MX is back
    const second = (relay = await startRelay({ config, dir: first.root }));
    // the relay listens before it has indexed its spool: wait for the index
    await waitFor(async () => !(await queue(second)).recovering, { what: 'the spool indexed' });
    const q = await queue(second);
    assert.deepEqual(
      q.messages.map((m) => m.id),
      [id],
    );
    mx.setMode('normal');
    await waitFor(() => mx.byRecipient('ok-kept@dest.test').length, {
      what: 'the kept message',
      timeoutMs: 15_000,
    });
    assert.match(mx.byRecipient('ok-kept@dest.test')[0].raw.toString(), new RegExp(` id ${id}\\r\\n`));
    await drained(second);
    assert.equal(mx.byRecipient('ok-kept@dest.test').length, 1);
  });
});
