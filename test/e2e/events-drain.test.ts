/**
 * Delivery events on scale-down (ADR 019) with two real relay processes, the test MX and a real webhook
 * receiver that is down: relay A drains into relay B; A is done without waiting for the endpoint, its
 * events travel to B over SMTP (as the peer account) and reach the endpoint from B once it is up, with
 * their original ids, signed, none lost. B refuses a damaged or torn chunk with 4xx, and the events header
 * from anyone but the peer account has no effect.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { startTestMx, type TestMx } from '../helpers/testmx.js';
import { waitFor } from '../helpers/poll.js';
import { unusedPort } from '../helpers/ports.js';
import { sendMail } from '../helpers/swaks.js';
import { SmtpSession } from '../helpers/smtpsession.js';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver.js';
import { verify } from '../../relay/src/events/signature.js';
import { encodeEventsMessage, EVENTS_RCPT } from '../../relay/src/events/handoff-wire.js';
import type { DeliveryEvent } from '../../relay/src/contract/events.js';
import type { EventsResponse } from '../../relay/src/contract/admin-api.js';

const SECRET = 'events-drain-webhook-signing-key-0123';
const TOKEN = 'events-drain-admin-token';
const PEER = { user: 'fleet-peer', pass: 'peer secret' };

function config(name: string, mxPort: number, rx: WebhookReceiver) {
  return {
    hostname: `${name}.events.test`,
    // one attempt for the tempfail recipient before the drain: its events are accepted, deferred
    queue: { retry: { initial: '1h', max: '1h' } },
    events: { flushInterval: '10ms' },
    peer: { username: PEER.user, passwordFile: 'peer.pass' },
    admin: { tokenFile: 'admin.token' },
    tenants: [
      {
        name: 'acme',
        trustedNetworks: ['127.0.0.0/8'],
        webhooks: [{ url: rx.url, secretFile: 'hook.key', batchSize: 5 }],
      },
    ],
    routing: { default: { type: 'smarthost', smarthost: { host: '127.0.0.1', port: mxPort, tls: 'none' } } },
  };
}
const secrets = { 'hook.key': SECRET, 'admin.token': TOKEN, 'peer.pass': PEER.pass };

async function admin(relay: RelayProc, method: string, p: string, body?: unknown) {
  const res = await fetch(`http://127.0.0.1:${relay.adminPort}${p}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return (await res.json()) as Record<string, unknown>;
}

/** The sum of a metric's samples whose labels include `label` (e.g. `result="received"`). */
async function metric(relay: RelayProc, name: string, label = ''): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${relay.adminPort}/metrics`)).text();
  return text
    .split('\n')
    .filter((l) => (l.startsWith(`${name}{`) || l.startsWith(`${name} `)) && l.includes(label))
    .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

const event = (id: string, recipient: string): DeliveryEvent => ({
  id,
  type: 'delivered',
  at: new Date().toISOString(),
  tenant: 'acme',
  queueId: 'FORGED',
  recipient,
});

/** One events message sent to `relay` as the peer account; the reply to the end of DATA. */
async function asPeer(relay: RelayProc, msg: Buffer) {
  const s = await SmtpSession.open(relay.ports.smtp);
  try {
    const [auth] = await s.command(
      `AUTH PLAIN ${Buffer.from(`\0${PEER.user}\0${PEER.pass}`).toString('base64')}`,
    );
    assert.equal(auth.code, 235, auth.text);
    return (await s.send('', [EVENTS_RCPT], msg)).data!;
  } finally {
    await s.quit();
  }
}

describe('delivery events on drain', () => {
  let mx: TestMx;
  let rx: WebhookReceiver;
  let a: RelayProc;
  let b: RelayProc;

  before(async () => {
    mx = await startTestMx({ name: 'mx.events.test' });
    rx = await startWebhookReceiver('down');
    a = await startRelay({ config: config('relay-a', mx.port, rx), secrets });
    b = await startRelay({ config: config('relay-b', mx.port, rx), secrets });
  });

  after(async () => {
    await a?.cleanup();
    await b?.cleanup();
    await rx?.close();
    await mx?.close();
  });

  test('a damaged or torn chunk from the peer is refused with 4xx and stores nothing', async () => {
    const good = encodeEventsMessage([event('bad-1', 'x1@dest.test'), event('bad-2', 'x2@dest.test')]);
    const damaged = Buffer.from(good);
    damaged[damaged.length - 30] ^= 0x01;
    const r1 = await asPeer(b, damaged);
    assert.equal(r1.code, 451, r1.text);
    assert.match(r1.text, /damaged/);
    const torn = good.subarray(0, good.length - 40);
    const r2 = await asPeer(b, torn);
    assert.equal(r2.code, 451, r2.text);
    const short = encodeEventsMessage([event('bad-3', 'x3@dest.test')]);
    const r3 = await asPeer(b, Buffer.from(short.toString('latin1').replace('count=1', 'count=2'), 'latin1'));
    assert.equal(r3.code, 451, r3.text);
    assert.equal(await metric(b, 'cartero_events_handed_off_total', 'result="received"'), 0);
  });

  test('the events header from a client that is not the peer account is mail like any other', async () => {
    const forged = encodeEventsMessage([event('forged-1', 'victim@dest.test')]);
    const sent = await sendMail(b.ports.smtp, {
      from: 'app@acme.test',
      to: ['forged@dest.test'],
      raw: Buffer.concat([Buffer.from('From: <app@acme.test>\r\nTo: <forged@dest.test>\r\n'), forged]),
    });
    assert.match(sent.response, /queued as/);
    const [m] = await mx.waitForMessages(1, 20_000);
    assert.doesNotMatch(m.raw.toString('latin1'), /X-Cartero-Events/i, 'the header is taken out');
    assert.equal(await metric(b, 'cartero_events_handed_off_total', 'result="received"'), 0);
  });

  test("A's drain ends without the endpoint; its events reach the endpoint from B, original ids, signed", async () => {
    const N = 8;
    const queueIds = new Map<string, string>();
    for (let i = 0; i < N; i++) {
      const to = `ok-${i}@dest.test`;
      const r = await sendMail(a.ports.smtp, { from: 'app@acme.test', to: [to] });
      queueIds.set(to, /queued as ([A-Za-z0-9]+)/.exec(r.response)![1]);
    }
    const r = await sendMail(a.ports.smtp, { from: 'app@acme.test', to: ['tempfail@dest.test'] });
    queueIds.set('tempfail@dest.test', /queued as ([A-Za-z0-9]+)/.exec(r.response)![1]);
    const fromA = 2 * N + 2; // accepted and delivered each; accepted and deferred for tempfail
    await waitFor(async () => (await metric(a, 'cartero_events_queued_total')) >= fromA, {
      timeoutMs: 30_000,
      what: "A's events committed",
    });
    const ofA = (e: DeliveryEvent) => [...queueIds.values()].includes(e.queueId ?? '');
    // the ids A itself tried to send before the drain (the endpoint answered 503)
    const tried = () =>
      rx.requests.flatMap((q) =>
        (JSON.parse(q.body.toString()) as DeliveryEvent[]).filter(ofA).map((e) => e.id),
      );
    await waitFor(() => tried().length >= 1, { timeoutMs: 20_000, what: 'a failed webhook request of A' });
    const firstIds = tried();

    // the first peer is gone: events and mail go to the next one
    const dead = await unusedPort('127.0.0.1');
    await admin(a, 'POST', '/drain', {
      peers: [
        { host: '127.0.0.1', port: dead },
        { host: '127.0.0.1', port: b.ports.smtp },
      ],
    });
    const done = await waitFor(
      async () => {
        const s = await admin(a, 'GET', '/drain');
        return s.done === true && s;
      },
      { timeoutMs: 30_000, what: "A's drain done while the endpoint is down" },
    );
    assert.equal(done.eventsPending, false);
    assert.equal(done.eventsHandedOff, fromA);
    assert.equal(done.handedOff, 1, 'the deferred message went to B');
    assert.equal(await metric(a, 'cartero_events_handed_off_total', 'result="sent"'), fromA);
    assert.equal(await metric(b, 'cartero_events_handed_off_total', 'result="received"'), fromA);
    await a.stop(); // A is gone: whatever the endpoint gets from now on comes from B
    const before = rx.requests.length;

    rx.setMode('up');
    const fromAEvents = () => rx.accepted().filter(ofA);
    await waitFor(() => new Set(fromAEvents().map((e) => e.id)).size === fromA, {
      timeoutMs: 30_000,
      what: 'every event of A, from B',
    });
    const events = fromAEvents();
    const ids = new Set(events.map((e) => e.id));
    for (const id of firstIds) assert.ok(ids.has(id), `original id ${id} kept`);
    for (const [to, q] of queueIds) {
      const types = [
        ...new Map(events.filter((e) => e.recipient === to).map((e) => [e.id, e.type])).values(),
      ];
      const want = ['accepted', to.startsWith('ok-') ? 'delivered' : 'deferred'];
      assert.deepEqual(types, want, `${to} (${q}): its events, once each, in order`);
    }
    for (const req of rx.requests.slice(before).filter((x) => x.status === 200))
      assert.equal(verify(SECRET, req.body, req.signature, Math.floor(Date.now() / 1000)), true);
    assert.ok(!rx.accepted().some((e) => /^(bad|forged)-/.test(e.id)), 'nothing refused or forged arrived');
    assert.equal((await admin(b, 'GET', '/queue')).depth, 1, 'B holds the deferred message');
  });

  test('while no peer takes the events the drain waits; a drain asked again with a live peer ends it', async () => {
    rx.setMode('down');
    const c = await startRelay({ config: config('relay-c', mx.port, rx), secrets });
    try {
      const before = await metric(b, 'cartero_events_handed_off_total', 'result="received"');
      const r = await sendMail(c.ports.smtp, { from: 'app@acme.test', to: ['ok-c@dest.test'] });
      const qid = /queued as ([A-Za-z0-9]+)/.exec(r.response)![1];
      await waitFor(async () => (await metric(c, 'cartero_events_queued_total')) >= 2, {
        timeoutMs: 30_000,
        what: "C's events committed",
      });
      const dead = await unusedPort('127.0.0.1');
      await admin(c, 'POST', '/drain', { peers: [{ host: '127.0.0.1', port: dead }] });
      const view = await waitFor(
        async () => {
          const v = (await admin(c, 'GET', '/events')) as unknown as EventsResponse;
          return (v.handoff?.failures ?? 0) >= 2 && v;
        },
        { timeoutMs: 20_000, what: 'two failed passes (back-off between them)' },
      );
      assert.match(view.handoff!.lastError!, /ECONNREFUSED/);
      assert.deepEqual(view.endpoints, [], 'the webhook loops are stopped');
      const waiting = await admin(c, 'GET', '/drain');
      assert.equal(waiting.queued, 0);
      assert.equal(waiting.eventsPending, true);
      assert.equal(waiting.done, false, 'not done while the events are only here');

      await admin(c, 'POST', '/drain', { peers: [{ host: '127.0.0.1', port: b.ports.smtp }] });
      await waitFor(async () => (await admin(c, 'GET', '/drain')).done === true, {
        timeoutMs: 20_000,
        what: "C's drain done once a live peer is given",
      });
      assert.equal(await metric(b, 'cartero_events_handed_off_total', 'result="received"'), before + 2);
      rx.setMode('up');
      await waitFor(() => rx.accepted().filter((e) => e.queueId === qid).length >= 2, {
        timeoutMs: 20_000,
        what: "C's events at the endpoint, from B",
      });
    } finally {
      await c.cleanup();
    }
  });
});
