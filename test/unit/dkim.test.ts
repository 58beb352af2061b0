import { after, before, describe, it, test } from 'node:test';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { RelaxedBody } from './dkim-relaxed-oracle.js';
import { RelaxedBodyHash, relaxedHeader } from '../../relay/src/dkim/canon.js';
import {
  canonicalHeaders,
  fromDomain,
  headerComplete,
  headerList,
  keysFor,
  parseHeaderFields,
  type DkimKey,
} from '../../relay/src/dkim/sign.js';
import { MessageSigner, planSigning } from '../../relay/src/dkim/signer.js';
import { dkimDnsRecord, keyProblem } from '../../relay/src/contract/index.js';
import { resolveConfig } from '../../relay/src/config.js';
import { deliveredSize, prepend, withSignatures } from '../../relay/src/dkim/stored.js';
import type { Envelope } from '../../relay/src/spool/types.js';
import { Spool, newQueueId } from '../../relay/src/spool/disk.js';
import { PassThrough, Readable } from 'node:stream';
import { waitFor } from '../helpers/poll.js';
import { ConfigError } from '../../relay/src/errors.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
const ed = generateKeyPairSync('ed25519').privateKey;
const rsaKey: DkimKey = { domain: 'example.com', selector: 'r1', algorithm: 'rsa-sha256', privateKey: rsa };
const edKey: DkimKey = { domain: 'example.com', selector: 'e1', algorithm: 'ed25519-sha256', privateKey: ed };

/** A resolver serving the TXT records of `keys` (what dnsmasq serves in the e2e tests). */
function resolverFor(keys: DkimKey[]) {
  const records = new Map(keys.map((k) => [dkimDnsRecord(k).name, dkimDnsRecord(k).value]));
  return async (name: string, type: string) => {
    const v = type === 'TXT' ? records.get(name) : undefined;
    if (!v) throw Object.assign(new Error(`no ${type} ${name}`), { code: 'ENOTFOUND' });
    return [[v]];
  };
}

/** Signs `message` as the relay does: head up to the empty line planned, the rest streamed in `chunk`-sized parts. */
function sign(message: Buffer, keys: DkimKey[], chunk = 7, expiryMs?: number): string {
  const end = message.indexOf('\r\n\r\n') + 4;
  const plan = planSigning(
    { keys, unmatched: 'send', ...(expiryMs ? { expiryMs } : {}) },
    message.subarray(0, end),
  );
  assert.ok('sign' in plan, JSON.stringify(plan));
  const s = new MessageSigner(plan.sign, plan.fields, expiryMs);
  for (let i = end; i < message.length; i += chunk)
    s.update(message.subarray(i, Math.min(message.length, i + chunk)));
  return s.finish(Date.now());
}

const MSG = Buffer.from(
  'From: "Ann, at home" <ann@news.example.com>\r\nTo: bob@example.org\r\nSubject:  Hello\r\n  world\t \r\n' +
    'Date: Sat, 05 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@news.example.com>\r\n\r\n' +
    'Body  line \t\r\n\r\n  indented\r\nlast\r\n\r\n\r\n',
);

async function verify(message: Buffer, keys: DkimKey[]) {
  const r = await dkimVerify(message, { resolver: resolverFor(keys) });
  return r.results.map(
    (x) => `${x.signingDomain}/${x.selector}/${(x as unknown as { algo: string }).algo}:${x.status.result}`,
  );
}

describe('DKIM signing (mailauth verifies)', () => {
  test('rsa-sha256 and ed25519-sha256 both verify, each alone and both at once', async () => {
    for (const keys of [[rsaKey], [edKey], [rsaKey, edKey]]) {
      const signed = Buffer.concat([Buffer.from(sign(MSG, keys)), MSG]);
      assert.deepEqual(
        await verify(signed, keys),
        keys.map((k) => `example.com/${k.selector}/${k.algorithm}:pass`),
      );
    }
  });

  test('a changed header, an added From or Subject, a changed body: fail', async () => {
    const sig = Buffer.from(sign(MSG, [rsaKey]));
    const tamper = async (m: string) => verify(Buffer.concat([sig, Buffer.from(m)]), [rsaKey]);
    assert.deepEqual(await tamper(MSG.toString().replace('Hello', 'Hallo')), [
      'example.com/r1/rsa-sha256:fail',
    ]);
    // a second From (oversigned): mailauth says neutral (it will not align two From), never pass
    assert.notDeepEqual(await tamper(`From: ann@news.example.com\r\n${MSG}`), [
      'example.com/r1/rsa-sha256:pass',
    ]);
    assert.deepEqual(await tamper(`Reply-To: mallory@evil.example\r\n${MSG}`), [
      'example.com/r1/rsa-sha256:fail',
    ]);
    // a body that does not match bh=: mailauth says neutral (RFC 6376 6.3 leaves it open), never pass
    assert.deepEqual(await tamper(MSG.toString().replace('last', 'lost')), [
      'example.com/r1/rsa-sha256:neutral',
    ]);
    // what relaxed canonicalization allows: white space changes, a Received line in front
    assert.deepEqual(
      await tamper(`Received: from x by y; now\r\n${MSG.toString().replace('Body  line', 'Body line')}`),
      ['example.com/r1/rsa-sha256:pass'],
    );
  });

  test('a wrong key (not the published one) fails', async () => {
    const other = { ...rsaKey, privateKey: generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey };
    const signed = Buffer.concat([Buffer.from(sign(MSG, [other])), MSG]);
    assert.deepEqual(await verify(signed, [rsaKey]), ['example.com/r1/rsa-sha256:fail']);
  });

  test('t= and x= are set; any chunking gives the same body hash; lines stay short', async () => {
    const sig = sign(MSG, [edKey], 7, 3_600_000);
    const t = Number(/t=(\d+)/.exec(sig)![1]);
    assert.ok(Math.abs(t - Date.now() / 1000) < 5);
    assert.equal(Number(/x=(\d+)/.exec(sig)![1]), t + 3600);
    const bh = (x: string) => /bh=([^;]+);/.exec(x)![1];
    for (const c of [1, 2, 3, 1000]) assert.equal(bh(sign(MSG, [edKey], c)), bh(sig));
    assert.ok(
      sig.split('\r\n').every((l) => l.length <= 78),
      sig,
    );
  });
});

describe('RelaxedBodyHash', () => {
  const mine = (b: Buffer, chunk: number) => {
    const h = new RelaxedBodyHash();
    for (let i = 0; i < b.length; i += chunk) h.update(b.subarray(i, i + chunk));
    return h.digest();
  };
  test("equals mailauth's relaxed body hash on random bodies, in any chunking", () => {
    // no bare CR: SMTP forbids it (RFC 5321 2.3.8) and verifiers differ on white space before one
    const alphabet = ['a', 'b', ' ', '\t', '\r\n', '\r\n', '\n', '  ', 'é'];
    for (let n = 0; n < 1000; n++) {
      const len = n % 150;
      let s = '';
      for (let i = 0; i < len; i++) s += alphabet[randomBytes(1)[0] % alphabet.length];
      const b = Buffer.from(`${s}\r\n`); // SMTP DATA always ends with CRLF
      const want = RelaxedBody(b);
      for (const c of [1, 3, 64]) assert.equal(mine(b, c), want, JSON.stringify(s));
    }
  });
  test('an empty body and a body of blank lines hash as empty', () => {
    const empty = createHash('sha256').update('').digest('base64');
    assert.equal(mine(Buffer.alloc(0), 1), empty);
    assert.equal(mine(Buffer.from('\r\n \r\n\t\r\n'), 2), empty);
  });
  test('memory does not grow with trailing blank lines or one long line', () => {
    const before = process.memoryUsage().heapUsed;
    const h = new RelaxedBodyHash();
    const blank = Buffer.from('\r\n'.repeat(32 * 1024));
    const line = Buffer.alloc(64 * 1024, 'x');
    for (let i = 0; i < 300; i++) h.update(i % 2 ? blank : line); // ~20 MB, lines of up to 10 MB
    h.digest();
    assert.ok(process.memoryUsage().heapUsed - before < 8 * 1024 * 1024);
  });
});

describe('DKIM pure parts', () => {
  const f = (s: string) => parseHeaderFields(Buffer.from(`${s}\r\n\r\n`));
  test('From domain: display names, comments, groups of one domain; none for two From or two domains', () => {
    assert.equal(fromDomain(f('From: "a@b.c, d" <X@Sub.Example.COM.>')), 'sub.example.com');
    assert.equal(fromDomain(f('From: x@example.com (at x@y.z)')), 'example.com');
    assert.equal(fromDomain(f('From: a@example.com, b@example.com')), 'example.com');
    assert.equal(fromDomain(f('From: a@example.com, b@example.org')), undefined);
    assert.equal(fromDomain(f('From: a@example.com\r\nFrom: a@example.com')), undefined);
    assert.equal(fromDomain(f('To: a@example.com')), undefined);
  });
  test('key choice: exact domain, else the nearest parent; never a TLD', () => {
    const k = (domain: string, selector = 's') => ({ domain, selector });
    const keys = [k('example.com'), k('example.com', 't'), k('mail.example.com'), k('com')];
    assert.deepEqual(
      keysFor(keys, 'example.com').map((x) => x.selector),
      ['s', 't'],
    );
    assert.deepEqual(keysFor(keys, 'a.mail.example.com'), [k('mail.example.com')]);
    assert.deepEqual(keysFor(keys, 'other.example.com').length, 2);
    assert.deepEqual(keysFor(keys, 'example.org'), []);
    assert.deepEqual(keysFor(keys, undefined), []);
  });
  test('header list: present fields as often as they occur, From and Subject oversigned, no Received', () => {
    const fields = f('Received: x\r\nFrom: a@b.c\r\nTo: x@y.z\r\nTo: w@y.z\r\nX-Mailer: m');
    assert.deepEqual(headerList(fields).slice(0, 7), [
      'from',
      'from',
      'reply-to',
      'subject',
      'date',
      'message-id',
      'to',
    ]);
    assert.equal(headerList(fields).filter((h) => h === 'to').length, 3);
    assert.ok(!headerList(fields).includes('received') && !headerList(fields).includes('x-mailer'));
    // bottom-up, and an oversigned name past its occurrences adds nothing
    assert.equal(
      canonicalHeaders(fields, ['to', 'to', 'to', 'from']),
      'to:w@y.z\r\nto:x@y.z\r\nfrom:a@b.c\r\n',
    );
  });
  test('relaxed header canonicalization and a complete header section', () => {
    assert.equal(relaxedHeader('SubJect \t:  a \r\n\t b  '), 'subject:a b\r\n');
    assert.ok(headerComplete(Buffer.from('A: b\r\n\r\n')) && headerComplete(Buffer.from('A: b\n\n')));
    assert.ok(!headerComplete(Buffer.from('A: b\r\n')));
  });
  test('plan: unmatched and malformed messages are not signed, with the reason', () => {
    const d = { keys: [rsaKey], unmatched: 'send' as const };
    assert.deepEqual(planSigning(d, Buffer.from('From: a@example.org\r\n\r\n')), {
      unsigned: 'no-key',
      domain: 'example.org',
    });
    assert.deepEqual(planSigning(d, Buffer.from('Subject: x\r\n\r\n')), { unsigned: 'no-from-domain' });
    assert.deepEqual(planSigning(d, Buffer.from('From: a@example.com\r\n')), {
      unsigned: 'malformed-header',
    });
    const p = planSigning(d, Buffer.from('From: a@mail.example.com\r\n\r\n'));
    assert.ok('sign' in p && p.domain === 'mail.example.com' && p.sign[0] === rsaKey);
  });
  test('key checks and DNS records', () => {
    assert.equal(keyProblem(rsa, 'rsa-sha256'), undefined);
    assert.equal(keyProblem(ed, 'ed25519-sha256'), undefined);
    assert.match(keyProblem(ed, 'rsa-sha256')!, /not an RSA key/);
    assert.match(keyProblem(rsa, 'ed25519-sha256')!, /not an Ed25519 key/);
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey;
    assert.match(keyProblem(small, 'rsa-sha256')!, /1024 bits: at least 2048/);
    assert.equal(dkimDnsRecord(edKey).name, 'e1._domainkey.example.com');
    assert.match(dkimDnsRecord(edKey).value, /^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=$/);
    assert.match(dkimDnsRecord(rsaKey).value, /^v=DKIM1; k=rsa; p=MIIBIjAN/);
  });
});

describe('tenants[].dkim in the config', () => {
  let dir: string;
  const pem = (k: KeyObject) => k.export({ type: 'pkcs8', format: 'pem' });
  before(async () => {
    dir = await makeTmpDir('cartero-dkim-config-');
    await mkdir(path.join(dir, 'secrets'));
    await writeFile(path.join(dir, 'secrets/rsa.pem'), pem(rsa));
    await writeFile(path.join(dir, 'secrets/ed.pem'), pem(ed));
    await writeFile(
      path.join(dir, 'secrets/small.pem'),
      pem(generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey),
    );
    await writeFile(path.join(dir, 'secrets/junk.pem'), 'not a key\n');
  });
  after(async () => removeTmpDir(dir));
  const load = (dkim: unknown) =>
    resolveConfig(
      { version: 1, listeners: [{ name: 'smtp', port: 2525 }], tenants: [{ name: 't', dkim }] },
      dir,
    );
  const fails = (dkim: unknown, field: string, reason: RegExp) =>
    assert.throws(
      () => load(dkim),
      (e: unknown) => e instanceof ConfigError && e.field === field && reason.test(e.message),
    );

  it('resolves keys (domain in lower case), the unmatched policy (default send) and the expiry', () => {
    const cfg = load({
      keys: [
        { domain: 'Example.COM.', selector: 'r', privateKeyFile: 'rsa.pem' },
        { domain: 'example.com', selector: 'e', algorithm: 'ed25519-sha256', privateKeyFile: 'ed.pem' },
      ],
      expiry: '7d',
    });
    const d = cfg.tenants.get('t')!.dkim!;
    assert.deepEqual(
      d.keys.map((k) => `${k.domain}/${k.selector}/${k.algorithm}/${k.privateKey.asymmetricKeyType}`),
      ['example.com/r/rsa-sha256/rsa', 'example.com/e/ed25519-sha256/ed25519'],
    );
    assert.equal(d.unmatched, 'send');
    assert.equal(d.expiryMs, 7 * 86_400_000);
    assert.equal(
      load({
        keys: [{ domain: 'a.b', selector: 's', privateKeyFile: 'rsa.pem' }],
        unmatched: 'refuse',
      }).tenants.get('t')!.dkim!.unmatched,
      'refuse',
    );
  });

  it('refuses a short RSA key, a key of the other algorithm, a file that is no key, a selector twice', () => {
    const key = (privateKeyFile: string, more = {}) => ({
      domain: 'example.com',
      selector: 's',
      privateKeyFile,
      ...more,
    });
    fails({ keys: [key('small.pem')] }, '/tenants/0/dkim/keys/0/privateKeyFile', /1024 bits: at least 2048/);
    fails({ keys: [key('ed.pem')] }, '/tenants/0/dkim/keys/0/privateKeyFile', /ed25519 key, not an RSA key/);
    fails(
      { keys: [key('rsa.pem', { algorithm: 'ed25519-sha256' })] },
      '/tenants/0/dkim/keys/0/privateKeyFile',
      /not an Ed25519 key/,
    );
    fails({ keys: [key('junk.pem')] }, '/tenants/0/dkim/keys/0/privateKeyFile', /not a PEM private key/);
    fails({ keys: [key('missing.pem')] }, '/tenants/0/dkim/keys/0/privateKeyFile', /cannot read/);
    fails(
      { keys: [key('rsa.pem'), key('ed.pem', { algorithm: 'ed25519-sha256' })] },
      '/tenants/0/dkim/keys/1/selector',
      /a second key for s\._domainkey\.example\.com/,
    );
    fails(
      { keys: [key('rsa.pem', { algorithm: 'rsa-sha1' })] },
      '/tenants/0/dkim/keys/0/algorithm',
      /must be one of/,
    );
    fails(
      { keys: [key('rsa.pem', { domain: 'bad domain' })] },
      '/tenants/0/dkim/keys/0/domain',
      /pattern|must match/,
    );
    fails({ keys: [] }, '/tenants/0/dkim/keys', /fewer than 1|at least 1/);
    const five = ['a', 'b', 'c', 'd', 'e'].map((selector) => key('rsa.pem', { selector }));
    fails({ keys: five }, '/tenants/0/dkim/keys/4/domain', /more than 4 keys for example\.com/);
    assert.equal(load({ keys: five.slice(0, 4) }).tenants.get('t')!.dkim!.keys.length, 4);
    fails({ keys: [key('rsa.pem')], expiry: '5m' }, '/tenants/0/dkim/expiry', /at least 1h/);
  });
});

describe('stored signatures at delivery', () => {
  const env = (dkim?: string) => ({ size: 10, ...(dkim ? { dkim } : {}) }) as unknown as Envelope;
  it('go in front of a body in memory or streamed, and count in the size declared', async () => {
    assert.equal(deliveredSize(env()), 10);
    assert.equal(deliveredSize(env('DKIM-Signature: x\r\n')), 29);
    const buf = await withSignatures(env('S: 1\r\n'), Promise.resolve(Buffer.from('body')));
    assert.equal(buf.toString(), 'S: 1\r\nbody');
    assert.equal(await withSignatures(env(), Promise.resolve(Buffer.from('body'))).then(String), 'body');
    const stream = await withSignatures(
      env('S: 1\r\n'),
      Promise.resolve(Readable.from([Buffer.from('a'), Buffer.from('b')])),
    );
    assert.ok(!Buffer.isBuffer(stream));
    const parts: Buffer[] = [];
    for await (const c of stream) parts.push(c as Buffer);
    assert.equal(Buffer.concat(parts).toString(), 'S: 1\r\nab');
  });
  it('a prefixed stream given up on closes the stream under it', async () => {
    const under = new PassThrough();
    const out = prepend(Buffer.from('S: 1\r\n'), under);
    assert.ok(!Buffer.isBuffer(out));
    out.destroy();
    await waitFor(() => under.destroyed, { what: 'the file stream closed' });
  });
});

describe('signatures in the queue file', () => {
  it('survive a reopen of the spool (the envelope keeps them) and go in front of the stored bytes', async () => {
    const dir = await makeTmpDir('cartero-dkim-spool-');
    try {
      const raw = Buffer.from('Received: from x\r\nFrom: a@example.com\r\n\r\nbody\r\n');
      const id = newQueueId();
      const env: Envelope = {
        v: 1,
        id,
        tenant: 'default',
        pool: null,
        arrivedAt: Date.now(),
        from: 'a@example.com',
        rcpts: [{ address: 'b@example.org' }],
        dsn: {},
        size: raw.length,
        eightBit: false,
        smtpUtf8: false,
        origin: 'smtp',
        client: { address: '127.0.0.1', helo: 'c', listener: 'smtp' },
        dkim: sign(Buffer.from('From: a@example.com\r\n\r\nbody\r\n'), [edKey]),
      };
      const first = new Spool({ dir: path.join(dir, 'spool'), maxMessages: 10, minFreeBytes: 0 });
      await first.open();
      await first.write(env, [raw]);
      const again = new Spool({ dir: path.join(dir, 'spool'), maxMessages: 10, minFreeBytes: 0 });
      await again.open();
      const m = await again.load(id);
      assert.equal(m.env.dkim, env.dkim);
      assert.equal(m.env.size, raw.length, 'size counts the stored bytes only');
      const sent = (await withSignatures(m.env, again.readBody(m))) as Buffer;
      assert.equal(sent.length, deliveredSize(m.env));
      assert.deepEqual(sent, Buffer.concat([Buffer.from(env.dkim!), raw]));
    } finally {
      await removeTmpDir(dir);
    }
  });
});
