/**
 * End to end delivery through a real relay process: a real dnsmasq serves MX records, test MXs on
 * 127.0.4.x answer by recipient, nodemailer and swaks send. Covers byte-exact relaying, MX priority
 * fallback, implicit MX, per-domain and wildcard routes, smarthost AUTH, backup routes, retries, DSNs.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { simpleParser } from 'mailparser';
import { startDns, type DnsServer } from '../helpers/dnsmasq.js';
import { startTestMx, type TestMx, type ReceivedMessage } from '../helpers/testmx.js';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { sendMail, swaks } from '../helpers/swaks.js';
import { waitFor } from '../helpers/poll.js';
import { unusedPort } from '../helpers/ports.js';
import { parseDsn } from '../helpers/dsn.js';
import { makeSelfSignedCert } from '../helpers/certs.js';

async function queueDepth(relay: RelayProc): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${relay.adminPort}/queue`);
  return ((await res.json()) as { depth: number }).depth;
}

describe('delivery through MX, routes and backups', () => {
  let dns: DnsServer;
  let mxA: TestMx; // 127.0.4.3: ok.test, nomx.test, sender.test
  let mx2: TestMx; // 127.0.4.2: secondary MX of prio.test (primary 127.0.4.1 is down)
  let routed: TestMx; // 127.0.4.4: per-domain route target
  let small: TestMx; // 127.0.4.5: route target of small.test, SIZE 2048
  let relay: RelayProc;

  before(async () => {
    mxA = await startTestMx({ address: '127.0.4.3', dsn: true, name: 'mx.ok.test' });
    const P = mxA.port;
    mx2 = await startTestMx({ address: '127.0.4.2', port: P, name: 'mx2.prio.test' });
    routed = await startTestMx({ address: '127.0.4.4', name: 'routed.test' });
    small = await startTestMx({ address: '127.0.4.5', name: 'small.test', size: 2048 });
    dns = await startDns({
      mx: [
        { domain: 'ok.test', host: 'mx.ok.test', pref: 10 },
        { domain: 'sender.test', host: 'mx.ok.test', pref: 10 },
        { domain: 'prio.test', host: 'mx1.prio.test', pref: 10 },
        { domain: 'prio.test', host: 'mx2.prio.test', pref: 20 },
      ],
      a: [
        { name: 'mx.ok.test', ip: '127.0.4.3' },
        { name: 'mx1.prio.test', ip: '127.0.4.1' },
        { name: 'mx2.prio.test', ip: '127.0.4.2' },
        { name: 'nomx.test', ip: '127.0.4.3' },
      ],
      nullMx: ['nullmx.test'],
    });
    relay = await startRelay({
      config: {
        hostname: 'relay.cartero.test',
        trustedNetworks: ['127.0.0.0/8'],
        queue: { retry: { initial: '1s', factor: 1, max: '1s' } },
        routing: {
          default: { type: 'mx' },
          domains: [
            { domain: 'routed.test', host: '127.0.4.4', port: routed.port, tls: 'none' },
            { domain: '*.wild.test', host: '127.0.4.4', port: routed.port, tls: 'none' },
            { domain: 'small.test', host: '127.0.4.5', port: small.port, tls: 'none' },
          ],
        },
        dns: { servers: [dns.server], allowPrivateTargets: ['127.0.0.0/8'], mxPort: P, timeout: '2s' },
      },
    });
  });

  after(async () => {
    await relay?.cleanup();
    await Promise.all([mxA?.close(), mx2?.close(), routed?.close(), small?.close(), dns?.stop()]);
  });

  test('relays a message byte for byte: dot-stuffed lines, 8-bit body, our Received header first', async () => {
    const original = Buffer.concat([
      Buffer.from(
        'From: a@sender.test\r\nTo: ok-bytes@ok.test\r\nSubject: exact\r\nMessage-ID: <exact@sender.test>\r\n',
      ),
      Buffer.from(
        'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n',
      ),
      Buffer.from(
        '.leading dot\r\n..two dots\r\n.\r\nnot the end\r\nÜñíçødé – 8 bit\r\n\r\ntrailing\r\n',
        'utf8',
      ),
    ]);
    const info = await sendMail(relay.ports.smtp, {
      from: 'a@sender.test',
      to: ['ok-bytes@ok.test'],
      raw: original,
    });
    const id = /queued as ([0-9A-Z]{20})/.exec(info.response)?.[1];
    assert.ok(id, `250 reply names the queue id: ${info.response}`);
    const [msg] = await waitFor(
      () => (mxA.byRecipient('ok-bytes@ok.test').length ? mxA.byRecipient('ok-bytes@ok.test') : undefined),
      { what: 'delivery' },
    );
    const text = msg.raw.toString('latin1');
    assert.match(
      text,
      new RegExp(
        `^Received: from client\\.test \\(\\[127\\.0\\.0\\.1\\]\\)\\r\\n\\tby relay\\.cartero\\.test \\(Cartero\\) with ESMTP id ${id}`,
      ),
    );
    const headerEnd = text.indexOf('\r\n', text.indexOf('; ', text.indexOf('id ' + id))) + 2;
    assert.ok(
      msg.raw.subarray(headerEnd).equals(original),
      'the message after our Received header is the original, byte for byte',
    );
    assert.equal(msg.mailFrom, 'a@sender.test');
    assert.equal(msg.mailParams.BODY, '8BITMIME');
  });

  test('falls back to the next MX by preference when the first is unreachable', async () => {
    await sendMail(relay.ports.smtp, { from: 'a@sender.test', to: ['ok-prio@prio.test'] });
    const [msg] = await mx2.waitForMessages(1);
    assert.deepEqual(msg.rcptTo, ['ok-prio@prio.test']);
    assert.equal(mxA.byRecipient('ok-prio@prio.test').length, 0);
  });

  test('uses the domain itself when it has no MX (implicit MX)', async () => {
    await sendMail(relay.ports.smtp, { from: 'a@sender.test', to: ['ok-implicit@nomx.test'] });
    await waitFor(() => mxA.byRecipient('ok-implicit@nomx.test')[0], { what: 'implicit MX delivery' });
  });

  test('per-domain and wildcard routes win over MX; recipients of one route share a transaction', async () => {
    const r = await swaks([
      '-s',
      '127.0.0.1',
      '-p',
      String(relay.ports.smtp),
      '-f',
      'a@sender.test',
      '-t',
      'ok-1@routed.test,ok-2@routed.test,ok-3@a.wild.test',
      '--h-Subject',
      'routes',
    ]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const msgs = await routed.waitForMessages(1);
    await waitFor(() => routed.messages.flatMap((m) => m.rcptTo).length === 3, {
      what: 'three routed recipients',
    });
    const all = routed.messages.flatMap((m) => m.rcptTo).sort();
    assert.deepEqual(all, ['ok-1@routed.test', 'ok-2@routed.test', 'ok-3@a.wild.test']);
    assert.equal(msgs.length, 1, 'one transaction for one route');
    assert.equal(mxA.byRecipient('ok-1@routed.test').length, 0);
  });

  test('retries a temporary failure until it is delivered', async () => {
    await sendMail(relay.ports.smtp, { from: 'a@sender.test', to: ['tempfail-once@ok.test'] });
    await waitFor(() => mxA.byRecipient('tempfail-once@ok.test')[0], {
      what: 'delivery after a retry',
      timeoutMs: 15_000,
    });
    const codes = mxA.rcptAttempts.filter((a) => a.address === 'tempfail-once@ok.test').map((a) => a.code);
    assert.deepEqual(codes, [451, 250]);
    await relay.waitForLog((l) => l.event === 'deferred' && l.to === 'tempfail-once@ok.test');
  });

  test('bounces at once on 5xx with an RFC 3464 DSN to the sender from the null sender', async () => {
    await sendMail(relay.ports.smtp, {
      from: 'sender-reject@sender.test',
      to: ['reject@ok.test', 'ok-partial@ok.test'],
      subject: 'will partly bounce',
      dsn: { envid: 'ENV-42', ret: 'HDRS' },
    });
    const delivered = await waitFor(() => mxA.byRecipient('ok-partial@ok.test')[0], {
      what: 'accepted recipient delivered',
    });
    assert.deepEqual(
      delivered.rcptTo,
      ['ok-partial@ok.test'],
      'the refused recipient is not in the transaction that succeeded',
    );
    const bounce = await waitFor(() => mxA.byRecipient('sender-reject@sender.test')[0], { what: 'DSN' });
    assert.equal(bounce.mailFrom, '', 'DSNs are sent from the null sender');
    const parsed = await simpleParser(bounce.raw);
    assert.match(
      String(
        parsed.headers.get('content-type') && (parsed.headers.get('content-type') as { value: string }).value,
      ),
      /multipart\/report/,
    );
    assert.equal(parsed.headers.get('auto-submitted'), 'auto-replied');
    const dsn = parseDsn(bounce.raw);
    assert.equal(dsn.reportType, 'delivery-status');
    assert.equal(dsn.message['reporting-mta'], 'dns; relay.cartero.test');
    assert.equal(dsn.message['original-envelope-id'], 'ENV-42');
    assert.equal(dsn.recipients.length, 1);
    const r = dsn.recipients[0];
    assert.equal(r['final-recipient'], 'rfc822; reject@ok.test');
    assert.equal(r['action'], 'failed');
    assert.equal(r['status'], '5.1.1');
    assert.match(r['diagnostic-code'], /^smtp; 550 5\.1\.1/);
    assert.match(r['remote-mta'], /mx\.ok\.test/);
    assert.match(dsn.original, /Subject: will partly bounce/, 'original headers attached');
    assert.equal(dsn.originalType, 'text/rfc822-headers');
  });

  test('a message over the next hop’s SIZE bounces with 5.3.4 (refused before MAIL FROM, no reply)', async () => {
    await sendMail(relay.ports.smtp, {
      from: 'sender-big@sender.test',
      to: ['ok-big@small.test'],
      subject: 'too big for small.test',
      body: 'x'.repeat(8000),
    });
    const bounce = await waitFor(() => mxA.byRecipient('sender-big@sender.test')[0], { what: 'DSN' });
    const r = parseDsn(bounce.raw).recipients[0];
    assert.equal(r['final-recipient'], 'rfc822; ok-big@small.test');
    assert.equal(r['action'], 'failed');
    assert.equal(r['status'], '5.3.4');
    assert.equal(small.messages.length, 0);
    await relay.waitForLog(
      (l) => l.event === 'bounced' && l.to === 'ok-big@small.test' && l.status === '5.3.4',
    );
  });

  test('null MX and NXDOMAIN bounce with their status codes', async () => {
    await sendMail(relay.ports.smtp, {
      from: 'sender-nx@sender.test',
      to: ['x@nullmx.test', 'y@nosuch.test'],
    });
    const bounces = await waitFor(
      () =>
        mxA.byRecipient('sender-nx@sender.test').length >= 1
          ? mxA.byRecipient('sender-nx@sender.test')
          : undefined,
      { what: 'DSNs' },
    );
    await waitFor(
      () =>
        bounces.flatMap((b) => parseDsn(b.raw).recipients).length >= 2 ||
        mxA.byRecipient('sender-nx@sender.test').flatMap((b) => parseDsn(b.raw).recipients).length >= 2,
      { what: 'both recipients reported' },
    );
    const recips = mxA.byRecipient('sender-nx@sender.test').flatMap((b) => parseDsn(b.raw).recipients);
    const byRcpt = Object.fromEntries(recips.map((r) => [r['final-recipient'], r['status']]));
    assert.equal(byRcpt['rfc822; x@nullmx.test'], '5.1.10');
    assert.equal(byRcpt['rfc822; y@nosuch.test'], '5.1.2');
  });

  test('never sends a DSN to the null sender', async () => {
    const before = mxA.messages.length;
    await sendMail(relay.ports.smtp, {
      from: '',
      to: ['reject+nullsender@ok.test'],
      subject: 'from null sender',
    }).catch((e: Error) => {
      throw e;
    });
    await relay.waitForLog((l) => l.event === 'dsn.suppressed');
    await waitFor(async () => (await queueDepth(relay)) === 0, { what: 'queue empty' });
    assert.equal(mxA.messages.length, before, 'nothing was sent anywhere');
  });

  test('passes DSN parameters on to a next hop that supports DSN', async () => {
    await sendMail(relay.ports.smtp, {
      from: 'a@sender.test',
      to: ['ok-dsn@ok.test'],
      dsn: { ret: 'HDRS', envid: 'E-1', notify: ['FAILURE', 'DELAY'], orcpt: 'rfc822;orig@ok.test' },
    });
    const msg: ReceivedMessage = await waitFor(() => mxA.byRecipient('ok-dsn@ok.test')[0], {
      what: 'delivery',
    });
    assert.equal(msg.mailParams.RET, 'HDRS');
    assert.equal(msg.mailParams.ENVID, 'E-1');
    assert.equal(String(msg.rcptParams[0].NOTIFY), 'FAILURE,DELAY');
    assert.equal(String(msg.rcptParams[0].ORCPT), 'rfc822;orig@ok.test');
  });
});

describe('smarthost with AUTH and backup routes', () => {
  let smarthost: TestMx;
  let backup: TestMx;
  let relay: RelayProc;

  before(async () => {
    smarthost = await startTestMx({
      address: '127.0.4.5',
      auth: { username: 'relayuser', password: 's3cret pass' },
      name: 'smarthost.test',
    });
    backup = await startTestMx({ address: '127.0.4.6', name: 'backup.test' });
    const down = await unusedPort('127.0.4.7');
    relay = await startRelay({
      config: {
        trustedNetworks: ['127.0.0.0/8'],
        routing: {
          default: {
            type: 'smarthost',
            smarthost: {
              host: '127.0.4.5',
              port: smarthost.port,
              tls: 'none',
              credentials: { username: 'relayuser', passwordFile: 'smarthost.pass' },
            },
          },
          domains: [
            { domain: 'viabackup.test', host: '127.0.4.7', port: down, tls: 'none' },
            {
              domain: 'badauth.test',
              host: '127.0.4.5',
              port: smarthost.port,
              tls: 'none',
              credentials: { username: 'relayuser', passwordFile: 'wrong.pass' },
            },
          ],
          backups: [{ host: '127.0.4.6', port: backup.port, tls: 'none' }],
        },
      },
      secrets: { 'smarthost.pass': 's3cret pass\n', 'wrong.pass': 'not it' },
    });
  });

  after(async () => {
    await relay?.cleanup();
    await Promise.all([smarthost?.close(), backup?.close()]);
  });

  test('delivers through the smarthost, logged in', async () => {
    await sendMail(relay.ports.smtp, { from: 'a@sender.test', to: ['someone@example.org'] });
    const [msg] = await smarthost.waitForMessages(1);
    assert.equal(msg.user, 'relayuser');
    assert.deepEqual(msg.rcptTo, ['someone@example.org']);
  });

  test('uses the backup route when the primary is down', async () => {
    await sendMail(relay.ports.smtp, { from: 'a@sender.test', to: ['ok@viabackup.test'] });
    const [msg] = await backup.waitForMessages(1);
    assert.deepEqual(msg.rcptTo, ['ok@viabackup.test']);
    await relay.waitForLog((l) => l.event === 'delivered' && l.route === 'backup');
  });

  test('a refused login at the next hop is a route problem: the backup takes the mail, nothing bounces', async () => {
    await sendMail(relay.ports.smtp, { from: 'a@sender.test', to: ['ok@badauth.test'] });
    await waitFor(() => backup.byRecipient('ok@badauth.test')[0], { what: 'backup delivery' });
    await relay.waitForLog((l) => l.event === 'hop.failed' && /authentication failed/.test(String(l.reply)));
    assert.equal(relay.logs.filter((l) => l.event === 'bounced').length, 0);
  });

  test('uses the backup route when the smarthost answers 421', async () => {
    smarthost.setMode('down-421');
    try {
      await sendMail(relay.ports.smtp, { from: 'a@sender.test', to: ['ok-421@example.org'] });
      await waitFor(() => backup.byRecipient('ok-421@example.org')[0], { what: 'backup delivery' });
    } finally {
      smarthost.setMode('normal');
    }
  });
});

describe('outbound TLS', () => {
  let tlsMx: TestMx;
  let plainMx: TestMx;
  let relay: RelayProc;

  before(async () => {
    const cert = await makeSelfSignedCert('tlsmx.test');
    tlsMx = await startTestMx({ address: '127.0.4.9', tls: cert, name: 'tlsmx.test' });
    plainMx = await startTestMx({ address: '127.0.4.10', name: 'plainmx.test' });
    relay = await startRelay({
      config: {
        trustedNetworks: ['127.0.0.0/8'],
        queue: { retry: { initial: '1h', max: '1h' } },
        routing: {
          domains: [
            { domain: 'opportunistic.test', host: '127.0.4.9', port: tlsMx.port, tls: 'opportunistic' },
            { domain: 'required-selfsigned.test', host: '127.0.4.9', port: tlsMx.port, tls: 'required' },
            { domain: 'required-plain.test', host: '127.0.4.10', port: plainMx.port, tls: 'required' },
          ],
        },
      },
    });
  });

  after(async () => {
    await relay?.cleanup();
    await Promise.all([tlsMx?.close(), plainMx?.close()]);
  });

  test('opportunistic STARTTLS encrypts when offered, even with an unverifiable certificate', async () => {
    await sendMail(relay.ports.smtp, { from: 'a@sender.test', to: ['ok@opportunistic.test'] });
    const msg = await waitFor(() => tlsMx.byRecipient('ok@opportunistic.test')[0], { what: 'TLS delivery' });
    assert.equal(msg.secure, true);
  });

  test('required TLS never falls back to plaintext: no STARTTLS or a bad certificate defers', async () => {
    await sendMail(relay.ports.smtp, {
      from: 'a@sender.test',
      to: ['ok@required-plain.test', 'ok@required-selfsigned.test'],
    });
    await relay.waitForLog((l) => l.event === 'deferred' && l.to === 'ok@required-plain.test');
    await relay.waitForLog((l) => l.event === 'deferred' && l.to === 'ok@required-selfsigned.test');
    assert.equal(plainMx.messages.length, 0);
    assert.equal(tlsMx.byRecipient('ok@required-selfsigned.test').length, 0);
    assert.equal(await queueDepth(relay), 1, 'still queued for a later attempt');
  });

  test('metrics count what happened, with bounded labels', async () => {
    const text = await (await fetch(`http://127.0.0.1:${relay.adminPort}/metrics`)).text();
    assert.match(text, /cartero_messages_received_total\{tenant="default"\} 2/);
    assert.match(text, /cartero_messages_delivered_total\{tenant="default",route="domain"\} 1/);
    assert.match(text, /cartero_messages_deferred_total\{tenant="default"\} 2/);
    assert.match(text, /cartero_queue_depth\{tenant="default"\} 1/);
    assert.match(text, /cartero_delivery_duration_seconds_count\{result="delivered"\} 1/);
    assert.doesNotMatch(text, /required-plain\.test/, 'no recipient in any label');
  });
});

describe('one slow destination does not hold up the others', () => {
  let slowMx: TestMx;
  let fastMx: TestMx;
  let relay: RelayProc;

  before(async () => {
    slowMx = await startTestMx({ address: '127.0.4.11', slowMs: 8000 });
    fastMx = await startTestMx({ address: '127.0.4.12' });
    relay = await startRelay({
      config: {
        trustedNetworks: ['127.0.0.0/8'],
        delivery: { concurrency: 4, perDestinationConcurrency: 1 },
        routing: {
          domains: [
            { domain: 'slow.test', host: '127.0.4.11', port: slowMx.port, tls: 'none' },
            { domain: 'fast.test', host: '127.0.4.12', port: fastMx.port, tls: 'none' },
          ],
        },
      },
    });
  });

  after(async () => {
    await slowMx?.close(); // ends the slow transaction, so the relay stops at once
    await relay?.cleanup();
    await fastMx?.close();
  });

  test('mail to a fast domain is delivered while a slow one is still in its transaction', async () => {
    await sendMail(relay.ports.smtp, { from: 'a@sender.test', to: ['slow@slow.test'] });
    await sendMail(relay.ports.smtp, { from: 'a@sender.test', to: ['slow@slow.test', 'ok-1@fast.test'] });
    await sendMail(relay.ports.smtp, { from: 'a@sender.test', to: ['ok-2@fast.test'] });
    await waitFor(() => fastMx.messages.length === 2, { what: 'both fast deliveries' });
    // the fast-only message leaves the queue; the two for slow.test stay: the slow MX answers DATA only
    // after 8 s, and with one connection for slow.test the second waits behind the first
    await waitFor(
      async () =>
        ((await (await fetch(`http://127.0.0.1:${relay.adminPort}/queue`)).json()) as { depth: number })
          .depth === 2,
      {
        what: 'only the two slow.test messages left in the queue',
      },
    );
    assert.equal(slowMx.messages.length, 0, 'the slow destination is still busy');
  });
});
