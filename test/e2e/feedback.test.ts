/**
 * The feedback loop end to end (issue 14, docs/adr/016-feedback-loop.md): a relay in this process with
 * return-path tagging for two tenants and the feedback listener on 127.0.10.1; a test MX on 127.0.10.20
 * accepts the mail; the test then sends DSNs (built here, and through swaks) to the tagged return paths
 * and ARF reports (test/fixtures/feedback) to the feedback addresses, and reads the effects through the
 * admin API: suppressions, the bounce-rate window, the unmatched reports and the metrics.
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
import { makeToken } from '../../relay/src/feedback/token.js';
import { MAX_REFUSED } from '../../relay/src/feedback/listener.js';
import { startTestMx, type TestMx } from '../helpers/testmx.js';
import { SmtpSession } from '../helpers/smtpsession.js';
import { swaks } from '../helpers/swaks.js';
import { waitFor } from '../helpers/poll.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver.js';
import { verify } from '../../relay/src/events/signature.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const FIXTURES = path.join(ROOT, 'test/fixtures/feedback');
const KEY = 'feedback-e2e-token-key-0123456789';
const HOOK_KEY = 'feedback-e2e-webhook-key-0123456789';
const FB_ADDR = '127.0.10.1';
const ACME = { user: 'acme-app', pass: 'acme-Pa55word' };
const GLOBEX = { user: 'globex-app', pass: 'globex-Pa55word' };
const QUEUED_RE = /queued as ([0-9A-Z]{20})/;

let mx: TestMx;
let hook: WebhookReceiver; // acme's webhook endpoint: the relay's own outbox delivers to it
let dir: string;
let relay: Relay;
let fbPort: number;
const events: NewEvent[] = [];
const complaints: [string, string][] = [];

async function api<T>(p: string): Promise<T> {
  const r = await fetch(`http://127.0.0.1:${relay.admin.port}${p}`);
  assert.equal(r.status, 200, `GET ${p}`);
  return (await r.json()) as T;
}
const metrics = async () => (await fetch(`http://127.0.0.1:${relay.admin.port}/metrics`)).text();
function metric(text: string, name: string, labels: Record<string, string>): number {
  const want = `${name}{${Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(',')}}`;
  const line = text.split('\n').find((l) => l.startsWith(`${want} `));
  return line ? Number(line.slice(want.length + 1)) : 0;
}

interface Suppression {
  tenant: string;
  address: string;
  source: string;
  reason: string;
}
async function suppressed(tenant: string, address: string): Promise<Suppression | undefined> {
  const r = await api<{ items: Suppression[] }>(`/suppressions?tenant=${tenant}&limit=1000`);
  return r.items.find((e) => e.address === address);
}
const hardBounces = async (tenant: string) => (await api<{ hard: number }>(`/tenants/${tenant}`)).hard;

/** Sends as `acct` and returns the queue id. */
async function submit(
  acct: typeof ACME,
  from: string,
  to: string[],
  messageId = `<m-${Date.now()}@${from.split('@')[1]}>`,
): Promise<string> {
  const s = await SmtpSession.open(relay.inbound.ports.smtp);
  try {
    const [a] = await s.command(
      `AUTH PLAIN ${Buffer.from(`\0${acct.user}\0${acct.pass}`).toString('base64')}`,
    );
    assert.equal(a.code, 235, a.text);
    const msg = `From: <${from}>\r\nTo: ${to.join(', ')}\r\nSubject: hello\r\nMessage-ID: ${messageId}\r\n\r\nhello\r\n`;
    const r = await s.send(from, to, msg);
    assert.equal(r.data?.code, 250, r.data?.text);
    return QUEUED_RE.exec(r.data!.text)![1];
  } finally {
    await s.quit();
  }
}

/** One transaction to the feedback listener: the RCPT replies, and the DATA reply when one was taken. */
async function report(to: string[], body: string, from = '') {
  const s = await SmtpSession.open(fbPort, { host: FB_ADDR });
  try {
    const r = await s.send(from, to, body.replace(/\r?\n/g, '\r\n'));
    return r;
  } finally {
    await s.quit();
  }
}

/** A DSN (RFC 3464) for `rcpt`, with the returned message's headers. */
function dsn(o: {
  to: string;
  rcpt: string;
  action?: string;
  status?: string;
  returnPath?: string;
  toHeader?: string;
}) {
  const b = 'dsn-boundary-42';
  return [
    'From: Mail Delivery System <MAILER-DAEMON@mx.dest.test>',
    `To: <${o.to}>`,
    'Subject: Undelivered Mail Returned to Sender',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${b}"`,
    '',
    `--${b}`,
    'Content-Type: text/plain',
    '',
    'I am sorry to inform you that your message could not be delivered.',
    '',
    `--${b}`,
    'Content-Type: message/delivery-status',
    '',
    'Reporting-MTA: dns; mx.dest.test',
    'Arrival-Date: Sat, 5 Dec 2026 10:00:00 +0000',
    '',
    `Final-Recipient: rfc822; ${o.rcpt}`,
    `Original-Recipient: rfc822;${o.rcpt}`,
    `Action: ${o.action ?? 'failed'}`,
    `Status: ${o.status ?? '5.1.1'}`,
    'Remote-MTA: dns; store.dest.test',
    `Diagnostic-Code: smtp; 550 5.1.1 <${o.rcpt}>: Recipient address rejected: User unknown`,
    '',
    `--${b}`,
    'Content-Type: text/rfc822-headers',
    '',
    ...(o.returnPath ? [`Return-Path: <${o.returnPath}>`] : []),
    'From: <app@acme.test>',
    `To: <${o.toHeader ?? o.rcpt}>`,
    'Subject: hello',
    '',
    `--${b}--`,
    '',
  ].join('\n');
}

async function fixture(name: string, v: Record<string, string>): Promise<string> {
  let t = await readFile(path.join(FIXTURES, name), 'utf8');
  for (const [k, x] of Object.entries(v)) t = t.split(`{{${k}}}`).join(x);
  return t;
}

/** The return path the test MX saw for `rcpt`. */
function returnPathOf(rcpt: string): string {
  const m = mx.byRecipient(rcpt);
  assert.equal(m.length, 1, `one message to ${rcpt}`);
  return m[0].mailFrom;
}

before(async () => {
  mx = await startTestMx({ address: '127.0.10.20', name: 'mx.dest.test' });
  hook = await startWebhookReceiver('up');
  dir = await makeTmpDir('cartero-feedback-');
  await mkdir(path.join(dir, 'secrets'), { recursive: true });
  await writeFile(path.join(dir, 'secrets/acme.password'), ACME.pass);
  await writeFile(path.join(dir, 'secrets/globex.password'), GLOBEX.pass);
  await writeFile(path.join(dir, 'secrets/fbkey'), KEY);
  await writeFile(path.join(dir, 'secrets/hook.key'), HOOK_KEY);
  const cfg = resolveConfig(
    {
      version: 1,
      hostname: 'relay.feedback.test',
      listeners: [{ name: 'smtp', port: 0 }],
      admin: { port: 0 },
      routing: {
        default: { type: 'smarthost', smarthost: { host: mx.address, port: mx.port, tls: 'none' } },
      },
      feedback: {
        tokenKeyFile: 'fbkey',
        listener: { address: FB_ADDR, port: 0, maxMessageSize: 65536, timeout: '3s' },
      },
      tenants: [
        {
          name: 'acme',
          accounts: [{ username: ACME.user, passwordFile: 'acme.password' }],
          returnPath: { domain: 'bounces.acme.test' },
          feedbackAddress: 'fbl@acme.test',
          webhooks: [{ url: hook.url, secretFile: 'hook.key', events: ['bounced', 'complained'] }],
        },
        {
          name: 'globex',
          accounts: [{ username: GLOBEX.user, passwordFile: 'globex.password' }],
          returnPath: { domain: 'bounces.globex.test', prefix: 'rp' },
          feedbackAddress: 'fbl@globex.test',
        },
      ],
    },
    dir,
  );
  relay = new Relay(cfg, { log: createLogger('silent') });
  const outbox = relay.feedback.events; // the relay's own: the webhook outbox
  relay.feedback.events = {
    emit: (e) => {
      events.push(e);
      outbox.emit(e);
    },
  };
  const guard = relay.feedback.complaints; // the relay's own: the complaint-rate guard
  relay.feedback.complaints = {
    complaint: (t, r) => {
      complaints.push([t, r]);
      guard.complaint(t, r);
    },
  };
  await relay.start();
  fbPort = relay.feedback.listener.port;
});

after(async () => {
  await relay?.stop(2000);
  await mx?.close();
  await hook?.close();
  await removeTmpDir(dir);
});

describe('feedback loop', () => {
  let acmeId: string;

  test('each recipient leaves in its own transaction from a tagged return path', async () => {
    acmeId = await submit(ACME, 'app@acme.test', ['bob@dest.test', 'carol@dest.test', 'dave@dest.test']);
    await submit(GLOBEX, 'news@globex.test', ['gina@dest.test']);
    await mx.waitForMessages(4);
    const paths = ['bob', 'carol', 'dave'].map((u) => returnPathOf(`${u}@dest.test`));
    for (const p of paths) assert.match(p, /^bounce\+[a-z2-7]{48}@bounces\.acme\.test$/);
    assert.equal(new Set(paths).size, 3, 'one token per recipient');
    assert.match(returnPathOf('gina@dest.test'), /^rp\+[a-z2-7]{48}@bounces\.globex\.test$/);
    assert.ok(mx.messages.every((m) => m.rcptTo.length === 1 && m.mailFrom.split('@')[0].length <= 64));
  });

  test('a DSN sent with swaks to the return path suppresses the recipient and counts a hard bounce', async () => {
    const rp = returnPathOf('bob@dest.test');
    const file = path.join(dir, 'dsn-bob.eml');
    await writeFile(file, dsn({ to: rp, rcpt: 'bob@dest.test' }).replace(/\n/g, '\r\n'));
    const r = await swaks([
      '--server',
      FB_ADDR,
      '--port',
      String(fbPort),
      '--from',
      '<>', // the null sender, as a DSN comes
      '--to',
      rp,
      '--data',
      file,
    ]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /-> MAIL FROM:<>/);
    assert.match(r.stdout, /<- +250 2\.6\.0 Report received/);
    const s = await suppressed('acme', 'bob@dest.test');
    assert.equal(s?.source, 'bounce');
    assert.match(s.reason, /5\.1\.1/);
    assert.equal(await hardBounces('acme'), 1);
    const ev = events.find((e) => e.type === 'bounced' && e.recipient === 'bob@dest.test');
    assert.deepEqual(ev?.bounce, { class: 'hard', async: true });
    assert.equal(ev?.queueId, acmeId, 'the event names the original queue id');
    assert.equal(ev?.tenant, 'acme');
    assert.equal(
      metric(await metrics(), 'cartero_feedback_received_total', { kind: 'dsn', result: 'bounce' }),
      1,
    );
    // the same event reaches acme's webhook through the outbox, signed
    const sent = await waitFor(
      () => hook.accepted().find((e) => e.type === 'bounced' && e.recipient === 'bob@dest.test'),
      { timeoutMs: 15_000, what: 'the asynchronous bounce at the webhook' },
    );
    assert.deepEqual(sent.bounce, { class: 'hard', async: true });
    assert.equal(sent.queueId, acmeId);
    const req = hook.requests.find((r) => r.status === 200 && r.body.includes('bob@dest.test'))!;
    assert.ok(verify(HOOK_KEY, req.body, req.signature, Math.floor(Date.now() / 1000)), 'signed');
  });

  test('the same DSN again is counted as a duplicate, not a second bounce', async () => {
    const rp = returnPathOf('bob@dest.test');
    const r = await report([rp], dsn({ to: rp, rcpt: 'bob@dest.test' }));
    assert.equal(r.data?.code, 250);
    assert.equal(await hardBounces('acme'), 1);
    assert.equal(
      metric(await metrics(), 'cartero_feedback_received_total', { kind: 'dsn', result: 'duplicate' }),
      1,
    );
  });

  test('the same DSN at another pod or after a restart (its memory of reports gone) is not a second bounce either', async () => {
    // what another pod of the fleet, or this one restarted, knows: the suppression list, not `seen`
    (relay.feedback.processor as unknown as { seen: Set<string> }).seen.clear();
    const before = events.filter((e) => e.type === 'bounced' && e.recipient === 'bob@dest.test');
    const rp = returnPathOf('bob@dest.test');
    const r = await report([rp], dsn({ to: rp, rcpt: 'bob@dest.test' }));
    assert.equal(r.data?.code, 250);
    assert.equal(await hardBounces('acme'), 1, 'the bounce rate counts bob once');
    assert.equal(
      metric(await metrics(), 'cartero_feedback_received_total', { kind: 'dsn', result: 'repeat' }),
      1,
    );
    // the tenant still hears of it, under the same event id: its receiver deduplicates
    assert.equal(
      events.filter((e) => e.type === 'bounced' && e.recipient === 'bob@dest.test').length,
      before.length + 1,
    );
    const twice = await waitFor(
      () => {
        const got = hook.accepted().filter((e) => e.type === 'bounced' && e.recipient === 'bob@dest.test');
        return got.length === 2 ? got : undefined;
      },
      { timeoutMs: 15_000, what: "bob's bounce at the webhook a second time" },
    );
    assert.equal(twice[0].id, twice[1].id);
  });

  test('a delayed (4.x.x) DSN is ignored', async () => {
    const rp = returnPathOf('carol@dest.test');
    const r = await report(
      [rp],
      dsn({ to: rp, rcpt: 'carol@dest.test', action: 'delayed', status: '4.2.2' }),
    );
    assert.equal(r.data?.code, 250);
    assert.equal(await suppressed('acme', 'carol@dest.test'), undefined);
    assert.equal(
      metric(await metrics(), 'cartero_feedback_received_total', { kind: 'dsn', result: 'ignored' }),
      1,
    );
  });

  test('a permanent DSN that is not a hard bounce (5.2.2 mailbox full) is a soft bounce: not suppressed', async () => {
    const rp = returnPathOf('carol@dest.test');
    const r = await report([rp], dsn({ to: rp, rcpt: 'carol@dest.test', status: '5.2.2' }));
    assert.equal(r.data?.code, 250);
    assert.equal(await suppressed('acme', 'carol@dest.test'), undefined);
    assert.equal(await hardBounces('acme'), 1);
    const ev = events.find((e) => e.type === 'bounced' && e.recipient === 'carol@dest.test');
    assert.deepEqual(ev?.bounce, { class: 'soft', async: true });
    assert.equal(
      metric(await metrics(), 'cartero_feedback_received_total', { kind: 'dsn', result: 'soft' }),
      1,
    );
  });

  test('a DSN naming another recipient than the token is not taken', async () => {
    const rp = returnPathOf('carol@dest.test');
    const r = await report([rp], dsn({ to: rp, rcpt: 'mallory@dest.test' }));
    assert.equal(r.data?.code, 250);
    assert.equal(await suppressed('acme', 'mallory@dest.test'), undefined);
    const u = await api<{ reports: { rcpt: string; reason: string }[] }>('/feedback/unmatched');
    assert.ok(u.reports.some((x) => x.rcpt === rp && /no recipient of the token/.test(x.reason)));
    // the newest first, one page at a time
    const one = await api<{ reports: { rcpt: string }[]; truncated?: boolean }>(
      '/feedback/unmatched?limit=1',
    );
    assert.deepEqual(
      [one.reports.length, one.reports[0].rcpt, one.truncated],
      [1, rp, u.reports.length > 1 || undefined],
    );
    for (const bad of ['0', '1001', 'x', '-1'])
      assert.equal(
        (await fetch(`http://127.0.0.1:${relay.admin.port}/feedback/unmatched?limit=${bad}`)).status,
        400,
      );
  });

  test('ARF reports of three layouts to the feedback address end as complaint suppressions', async () => {
    const samples: [string, string][] = [
      ['arf-rfc5965.eml', 'erin@dest.test'],
      ['arf-webmail-cfl.eml', 'frank@dest.test'],
      ['arf-jmrp-qp.eml', 'dave@dest.test'],
    ];
    // erin's and frank's reports carry no token: they are traced by the Message-ID of a message sent
    // (ADR 020); dave's carries the token of its Return-Path
    const ids = new Map<string, string>();
    for (const [name, rcpt] of samples.slice(0, 2))
      ids.set(rcpt, await submit(ACME, 'app@acme.test', [rcpt], `<${name}@acme.test>`));
    for (const [name, rcpt] of samples) {
      const body = await fixture(name, {
        RCPT: rcpt,
        RETURN_PATH: rcpt === 'dave@dest.test' ? returnPathOf(rcpt) : 'bounce+x@bounces.acme.test',
        FROM: 'app@acme.test',
        MESSAGE_ID: `<${name}@acme.test>`,
        FEEDBACK: 'fbl@acme.test',
      });
      const r = await report(['fbl@acme.test'], body, 'feedback@provider.test');
      assert.equal(r.data?.code, 250, `${name}: ${r.data?.text}`);
      const s = await suppressed('acme', rcpt);
      assert.equal(s?.source, 'complaint', name);
      assert.ok(
        complaints.some(([t, x]) => t === 'acme' && x === rcpt),
        `${name}: complaint hook`,
      );
      const ev = events.find((e) => e.type === 'complained' && e.recipient === rcpt);
      assert.equal(ev?.complaint?.feedbackType, 'abuse', name);
      assert.equal(ev?.queueId, ids.get(rcpt) ?? acmeId, `${name}: the queue id of the message sent`);
    }
    assert.equal(
      metric(await metrics(), 'cartero_feedback_received_total', { kind: 'arf', result: 'complaint' }),
      3,
    );
    assert.equal(await hardBounces('acme'), 1, 'complaints are not bounces');
    assert.equal(
      metric(await metrics(), 'cartero_complaints_total', { tenant: 'acme', source: 'report' }),
      3,
      'each complaint counts against the complaint-rate guard',
    );
    await waitFor(() => hook.accepted().filter((e) => e.type === 'complained').length === 3, {
      timeoutMs: 15_000,
      what: 'three complained events at the webhook',
    });
  });

  test('forged, foreign, expired and other-tenant tokens are refused and counted', async () => {
    const rp = returnPathOf('carol@dest.test');
    const [local, domain] = rp.split('@');
    const flip = local.slice(0, -3) + (local.at(-3) === 'a' ? 'b' : 'a') + local.slice(-2);
    const acmeToken = local.slice('bounce+'.length);
    const old = makeToken(
      Buffer.from(KEY),
      { tenant: 'acme', queueId: acmeId, recipient: 'carol@dest.test' },
      Date.now() - 40 * 86_400_000,
    );
    const cases: [string, string][] = [
      [`${flip}@${domain}`, 'forged'],
      [`rp+${acmeToken}@bounces.globex.test`, 'forged'],
      [`bounce+${old}@${domain}`, 'expired'],
      [`bounce+short@${domain}`, 'malformed'],
      ['postmaster@example.com', 'foreign'],
      [`someone@${domain}`, 'foreign'],
    ];
    const before = await metrics();
    const sent = mx.messages.length;
    for (const [to] of cases) {
      const r = await report([to], 'Subject: x\n\nx\n');
      assert.equal(r.rcpts[0].code, 550, to);
      assert.match(r.rcpts[0].text, /^(550 )?5\.7\.1 Not a relay path: /);
    }
    const after = await metrics();
    for (const reason of ['forged', 'expired', 'malformed', 'foreign']) {
      const n = cases.filter(([, x]) => x === reason).length;
      const d =
        metric(after, 'cartero_feedback_refused_total', { reason }) -
        metric(before, 'cartero_feedback_refused_total', { reason });
      assert.equal(d, n, reason);
    }
    assert.equal(await suppressed('acme', 'carol@dest.test'), undefined);
    assert.equal(mx.messages.length, sent, 'nothing was forwarded');
  });

  test("a DSN for acme's message sent to globex's feedback address is kept as unmatched", async () => {
    const rp = returnPathOf('carol@dest.test');
    const r = await report(
      ['fbl@globex.test'],
      dsn({ to: 'fbl@globex.test', rcpt: 'carol@dest.test', returnPath: rp }),
    );
    assert.equal(r.data?.code, 250);
    assert.equal(await suppressed('acme', 'carol@dest.test'), undefined);
    assert.equal(await suppressed('globex', 'carol@dest.test'), undefined);
    const u = await api<{ reports: { rcpt: string; tenant: string; reason: string; text: string }[] }>(
      '/feedback/unmatched',
    );
    const mine = u.reports.find((x) => x.rcpt === 'fbl@globex.test');
    assert.equal(mine?.tenant, 'globex');
    assert.match(mine!.reason, /another tenant/);
    assert.match(mine!.text, /Final-Recipient: rfc822; carol@dest\.test/);
  });

  test('a client trying address after address is cut off after 20 refused recipients (421)', async () => {
    const before = metric(await metrics(), 'cartero_feedback_refused_total', { reason: 'limit' });
    const s = await SmtpSession.open(fbPort, { host: FB_ADDR });
    try {
      const [mail] = await s.command('MAIL FROM:<>');
      assert.equal(mail.code, 250);
      for (let i = 0; i < MAX_REFUSED; i++) {
        const [r] = await s.command(`RCPT TO:<bounce+guess${i}@bounces.acme.test>`);
        assert.equal(r.code, 550, `guess ${i}`);
      }
      const [last] = await s.command('RCPT TO:<bounce+one-more@bounces.acme.test>');
      assert.equal(last.code, 421);
      await waitFor(() => s.closed, { what: 'the listener to close the connection', timeoutMs: 10_000 });
    } finally {
      await s.quit();
    }
    assert.equal(metric(await metrics(), 'cartero_feedback_refused_total', { reason: 'limit' }), before + 1);
  });

  test('a connection is cut at the listener timeout even while it keeps talking', async () => {
    const s = await SmtpSession.open(fbPort, { host: FB_ADDR });
    const opened = Date.now();
    try {
      await waitFor(
        async () => {
          if (s.closed) return true;
          await s.command('NOOP').catch(() => undefined);
          return s.closed;
        },
        { what: 'the listener to close the connection', timeoutMs: 10_000, intervalMs: 500 },
      );
      const after = Date.now() - opened;
      assert.ok(after >= 2500, `closed after ${after} ms: at the 3 s timeout, not before`);
    } finally {
      await s.quit();
    }
  });

  test('a report over the size limit is refused', async () => {
    const rp = returnPathOf('carol@dest.test');
    const r = await report([rp], `Subject: big\n\n${'x'.repeat(998)}\n`.repeat(80));
    assert.equal(r.data?.code, 552);
    assert.equal(await suppressed('acme', 'carol@dest.test'), undefined);
  });
});
