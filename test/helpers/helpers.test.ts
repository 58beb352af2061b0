/** Self-test of the shared test helpers, against the test MX (the relay itself is not involved). */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import { waitFor } from './poll.js';
import { isUnderTmpDir, makeTmpDir, removeTmpDir } from './tmp.js';
import { behaviourOf, startTestMx, type TestMx } from './testmx.js';
import { sendMail, swaks } from './swaks.js';
import { rawSmtp } from './rawsmtp.js';
import { runRelayExpectFailure, startRelay } from './relay.js';
import { makeSelfSignedCert } from './certs.js';

describe('poll', () => {
  test('waitFor resolves with the first truthy value', async () => {
    let n = 0;
    assert.equal(await waitFor(() => ++n >= 3 && n, { intervalMs: 1 }), 3);
    assert.equal(await waitFor(async () => 'x'), 'x');
  });

  test('waitFor names what it waited for and the timeout', async () => {
    await assert.rejects(
      waitFor(() => false, { timeoutMs: 50, what: 'the moon' }),
      /timed out after 50 ms waiting for the moon/,
    );
  });

  test('waitFor passes on an exception from the condition', async () => {
    await assert.rejects(
      waitFor(() => {
        throw new Error('boom');
      }),
      /boom/,
    );
  });
});

describe('tmp', () => {
  test('makeTmpDir makes a directory under the temp dir and removeTmpDir removes it', async () => {
    const dir = await makeTmpDir('cartero-selftest-');
    assert.ok(existsSync(dir));
    assert.ok(isUnderTmpDir(dir));
    assert.match(path.basename(dir), /^cartero-selftest-/);
    await writeFile(path.join(dir, 'f'), 'x');
    await removeTmpDir(dir);
    assert.ok(!existsSync(dir));
  });

  test('removeTmpDir refuses paths outside the temp dir', async () => {
    await assert.rejects(removeTmpDir('/work'), /refusing/);
  });
});

describe('test MX', () => {
  let mx: TestMx;
  before(async () => {
    mx = await startTestMx();
  });
  after(() => mx.close());

  test('local parts select behaviours', () => {
    assert.equal(behaviourOf('ok+123@x.test'), 'accept');
    assert.equal(behaviourOf('OK7@x.test'), 'accept');
    assert.equal(behaviourOf('TempFail+a@x.test'), 'tempfail');
    assert.equal(behaviourOf('reject@x.test'), 'reject');
    assert.equal(behaviourOf('slow+1@x.test'), 'slow');
    assert.equal(behaviourOf('tempfail-once+z@x.test'), 'tempfail-once');
    assert.equal(behaviourOf('someone@x.test'), 'accept');
  });

  test('accepts and records a message sent with nodemailer', async () => {
    const before = mx.messages.length;
    const info = await sendMail(mx.port, {
      from: 'sender@a.test',
      to: ['ok+1@b.test'],
      subject: 'hello',
      body: 'hi there',
      headers: { 'X-Test': 'yes' },
    });
    assert.match(info.response, /^250 2\.0\.0 Ok: queued as TESTMX\d+/);
    assert.deepEqual(info.accepted, ['ok+1@b.test']);
    const [m] = (await mx.waitForMessages(before + 1)).slice(before);
    assert.equal(m.mailFrom, 'sender@a.test');
    assert.deepEqual(m.rcptTo, ['ok+1@b.test']);
    assert.equal(m.helo, 'client.test');
    assert.equal(m.secure, false);
    assert.equal(m.user, undefined);
    const text = m.raw.toString();
    assert.match(text, /^Subject: hello\r$/m);
    assert.match(text, /^X-Test: yes\r$/m);
    assert.match(text, /hi there/);
    assert.ok(info.response.includes(m.id));
    assert.deepEqual(mx.byRecipient('OK+1@B.TEST'), [m]);
  });

  test('tempfail and reject recipients are refused at RCPT; the rest is delivered', async () => {
    const info = await sendMail(mx.port, {
      from: 's@a.test',
      to: ['ok+2@b.test', 'tempfail@b.test', 'reject@b.test'],
    });
    assert.deepEqual(info.accepted, ['ok+2@b.test']);
    assert.deepEqual(info.rejected.sort(), ['reject@b.test', 'tempfail@b.test']);
    const [m] = mx.byRecipient('ok+2@b.test');
    assert.deepEqual(m.rcptTo, ['ok+2@b.test']);
    const codes = Object.fromEntries(
      mx.rcptAttempts.filter((a) => a.address.endsWith('@b.test')).map((a) => [a.address, a.code]),
    );
    assert.equal(codes['tempfail@b.test'], 451);
    assert.equal(codes['reject@b.test'], 550);
  });

  test('exact reply texts, multi-line EHLO, dot-unstuffing and byte-exact raw', async () => {
    const payload = Buffer.from(
      'Subject: raw\r\n\r\n..leading dot\r\nbin:\u00e9\u00e8\r\nno final newline',
      'utf8',
    );
    const replies = await rawSmtp(mx.port, [
      'EHLO raw.test',
      'MAIL FROM:<s@a.test>',
      'RCPT TO:<tempfail+r@b.test>',
      'RCPT TO:<reject+r@b.test>',
      'RCPT TO:<ok+raw@b.test>',
      'DATA',
      { raw: Buffer.concat([payload, Buffer.from('\r\n.\r\n')]), expectReplies: 1 },
      'QUIT',
    ]);
    assert.equal(replies.length, 9);
    assert.match(replies[0], /^220 mx\.test ESMTP/);
    assert.match(replies[1], /^250-mx\.test/);
    assert.ok(replies[1].split('\n').length > 1, 'EHLO reply is multi-line');
    assert.doesNotMatch(replies[1], /AUTH|STARTTLS|DSN/);
    assert.match(replies[3], /^451 4\.3\.0 /);
    assert.match(replies[4], /^550 5\.1\.1 /);
    assert.match(replies[5], /^250 /);
    assert.match(replies[6], /^354 /);
    assert.match(replies[7], /^250 2\.0\.0 Ok: queued as /);
    assert.match(replies[8], /^221 /);
    const [m] = mx.byRecipient('ok+raw@b.test');
    // the "\r\n" before "." belongs to the terminator, and the stuffed dot is removed
    assert.deepEqual(
      m.raw,
      Buffer.from('Subject: raw\r\n\r\n.leading dot\r\nbin:\u00e9\u00e8\r\nno final newline\r\n', 'utf8'),
    );
  });

  test('rawSmtp pipelined step and early close', async () => {
    const replies = await rawSmtp(mx.port, [
      { raw: 'EHLO p.test\r\nMAIL FROM:<s@a.test>\r\nRCPT TO:<ok@b.test>\r\nQUIT\r\n', expectReplies: 4 },
      'NOOP',
    ]);
    assert.equal(replies.length, 5, JSON.stringify(replies));
    assert.match(replies[4], /^221 /);
  });

  test('nodemailer raw is delivered byte for byte', async () => {
    const raw = Buffer.from(
      'From: s@a.test\r\nTo: ok+bytes@b.test\r\nSubject: bytes\r\n\r\n.\r\n..\r\nend\r\n',
    );
    await sendMail(mx.port, { from: 's@a.test', to: ['ok+bytes@b.test'], raw });
    assert.deepEqual(mx.byRecipient('ok+bytes@b.test')[0].raw, raw);
  });

  test('tempfail-once refuses the first RCPT of an address only', async () => {
    await assert.rejects(
      sendMail(mx.port, { from: 's@a.test', to: ['tempfail-once+q@b.test'] }),
      (e: Error & { responseCode?: number }) => {
        assert.equal(e.responseCode, 451);
        return true;
      },
    );
    await sendMail(mx.port, { from: 's@a.test', to: ['tempfail-once+q@b.test'] });
    assert.equal(mx.byRecipient('tempfail-once+q@b.test').length, 1);
  });

  test('swaks against the test MX', async () => {
    const swaksTo = (to: string, ...more: string[]) =>
      swaks(['--server', '127.0.0.1', '--port', String(mx.port), '--from', 's@a.test', '--to', to, ...more]);
    const r = await swaksTo('ok+swaks@b.test', '--helo', 'swaks.test');
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /<- {2}250 2\.0\.0 Ok: queued as TESTMX/);
    assert.equal(mx.byRecipient('ok+swaks@b.test')[0].helo, 'swaks.test');
    const bad = await swaksTo('reject@b.test');
    assert.notEqual(bad.code, 0);
    assert.match(bad.stdout, /<\*\* 550 5\.1\.1/);
  });

  test('down-421 mode refuses connections and MAIL, normal mode restores', async () => {
    const seen = mx.connections;
    mx.setMode('down-421');
    try {
      const replies = await rawSmtp(mx.port, ['EHLO d.test']);
      assert.equal(replies.length, 1);
      assert.match(replies[0], /^421 4\.3\.2 /);
      await assert.rejects(sendMail(mx.port, { from: 's@a.test', to: ['ok@b.test'] }), /421/);
    } finally {
      mx.setMode('normal');
    }
    assert.ok(mx.connections >= seen + 2);
    const replies = await rawSmtp(mx.port, ['EHLO d.test', 'MAIL FROM:<s@a.test>']);
    assert.match(replies[2], /^250 /);
  });
});

describe('test MX options', () => {
  test('slow recipients delay the DATA reply', async () => {
    const mx = await startTestMx({ slowMs: 300 });
    try {
      const t0 = Date.now();
      await sendMail(mx.port, { from: 's@a.test', to: ['slow+1@b.test'] });
      assert.ok(Date.now() - t0 >= 290, `took ${Date.now() - t0} ms`);
      assert.equal(mx.messages.length, 1);
    } finally {
      await mx.close();
    }
  });

  test('auth is offered and required only when configured', async () => {
    const mx = await startTestMx({
      auth: { username: 'u', password: 'p' },
      name: 'authmx.test',
      address: '127.0.0.2',
    });
    try {
      assert.equal(mx.address, '127.0.0.2');
      const replies = await rawSmtp(mx.port, ['EHLO a.test', 'MAIL FROM:<s@a.test>'], { host: '127.0.0.2' });
      assert.match(replies[0], /^220 authmx\.test /);
      assert.match(replies[1], /AUTH LOGIN PLAIN/);
      assert.match(replies[2], /^530 /);
      // sendMail connects to 127.0.0.1 only, so swaks is used for the 127.0.0.2 MX
      const withPassword = (password: string) =>
        swaks([
          '--server',
          '127.0.0.2',
          '--port',
          String(mx.port),
          '--from',
          's@a.test',
          '--to',
          'ok@b.test',
          '--auth',
          'PLAIN',
          '--auth-user',
          'u',
          '--auth-password',
          password,
        ]);
      const denied = await withPassword('wrong');
      assert.notEqual(denied.code, 0);
      assert.match(denied.stdout, /<\*\* 535 5\.7\.8 /);
      const r = await withPassword('p');
      assert.equal(r.code, 0, r.stdout);
      assert.equal(mx.messages[0].user, 'u');
    } finally {
      await mx.close();
    }
  });

  test('dsn: parameters are advertised and recorded', async () => {
    const mx = await startTestMx({ dsn: true });
    try {
      await sendMail(mx.port, {
        from: 's@a.test',
        to: ['ok@b.test'],
        dsn: { ret: 'HDRS', envid: 'env-1', notify: ['SUCCESS', 'FAILURE'], orcpt: 'rfc822;orig@b.test' },
      });
      const [m] = await mx.waitForMessages(1);
      assert.equal(m.mailParams.RET, 'HDRS');
      assert.equal(m.mailParams.ENVID, 'env-1');
      assert.equal(m.rcptParams[0].NOTIFY, 'SUCCESS,FAILURE');
      assert.equal(m.rcptParams[0].ORCPT, 'rfc822;orig@b.test');
    } finally {
      await mx.close();
    }
  });

  test('tls: STARTTLS is offered and the session is recorded as secure', async () => {
    const mx = await startTestMx({ tls: await makeSelfSignedCert('mx.test') });
    try {
      const ehlo = await rawSmtp(mx.port, ['EHLO t.test']);
      assert.match(ehlo[1], /STARTTLS/);
      // (Debian's swaks lacks TLS without libnet-ssleay-perl, so nodemailer does the STARTTLS)
      await sendMail(mx.port, { from: 's@a.test', to: ['ok@b.test'], starttls: true });
      assert.equal(mx.messages[0].secure, true);
    } finally {
      await mx.close();
    }
  });
});

/** A stand-in for the relay that follows its startup contract, to exercise the process helper. */
const FAKE_RELAY = `
import { readFileSync } from 'node:fs';
const file = process.argv[process.argv.indexOf('--config') + 1];
const text = readFileSync(file, 'utf8');
if (text.includes('bad: true')) {
  process.stderr.write('cartero-relay: config error: /bad: unknown field\\n');
  process.exit(2);
}
const log = (o) => process.stdout.write(JSON.stringify({ level: 30, ...o }) + '\\n');
log({ event: 'listening', listener: 'smtp', address: '127.0.0.1', port: 2001 });
log({ event: 'listening', listener: 'submission', address: '127.0.0.1', port: 2002 });
log({ event: 'admin.listening', port: 2003 });
log({ event: 'config', text, env: process.env.FAKE_ENV ?? null, testContext: process.env.NODE_TEST_CONTEXT ?? null });
process.stdout.write('not json\\n');
log({ event: 'ready' });
const keepAlive = setInterval(() => {}, 1000);
process.on('SIGTERM', () => { log({ event: 'stopping' }); clearInterval(keepAlive); });
`;

describe('relay process helper (with a stand-in relay)', () => {
  let fakeDir: string;
  let fakeMain: string;
  before(async () => {
    fakeDir = await makeTmpDir('cartero-fake-relay-');
    fakeMain = path.join(fakeDir, 'fake-main.mjs');
    await writeFile(fakeMain, FAKE_RELAY);
  });
  after(() => removeTmpDir(fakeDir));

  test('startRelay writes config and secrets, parses the startup lines, stops and restarts', async () => {
    const relay = await startRelay({
      main: fakeMain,
      config: {
        listeners: [{ name: 'smtp' }, { name: 'submission', auth: 'required' }],
        hostname: 'relay.test',
      },
      secrets: { 'app.password': 'pw\n' },
      files: { 'tls/x.pem': 'PEM' },
      env: { FAKE_ENV: 'yes' },
    });
    try {
      assert.deepEqual(relay.ports, { smtp: 2001, submission: 2002 });
      assert.equal(relay.adminPort, 2003);
      assert.ok(relay.pid > 0);
      const cfgLine = await relay.waitForLog((l) => l.event === 'config');
      assert.equal(cfgLine.env, 'yes');
      assert.equal(cfgLine.testContext, null);
      const doc = YAML.parse(String(cfgLine.text));
      assert.equal(doc.version, 1);
      assert.deepEqual(doc.listeners, [
        { port: 0, name: 'smtp' },
        { port: 0, name: 'submission', auth: 'required' },
      ]);
      assert.equal(doc.admin.port, 0);
      assert.equal(doc.paths.root, relay.root);
      assert.equal(await readFile(path.join(relay.root, 'secrets', 'app.password'), 'utf8'), 'pw\n');
      assert.equal(await readFile(path.join(relay.root, 'tls', 'x.pem'), 'utf8'), 'PEM');
      assert.ok(relay.logs.some((l) => l.unparsed === true && l.msg === 'not json'));
      await assert.rejects(
        relay.waitForLog((l) => l.event === 'never', 60),
        /timed out after 60 ms/,
      );
      const exit = await relay.stop();
      assert.deepEqual(exit, { code: 0, signal: null });
      assert.ok(relay.logs.some((l) => l.event === 'stopping'));
      await assert.rejects(
        relay.waitForLog((l) => l.event === 'never'),
        /relay exited/,
      );

      const again = await startRelay({ main: fakeMain, config: {}, dir: relay.root });
      assert.equal(again.root, relay.root);
      again.kill('SIGKILL');
      assert.deepEqual(await again.exited, { code: null, signal: 'SIGKILL' });
    } finally {
      await relay.cleanup();
    }
    assert.ok(!existsSync(relay.root));
  });

  test('startRelay reports a relay that exits during startup', async () => {
    await assert.rejects(
      startRelay({ main: fakeMain, config: { bad: true } }),
      /did not become ready[\s\S]*config error: \/bad: unknown field/,
    );
  });

  test('runRelayExpectFailure returns exit code and stderr', async () => {
    const r = await runRelayExpectFailure('version: 1\nbad: true\n', { main: fakeMain });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^cartero-relay: config error: \/bad: unknown field/);
  });
});
