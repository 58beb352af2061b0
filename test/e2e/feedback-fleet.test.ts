/**
 * A report without a token, traced across the fleet by its Message-ID (docs/adr/020-sent-message-index.md):
 * two relays in this process, A (admin on 127.0.12.1) and B (admin on 127.0.12.2, feedback listener on
 * 127.0.12.3), their admin ports on one port number as in a StatefulSet; a dnsmasq serves
 * `relays.fleet.test` with both addresses, and both relays resolve feedback.peerLookup through it (their
 * dns.servers). A message is accepted by A without return-path tagging; ARF reports naming only its
 * Message-ID go to B's feedback listener: B finds the message through A.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolveConfig } from '../../relay/src/config.js';
import { Relay } from '../../relay/src/relay.js';
import { createLogger } from '../../relay/src/log.js';
import type { NewEvent } from '../../relay/src/events/sink.js';
import { startDns, type DnsServer } from '../helpers/dnsmasq.js';
import { startTestMx, type TestMx } from '../helpers/testmx.js';
import { SmtpSession } from '../helpers/smtpsession.js';
import { unusedPort } from '../helpers/ports.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const FIXTURES = path.join(ROOT, 'test/fixtures/feedback');
const A_ADMIN = '127.0.12.1';
const B_ADMIN = '127.0.12.2';
const B_FEEDBACK = '127.0.12.3';
const TOKEN = 'fleet-admin-token-0123456789';
const ACME = { user: 'acme-app', pass: 'acme-Pa55word' };
const QUEUED_RE = /queued as ([0-9A-Z]{20})/;

let dns: DnsServer;
let mx: TestMx;
let dir: string;
let a: Relay;
let b: Relay;
let adminPort: number;
const bEvents: NewEvent[] = [];

async function api<T>(relay: Relay, host: string, p: string): Promise<T> {
  const r = await fetch(`http://${host}:${relay.admin.port}${p}`, {
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  assert.equal(r.status, 200, `GET ${p}`);
  return (await r.json()) as T;
}
async function metric(relay: Relay, host: string, name: string, labels: string): Promise<number> {
  const r = await fetch(`http://${host}:${relay.admin.port}/metrics`, {
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  const line = (await r.text()).split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line ? Number(line.split(' ')[1]) : 0;
}
async function suppressedOnB(address: string): Promise<boolean> {
  const r = await api<{ items: { address: string }[] }>(b, B_ADMIN, '/suppressions?tenant=acme&limit=1000');
  return r.items.some((e) => e.address === address);
}

async function submitToA(to: string[], messageId: string): Promise<string> {
  const s = await SmtpSession.open(a.inbound.ports.smtp);
  try {
    const [auth] = await s.command(
      `AUTH PLAIN ${Buffer.from(`\0${ACME.user}\0${ACME.pass}`).toString('base64')}`,
    );
    assert.equal(auth.code, 235, auth.text);
    const msg = `From: <app@acme.test>\r\nTo: ${to.join(', ')}\r\nSubject: hi\r\nMessage-ID: ${messageId}\r\n\r\nhi\r\n`;
    const r = await s.send('app@acme.test', to, msg);
    assert.equal(r.data?.code, 250, r.data?.text);
    return QUEUED_RE.exec(r.data!.text)![1];
  } finally {
    await s.quit();
  }
}

/** An ARF report (the webmail CFL layout: no Original-Rcpt-To) to B's feedback listener. */
async function reportToB(fixture: string, messageId: string, rcpt: string): Promise<number | undefined> {
  const body = (await readFile(path.join(FIXTURES, fixture), 'utf8'))
    .split('{{RCPT}}')
    .join(rcpt)
    .split('{{RETURN_PATH}}')
    .join('app@acme.test') // no return-path tagging: no token anywhere
    .split('{{FROM}}')
    .join('app@acme.test')
    .split('{{MESSAGE_ID}}')
    .join(messageId)
    .split('{{FEEDBACK}}')
    .join('fbl@acme.test');
  const s = await SmtpSession.open(b.feedback.listener.port, { host: B_FEEDBACK });
  try {
    const r = await s.send('feedback@webmail.test', ['fbl@acme.test'], body.replace(/\r?\n/g, '\r\n'));
    return r.data?.code;
  } finally {
    await s.quit();
  }
}

function relayConfig(adminAddress: string, feedbackListener: boolean) {
  return resolveConfig(
    {
      version: 1,
      hostname: `relay-${adminAddress}.fleet.test`,
      listeners: [{ name: 'smtp', port: 0 }],
      admin: { address: adminAddress, port: adminPort, tokenFile: 'admin.token' },
      dns: { servers: [dns.server], timeout: '2s' },
      routing: {
        default: { type: 'smarthost', smarthost: { host: mx.address, port: mx.port, tls: 'none' } },
      },
      feedback: {
        ...(feedbackListener ? { listener: { address: B_FEEDBACK, port: 0, timeout: '10s' } } : {}),
        peerLookup: { host: 'relays.fleet.test', port: adminPort, timeout: '2s' },
      },
      tenants: [
        {
          name: 'acme',
          accounts: [{ username: ACME.user, passwordFile: 'acme.password' }],
          feedbackAddress: 'fbl@acme.test',
        },
      ],
    },
    dir,
  );
}

before(async () => {
  dns = await startDns({
    a: [
      { name: 'relays.fleet.test', ip: A_ADMIN },
      { name: 'relays.fleet.test', ip: B_ADMIN },
    ],
  });
  mx = await startTestMx({ address: '127.0.12.20', name: 'mx.dest.test' });
  dir = await makeTmpDir('cartero-feedback-fleet-');
  await mkdir(path.join(dir, 'secrets'), { recursive: true });
  await writeFile(path.join(dir, 'secrets/acme.password'), ACME.pass);
  await writeFile(path.join(dir, 'secrets/admin.token'), TOKEN);
  adminPort = await unusedPort(A_ADMIN);
  const ca = relayConfig(A_ADMIN, false);
  const cb = relayConfig(B_ADMIN, true);
  // one root folder, two spools: each relay indexes what it accepted on its own volume
  a = new Relay({ ...ca, spoolDir: path.join(dir, 'spool-a') }, { log: createLogger('silent') });
  b = new Relay({ ...cb, spoolDir: path.join(dir, 'spool-b') }, { log: createLogger('silent') });
  const outbox = b.feedback.events;
  b.feedback.events = {
    emit: (e) => {
      bEvents.push(e);
      outbox.emit(e);
    },
  };
  await a.start();
  await b.start();
});

after(async () => {
  await b?.stop(2000);
  await a?.stop(2000);
  await mx?.close();
  await dns?.stop();
  await removeTmpDir(dir);
});

describe('feedback across the fleet: a report without a token, by its Message-ID', () => {
  let bobId: string;

  test('a message accepted by A is found by B through A; the redacted recipient is suppressed', async () => {
    bobId = await submitToA(['Bob@dest.test'], '<Fleet-1.abc@acme.test>');
    await submitToA(['carol@dest.test', 'dan@dest.test'], '<fleet-2.abc@acme.test>');
    // Yahoo's CFL layout with the recipient redacted: only the Message-ID (in another case) tells
    assert.equal(
      await reportToB('arf-webmail-cfl.eml', '<FLEET-1.ABC@acme.test>', 'redacted@webmail.test'),
      250,
    );
    assert.ok(await suppressedOnB('bob@dest.test'), 'bob suppressed on B');
    const ev = bEvents.find((e) => e.type === 'complained');
    assert.equal(ev?.recipient, 'bob@dest.test');
    assert.equal(ev?.queueId, bobId, "the complaint carries A's queue id");
    assert.equal(ev?.tenant, 'acme');
    assert.ok((await metric(b, B_ADMIN, 'cartero_feedback_peer_lookups_total', '{result="hit"}')) >= 1);
    // B's own index missed (and missed again when B, one of the names' addresses, was asked too)
    assert.ok((await metric(b, B_ADMIN, 'cartero_feedback_sent_lookups_total', '{result="miss"}')) >= 1);
    assert.equal(await metric(b, B_ADMIN, 'cartero_feedback_sent_lookups_total', '{result="hit"}'), 0);
    assert.ok((await metric(a, A_ADMIN, 'cartero_feedback_sent_lookups_total', '{result="hit"}')) >= 1);
    assert.equal(await metric(a, A_ADMIN, 'cartero_feedback_sent_index_written_total', ''), 2);
  });

  test('a forged recipient, an unknown Message-ID, a two-recipient message redacted: nothing changes', async () => {
    const before = bEvents.length;
    // the message went to bob only: a report naming mallory is not about mallory
    assert.equal(await reportToB('arf-webmail-cfl.eml', '<fleet-1.abc@acme.test>', 'mallory@dest.test'), 250);
    assert.equal(await reportToB('arf-webmail-cfl.eml', '<never-sent@acme.test>', 'eve@dest.test'), 250);
    assert.equal(
      await reportToB('arf-webmail-cfl.eml', '<fleet-2.abc@acme.test>', 'redacted@webmail.test'),
      250,
    );
    assert.equal(bEvents.length, before, 'no event');
    for (const x of ['mallory@dest.test', 'eve@dest.test', 'carol@dest.test', 'dan@dest.test'])
      assert.equal(await suppressedOnB(x), false, x);
    const u = await api<{ reports: { reason: string }[] }>(b, B_ADMIN, '/feedback/unmatched');
    const reasons = u.reports.map((r) => r.reason);
    assert.equal(reasons.filter((r) => r === 'no recipient of the message').length, 2, reasons.join(' | '));
    assert.ok(
      reasons.some((r) => /^no token; no sent message with this Message-ID/.test(r)),
      reasons.join(' | '),
    );
    assert.equal(
      await metric(b, B_ADMIN, 'cartero_feedback_received_total', '{kind="arf",result="unmatched"}'),
      3,
    );
  });

  test("GET /feedback/sent answers from the relay's own index, behind the admin token", async () => {
    const url = (host: string, id: string) =>
      `http://${host}:${adminPort}/feedback/sent?messageId=${encodeURIComponent(id)}&tenant=acme`;
    assert.equal((await fetch(url(A_ADMIN, '<fleet-1.abc@acme.test>'))).status, 401);
    const onA = await api<{ match: { queueId: string; recipients: string[] } | null }>(
      a,
      A_ADMIN,
      `/feedback/sent?messageId=${encodeURIComponent('<fleet-1.abc@acme.test>')}`,
    );
    assert.deepEqual(onA.match?.recipients, ['bob@dest.test']);
    assert.equal(onA.match?.queueId, bobId);
    const onB = await api<{ match: unknown }>(
      b,
      B_ADMIN,
      `/feedback/sent?messageId=${encodeURIComponent('<fleet-1.abc@acme.test>')}`,
    );
    assert.equal(onB.match, null, 'B never accepted it, and does not ask further');
    const bad = await fetch(url(A_ADMIN, ''), { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(bad.status, 400);
  });
});
