/**
 * Certificate renewal in a running relay process, without dropping connections. The TLS folder has the
 * layout of a Kubernetes Secret volume (tls.crt -> ..data/tls.crt, ..data -> ..<version>/), and a renewal
 * is the kubelet's atomic swap of the ..data symlink:
 *
 * 1. cert A is served on a STARTTLS and an implicit-TLS listener; a session on each stays open;
 * 2. the Secret is renewed to cert B: new handshakes on both listeners get B (polled), the open sessions
 *    still complete a message, tls.reloaded names B's fingerprint, and the metrics show B's notAfter;
 * 3. a broken pair (A's certificate with B's key) is refused (tls.invalid, counted) and B keeps being served.
 *
 * Addresses: test MX 127.0.4.71.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdir, rename, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { startTestMx, type TestMx } from '../helpers/testmx.js';
import { makeSelfSignedCert, type TestCert } from '../helpers/certs.js';
import { makeTmpDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/poll.js';
import { fingerprintOf, openTlsSession, servedFingerprint, type TlsSession } from '../helpers/tls-probe.js';

const MX_IP = '127.0.4.71';
const DOMAIN = 'renew.test';

/**
 * Writes the pair the way the kubelet updates a Secret volume: a new ..<version> folder, a ..data_tmp
 * symlink to it renamed over ..data, and (once) the tls.crt/tls.key symlinks into ..data.
 */
async function writeSecretVolume(dir: string, version: number, pair: { cert: Buffer; key: Buffer }) {
  const v = `..v${version}`;
  await mkdir(path.join(dir, v), { recursive: true });
  await writeFile(path.join(dir, v, 'tls.crt'), pair.cert);
  await writeFile(path.join(dir, v, 'tls.key'), pair.key);
  await symlink(v, path.join(dir, '..data_tmp'));
  await rename(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
  if (version === 1) {
    await symlink('..data/tls.crt', path.join(dir, 'tls.crt'));
    await symlink('..data/tls.key', path.join(dir, 'tls.key'));
  }
}

async function metric(relay: RelayProc, name: string, labels: string): Promise<number | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${relay.adminPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

/** MAIL, RCPT, DATA and the message on an open TLS session; returns the final reply. */
async function sendOn(s: TlsSession, rcpt: string): Promise<string> {
  assert.match(await s.lines.command('MAIL FROM:<app@acme.test>'), /^250 /);
  assert.match(await s.lines.command(`RCPT TO:<${rcpt}>`), /^250 /);
  assert.match(await s.lines.command('DATA'), /^354 /);
  const body = [
    'From: <app@acme.test>',
    `To: <${rcpt}>`,
    'Subject: renewal',
    `Message-ID: <${rcpt.replace('@', '.')}@acme.test>`,
    '',
    'Sent on a connection opened before the certificate changed.',
    '.',
  ].join('\r\n');
  return s.lines.command(body);
}

describe('TLS certificate renewal (relay process)', () => {
  let mx: TestMx;
  let relay: RelayProc;
  let a: TestCert;
  /** What a client of this test trusts: both test certificates (fingerprints tell them apart). */
  const trusted = () => [a.cert, b.cert];
  let b: TestCert;
  let tlsDir: string;
  const held: TlsSession[] = [];

  before(async () => {
    [a, b] = await Promise.all([makeSelfSignedCert('localhost'), makeSelfSignedCert('localhost')]);
    mx = await startTestMx({ address: MX_IP });
    const root = await makeTmpDir('cartero-renew-');
    tlsDir = path.join(root, 'tls');
    await mkdir(tlsDir, { recursive: true });
    await writeSecretVolume(tlsDir, 1, a);
    relay = await startRelay({
      dir: root,
      config: {
        hostname: 'relay.renew.test',
        listeners: [
          { name: 'submission', tls: 'starttls' },
          { name: 'smtps', tls: 'implicit' },
        ],
        tls: { certFile: 'tls.crt', keyFile: 'tls.key' },
        routing: {
          default: { type: 'mx' },
          domains: [{ domain: DOMAIN, host: MX_IP, port: mx.port, tls: 'none' }],
        },
        tenants: [{ name: 'acme', trustedNetworks: ['127.0.0.1/32'] }],
      },
    });
  });

  after(async () => {
    for (const s of held) s.socket.destroy();
    await relay?.cleanup();
    await mx?.close();
  });

  test('cert A is served on both listeners, and the metric shows its notAfter', async () => {
    const fa = fingerprintOf(a.cert);
    assert.equal(await servedFingerprint(relay.ports.submission, 'starttls', trusted()), fa);
    assert.equal(await servedFingerprint(relay.ports.smtps, 'implicit', trusted()), fa);
    const notAfter = Math.floor(Date.parse(new X509Certificate(a.cert).validTo) / 1000);
    assert.equal(
      await metric(relay, 'cartero_tls_cert_not_after_seconds', 'listener="submission"'),
      notAfter,
    );
    assert.equal(await metric(relay, 'cartero_tls_cert_not_after_seconds', 'listener="smtps"'), notAfter);
  });

  test('a renewed Secret is served to new handshakes; open sessions keep going', async () => {
    held.push(await openTlsSession(relay.ports.submission, 'starttls', trusted()));
    held.push(await openTlsSession(relay.ports.smtps, 'implicit', trusted()));
    const since = relay.logs.length;
    await writeSecretVolume(tlsDir, 2, b);

    const fb = fingerprintOf(b.cert);
    await waitFor(
      async () => (await servedFingerprint(relay.ports.submission, 'starttls', trusted())) === fb,
      {
        what: 'cert B on the STARTTLS listener',
        timeoutMs: 5_000,
      },
    );
    assert.equal(await servedFingerprint(relay.ports.smtps, 'implicit', trusted()), fb);
    const line = await relay.waitForLog((l) => l.event === 'tls.reloaded', 5_000, since);
    assert.equal(line.fingerprint, fb);
    assert.equal(line.notAfter, new Date(new X509Certificate(b.cert).validTo).toISOString());
    assert.deepEqual(line.listeners, ['submission', 'smtps']);
    assert.ok(
      !relay.logs.slice(since).some((l) => l.event === 'config.restart-needed'),
      'a renewal needs no restart',
    );

    // the sessions opened under A are still A's and still work
    for (const [i, s] of held.entries()) {
      assert.equal(s.fingerprint, fingerprintOf(a.cert));
      assert.match(await sendOn(s, `held${i}@${DOMAIN}`), /^250 /);
    }
    await waitFor(
      () => mx.byRecipient(`held0@${DOMAIN}`).length && mx.byRecipient(`held1@${DOMAIN}`).length,
      {
        what: 'both messages at the MX',
      },
    );
    const notAfter = Math.floor(Date.parse(new X509Certificate(b.cert).validTo) / 1000);
    assert.equal(
      await metric(relay, 'cartero_tls_cert_not_after_seconds', 'listener="submission"'),
      notAfter,
    );
    assert.equal(await metric(relay, 'cartero_tls_reloads_total', 'result="applied"'), 1);
  });

  test('a key that does not match its certificate is refused; cert B stays', async () => {
    const since = relay.logs.length;
    await writeSecretVolume(tlsDir, 3, { cert: a.cert, key: b.key });
    const line = await relay.waitForLog((l) => l.event === 'tls.invalid', 5_000, since);
    assert.match(String(line.err), /does not match/);
    assert.equal(await metric(relay, 'cartero_tls_reloads_total', 'result="invalid"'), 1);
    const fb = fingerprintOf(b.cert);
    assert.equal(await servedFingerprint(relay.ports.submission, 'starttls', trusted()), fb);
    assert.equal(await servedFingerprint(relay.ports.smtps, 'implicit', trusted()), fb);
    assert.equal(await metric(relay, 'cartero_tls_reloads_total', 'result="applied"'), 1);
  });
});
