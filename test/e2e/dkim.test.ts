/**
 * DKIM signing end to end: a real relay signs what it accepts, delivers through MX (a real dnsmasq serves
 * the MX and the `<selector>._domainkey` TXT records) to a test MX, and independent verifiers check what
 * arrived against the published records: mailauth, and in one test Debian's python3-dkim (`dkimverify`).
 * Covers both algorithms, dual signing, a parent-domain key, rotation (two selectors), a wrong key, a header
 * changed after delivery, unmatched mail sent unsigned or refused, a key file replaced under a running
 * relay, and a message handed off to a peer relay while draining (signed once, by the first relay).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { promises as dnsp } from 'node:dns';
import { rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { startDns, type DnsServer } from '../helpers/dnsmasq.js';
import { startTestMx, type TestMx, type ReceivedMessage } from '../helpers/testmx.js';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { sendMail } from '../helpers/swaks.js';
import { waitFor } from '../helpers/poll.js';
import { unusedPort } from '../helpers/ports.js';
import { dkimDnsRecord } from '../../relay/src/contract/index.js';

const TOKEN = 'dkim-test-admin-token';
const pem = (k: KeyObject) => k.export({ type: 'pkcs8', format: 'pem' }).toString();
const newRsa = () => generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
const newEd = () => generateKeyPairSync('ed25519').privateKey;

interface TestKey {
  domain: string;
  selector: string;
  algorithm: 'rsa-sha256' | 'ed25519-sha256';
  key: KeyObject;
  /** The key whose record DNS publishes for this selector (default `key`): a different one = wrong key. */
  published?: KeyObject;
}
const KEYS: TestKey[] = [
  { domain: 'rsa.test', selector: 'r1', algorithm: 'rsa-sha256', key: newRsa() },
  { domain: 'ed.test', selector: 'e1', algorithm: 'ed25519-sha256', key: newEd() },
  { domain: 'dual.test', selector: 'd-rsa', algorithm: 'rsa-sha256', key: newRsa() },
  { domain: 'dual.test', selector: 'd-ed', algorithm: 'ed25519-sha256', key: newEd() },
  { domain: 'rot.test', selector: '2026a', algorithm: 'rsa-sha256', key: newRsa() },
  { domain: 'rot.test', selector: '2026b', algorithm: 'rsa-sha256', key: newRsa() },
  { domain: 'wrong.test', selector: 'w1', algorithm: 'rsa-sha256', key: newRsa(), published: newRsa() },
  { domain: 'reload.test', selector: 'r', algorithm: 'ed25519-sha256', key: newEd(), published: newEd() },
];
const STRICT: TestKey = { domain: 'strict.test', selector: 's1', algorithm: 'ed25519-sha256', key: newEd() };
const file = (k: TestKey) => `dkim-${k.domain}-${k.selector}.pem`;
const keyConfig = (k: TestKey) => ({
  domain: k.domain,
  selector: k.selector,
  algorithm: k.algorithm,
  privateKeyFile: file(k),
});

function relayConfig(
  name: string,
  dns: DnsServer,
  mxPort: number,
  downPort?: number,
): Record<string, unknown> {
  return {
    hostname: `${name}.cartero.test`,
    tenants: [
      {
        name: 'acme',
        trustedNetworks: ['127.0.0.1/32'],
        dkim: { keys: KEYS.map(keyConfig), expiry: '7d' },
      },
      {
        name: 'strict',
        accounts: [{ username: 'strict', passwordFile: 'strict.pass' }],
        dkim: { keys: [keyConfig(STRICT)], unmatched: 'refuse' },
      },
    ],
    peer: { username: 'fleet-peer', passwordFile: 'peer.pass' },
    admin: { tokenFile: 'admin.token' },
    queue: { retry: { initial: '1s', factor: 1, max: '1s' } },
    routing: {
      default: { type: 'mx' },
      // relay A cannot reach down.test (a port nobody listens on): those messages wait for the drain
      domains: downPort ? [{ domain: 'down.test', host: '127.0.4.41', port: downPort, tls: 'none' }] : [],
    },
    dns: { servers: [dns.server], allowPrivateTargets: ['127.0.0.0/8'], mxPort, timeout: '2s' },
  };
}

function secrets(): Record<string, string> {
  const s: Record<string, string> = {
    'strict.pass': 'strict secret',
    'peer.pass': 'peer secret',
    'admin.token': TOKEN,
    [file(STRICT)]: pem(STRICT.key),
  };
  for (const k of KEYS) s[file(k)] = pem(k.key);
  return s;
}

type Verdict = string;

describe('DKIM signing', () => {
  let dns: DnsServer;
  let mx: TestMx;
  let a: RelayProc;
  let b: RelayProc;
  let resolver: dnsp.Resolver;

  /** mailauth's verdict on each signature: `d=/s=/a=:result`, in the order of the fields. */
  async function verify(raw: Buffer): Promise<Verdict[]> {
    const r = await dkimVerify(raw, {
      resolver: (name: string, type: string) => resolver.resolve(name, type) as Promise<string[][]>,
    });
    return r.results.map(
      (x) => `${x.signingDomain}/${x.selector}/${(x as unknown as { algo: string }).algo}:${x.status.result}`,
    );
  }

  async function deliver(from: string, to: string, opts: { auth?: boolean; subject?: string } = {}) {
    await sendMail(a.ports.smtp, {
      from,
      to: [to],
      subject: opts.subject ?? `dkim ${to}`,
      body: 'Hello,\r\n\r\n  a body  with\twhite space \r\n\r\n\r\n',
      headers: { 'List-Unsubscribe': '<https://acme.test/u/1>' },
      ...(opts.auth ? { auth: { user: 'strict', pass: 'strict secret' } } : {}),
    });
    const [m] = await waitFor(() => (mx.byRecipient(to).length ? mx.byRecipient(to) : undefined), {
      what: `delivery to ${to}`,
    });
    return m;
  }

  const signatures = (m: ReceivedMessage) =>
    m.raw.toString('latin1').match(/^DKIM-Signature:/gim)?.length ?? 0;

  before(async () => {
    mx = await startTestMx({ address: '127.0.4.40', name: 'mx.dest.test' });
    dns = await startDns({
      mx: ['dest.test', 'down.test'].map((domain) => ({ domain, host: 'mx.dest.test', pref: 10 })),
      a: [{ name: 'mx.dest.test', ip: '127.0.4.40' }],
      txt: [...KEYS, STRICT].map((k) => dkimDnsRecord({ ...k, privateKey: k.published ?? k.key })),
    });
    resolver = new dnsp.Resolver();
    resolver.setServers([dns.server]);
    const down = await unusedPort('127.0.4.41');
    a = await startRelay({ config: relayConfig('relay-a', dns, mx.port, down), secrets: secrets() });
    b = await startRelay({ config: relayConfig('relay-b', dns, mx.port), secrets: secrets() });
  });

  after(async () => {
    await a?.cleanup();
    await b?.cleanup();
    await Promise.all([mx?.close(), dns?.stop()]);
  });

  test('rsa-sha256: verifies; t= and x= set; a header changed after delivery fails', async () => {
    const m = await deliver('app@rsa.test', 'ok-rsa@dest.test');
    assert.deepEqual(await verify(m.raw), ['rsa.test/r1/rsa-sha256:pass']);
    const sig = /^DKIM-Signature:[^]*?(?=\r\n\S)/m.exec(m.raw.toString('latin1'))![0];
    const t = Number(/\st=(\d+);/.exec(sig)![1]);
    assert.ok(Math.abs(t - Date.now() / 1000) < 60, sig);
    assert.equal(Number(/\sx=(\d+);/.exec(sig)![1]), t + 7 * 86400);
    assert.match(sig, /h=from:from:/, 'From is oversigned');
    // the signature is ours, above our Received line (which it does not cover)
    assert.match(m.raw.toString('latin1'), /^DKIM-Signature: [^]*\r\nReceived: from client\.test/);
    const changed = Buffer.from(
      m.raw.toString('latin1').replace(/^Subject: .*$/m, 'Subject: changed'),
      'latin1',
    );
    assert.deepEqual(await verify(changed), ['rsa.test/r1/rsa-sha256:fail']);
  });

  test('ed25519-sha256, and python3-dkim (dkimverify) agrees, also on the RSA signature', async () => {
    const m = await deliver('app@ed.test', 'ok-ed@dest.test');
    assert.deepEqual(await verify(m.raw), ['ed.test/e1/ed25519-sha256:pass']);
    assert.deepEqual(await dkimverify(m.raw, dns.port), { code: 0, out: 'signature ok' });
    const r = await deliver('app@rsa.test', 'ok-rsa-py@dest.test');
    assert.deepEqual(await dkimverify(r.raw, dns.port), { code: 0, out: 'signature ok' });
    const changed = Buffer.from(
      r.raw.toString('latin1').replace(/^To: .*$/m, 'To: other@dest.test'),
      'latin1',
    );
    assert.deepEqual(await dkimverify(changed, dns.port), { code: 1, out: 'signature verification failed' });
  });

  test('dual signing: one signature per algorithm, both pass', async () => {
    const m = await deliver('app@dual.test', 'ok-dual@dest.test');
    assert.deepEqual(await verify(m.raw), [
      'dual.test/d-rsa/rsa-sha256:pass',
      'dual.test/d-ed/ed25519-sha256:pass',
    ]);
    assert.equal((await dkimverify(m.raw, dns.port, 1)).code, 0);
  });

  test('a 1 MB message (hashed in chunks, sent streamed from disk) verifies', async () => {
    const line = `${'x'.repeat(70)}  \t y\r\n`;
    const body = `${line.repeat(14_000)}\r\n\r\n`;
    await sendMail(a.ports.smtp, { from: 'app@dual.test', to: ['ok-big@dest.test'], subject: 'big', body });
    const [m] = await waitFor(
      () => (mx.byRecipient('ok-big@dest.test').length ? mx.byRecipient('ok-big@dest.test') : undefined),
      {
        what: 'delivery of the big message',
      },
    );
    assert.ok(m.raw.length > 1_000_000);
    assert.deepEqual(await verify(m.raw), [
      'dual.test/d-rsa/rsa-sha256:pass',
      'dual.test/d-ed/ed25519-sha256:pass',
    ]);
  });

  test('a subdomain From is signed with the parent domain key (relaxed alignment)', async () => {
    const m = await deliver('news@mail.rsa.test', 'ok-parent@dest.test');
    assert.deepEqual(await verify(m.raw), ['rsa.test/r1/rsa-sha256:pass']);
  });

  test('rotation: both selectors of a domain sign while both are listed', async () => {
    const m = await deliver('app@rot.test', 'ok-rot@dest.test');
    assert.deepEqual(await verify(m.raw), [
      'rot.test/2026a/rsa-sha256:pass',
      'rot.test/2026b/rsa-sha256:pass',
    ]);
  });

  test('a key that is not the published one is detected', async () => {
    const m = await deliver('app@wrong.test', 'ok-wrong@dest.test');
    assert.deepEqual(await verify(m.raw), ['wrong.test/w1/rsa-sha256:fail']);
  });

  test('unmatched From: sent unsigned by default, refused with 550 5.7.1 under unmatched: refuse', async () => {
    const m = await deliver('app@other.test', 'ok-unsigned@dest.test');
    assert.equal(signatures(m), 0);
    await assert.rejects(
      sendMail(a.ports.smtp, {
        from: 'app@other.test',
        to: ['ok-refused@dest.test'],
        auth: { user: 'strict', pass: 'strict secret' },
      }),
      /550 5\.7\.1 No DKIM key for the From domain other\.test/,
    );
    const log = await a.waitForLog((l) => l.event === 'dkim.refused');
    assert.equal(log.tenant, 'strict');
    assert.equal(log.reason, 'no-key');
    const s = await deliver('app@strict.test', 'ok-strict@dest.test', { auth: true });
    assert.deepEqual(await verify(s.raw), ['strict.test/s1/ed25519-sha256:pass']);
    const metrics = await (await fetch(`http://127.0.0.1:${a.adminPort}/metrics`)).text();
    assert.match(metrics, /cartero_dkim_unsigned_total\{tenant="acme",reason="no-key"\} 1\n/);
    assert.match(metrics, /cartero_dkim_refused_total\{tenant="strict",reason="no-key"\} 1\n/);
    assert.match(metrics, /cartero_dkim_signed_total\{tenant="strict",algorithm="ed25519-sha256"\} 1\n/);
    assert.match(metrics, /cartero_dkim_signed_total\{tenant="acme",algorithm="rsa-sha256"\} [1-9]/);
  });

  test('a key file replaced under the running relay signs from the next message on', async () => {
    const k = KEYS.find((x) => x.domain === 'reload.test')!;
    const before = await deliver('app@reload.test', 'ok-reload-1@dest.test');
    assert.deepEqual(await verify(before.raw), ['reload.test/r/ed25519-sha256:fail']);
    const since = a.logs.length;
    const target = path.join(a.root, 'secrets', file(k));
    await writeFile(`${target}.tmp`, pem(k.published!), { mode: 0o600 });
    await rename(`${target}.tmp`, target);
    await a.waitForLog((l) => l.event === 'config.reloaded', 15_000, since);
    const after = await deliver('app@reload.test', 'ok-reload-2@dest.test');
    assert.deepEqual(await verify(after.raw), ['reload.test/r/ed25519-sha256:pass']);
  });

  // last: relay A drains and takes no more mail
  test('a message handed off to a peer relay is signed once, by the relay that accepted it', async () => {
    await sendMail(a.ports.smtp, { from: 'app@rsa.test', to: ['ok-handoff@down.test'], subject: 'handoff' });
    await a.waitForLog((l) => l.event === 'deferred', 15_000);
    const res = await fetch(`http://127.0.0.1:${a.adminPort}/drain`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ peers: [{ host: '127.0.0.1', port: b.ports.smtp }] }),
    });
    assert.equal(res.status, 202);
    const [m] = await waitFor(
      () =>
        mx.byRecipient('ok-handoff@down.test').length ? mx.byRecipient('ok-handoff@down.test') : undefined,
      { what: 'delivery by the peer', timeoutMs: 20_000 },
    );
    assert.equal(signatures(m), 1);
    assert.doesNotMatch(m.raw.toString('latin1'), /X-Cartero-Handoff/i);
    assert.deepEqual(await verify(m.raw), ['rsa.test/r1/rsa-sha256:pass']);
    assert.ok(
      b.logs.some((l) => l.event === 'received' && l.handoffFrom !== undefined && l.dkim === undefined),
    );
  });
});

/**
 * Debian's dkimverify (python3-dkim) on `raw`, with its DNS lookups sent to the test dnsmasq (the script
 * itself is run unchanged; only dnspython's default resolver is replaced). Checks signature `index`.
 */
function dkimverify(raw: Buffer, dnsPort: number, index = 0): Promise<{ code: number | null; out: string }> {
  const py = [
    'import dns.resolver, runpy, sys',
    'r = dns.resolver.Resolver(configure=False)',
    "r.nameservers = ['127.0.0.1']",
    `r.port = ${dnsPort}`,
    'dns.resolver.default_resolver = r',
    `sys.argv = ['dkimverify', '--index', '${index}']`,
    "runpy.run_path('/usr/bin/dkimverify', run_name='__main__')",
  ].join('\n');
  return new Promise((resolve, reject) => {
    const p = spawn('/usr/bin/python3', ['-c', py], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (c: Buffer) => (out += c.toString()));
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    p.on('error', reject);
    p.on('close', (code) => {
      if (code !== 0 && code !== 1) reject(new Error(`dkimverify exited ${code}: ${err}`));
      else resolve({ code, out: out.trim() });
    });
    p.stdin.end(raw);
  });
}
