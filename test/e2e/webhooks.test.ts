/**
 * Delivery events and webhooks (issue 14, docs/events.md) with a real relay process, the test MX and a
 * real HTTP receiver: events arrive signed and verifiable; a receiver down for a while and a kill -9 of
 * the relay meanwhile lose nothing (every event at least once, in per-message order); a receiver that
 * never answers does not hold up mail delivery.
 */
import { test } from 'node:test';
import { readFile, rename, writeFile } from 'node:fs/promises';
import YAML from 'yaml';
import assert from 'node:assert/strict';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { startTestMx } from '../helpers/testmx.js';
import { waitFor } from '../helpers/poll.js';
import { sendMail } from '../helpers/swaks.js';
import { startWebhookReceiver, type WebhookReceiver } from '../helpers/webhook-receiver.js';
import { verify } from '../../relay/src/events/signature.js';
import type { DeliveryEvent } from '../../relay/src/contract/events.js';
import type { EventsResponse } from '../../relay/src/contract/admin-api.js';

const SECRET = 'test-webhook-signing-key-0123456789';

function config(mxPort: number, receiver: WebhookReceiver, hook: Record<string, unknown> = {}) {
  return {
    hostname: 'relay.events.test',
    queue: { retry: { initial: '1s', max: '2s' } },
    events: { flushInterval: '10ms' },
    tenants: [
      {
        name: 'acme',
        trustedNetworks: ['127.0.0.0/8'],
        webhooks: [{ url: receiver.url, secretFile: 'hook.key', batchSize: 5, ...hook }],
      },
    ],
    routing: {
      default: { type: 'smarthost', smarthost: { host: '127.0.0.1', port: mxPort, tls: 'none' } },
    },
  };
}

async function metricSum(relay: RelayProc, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${relay.adminPort}/metrics`)).text();
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

const send = (relay: RelayProc, to: string, n: number) =>
  sendMail(relay.ports.smtp, {
    from: 'app@acme.test',
    to: [to],
    headers: { 'Message-ID': `<m${n}@acme.test>` },
  });

/** Per recipient, the event types in the order the receiver first saw each event (deduplicated by id). */
function byRecipient(events: DeliveryEvent[]): Map<string, string[]> {
  const seen = new Set<string>();
  const out = new Map<string, string[]>();
  for (const e of events) {
    if (seen.has(e.id)) continue;
    seen.add(e.id);
    const list = out.get(e.recipient!) ?? [];
    list.push(e.type);
    out.set(e.recipient!, list);
  }
  return out;
}

test(
  'events arrive signed, with queue id, Message-ID, reply and bounce class',
  { timeout: 60_000 },
  async (t) => {
    const mx = await startTestMx({ name: 'mx.events.test' });
    const rx = await startWebhookReceiver('up');
    const relay = await startRelay({ config: config(mx.port, rx), secrets: { 'hook.key': SECRET } });
    t.after(async () => {
      await relay.cleanup();
      await rx.close();
      await mx.close();
    });
    const ok = await send(relay, 'ok@dest.test', 1);
    await send(relay, 'reject@dest.test', 2); // accepted here, refused with 550 by the MX
    const qid = /queued as ([A-Za-z0-9]+)/.exec(ok.response)?.[1];
    assert.ok(qid, ok.response);
    await waitFor(() => rx.accepted().length >= 4, { timeoutMs: 30_000, what: 'four events' });
    for (const r of rx.requests)
      assert.equal(
        verify(SECRET, r.body, r.signature, Math.floor(Date.now() / 1000)),
        true,
        'signature verifies',
      );
    assert.equal(
      verify('another key', rx.requests[0].body, rx.requests[0].signature, Date.now() / 1000),
      false,
    );
    const events = rx.accepted();
    const okEvents = events.filter((e) => e.recipient === 'ok@dest.test');
    assert.deepEqual(
      okEvents.map((e) => e.type),
      ['accepted', 'delivered'],
    );
    for (const e of okEvents) {
      assert.equal(e.tenant, 'acme');
      assert.equal(e.messageId, '<m1@acme.test>');
      assert.equal(e.queueId, qid);
      assert.match(e.id, /^[0-9a-f-]{36}$/);
      assert.ok(!Number.isNaN(Date.parse(e.at)));
    }
    assert.equal(okEvents[1].reply?.code, 250);
    const bounced = events.find((e) => e.type === 'bounced');
    assert.equal(bounced?.recipient, 'reject@dest.test');
    assert.deepEqual(bounced?.bounce, { class: 'hard', async: false });
    assert.equal(bounced?.reply?.code, 550);
    assert.equal(await metricSum(relay, 'cartero_events_sent_total'), events.length);
  },
);

test(
  'receiver down, relay killed -9, restarted, receiver up: every event arrives at least once, in order',
  { timeout: 90_000 },
  async (t) => {
    const N = 12;
    const mx = await startTestMx({ name: 'mx.events.test' });
    const rx = await startWebhookReceiver('down');
    const cfg = config(mx.port, rx);
    let relay = await startRelay({ config: cfg, secrets: { 'hook.key': SECRET } });
    t.after(async () => {
      await relay.cleanup();
      await rx.close();
      await mx.close();
    });
    for (let i = 0; i < N; i++) await send(relay, `r${i}@dest.test`, i);
    await mx.waitForMessages(N, 30_000); // the dead endpoint does not hold up mail
    // every accepted and delivered event is durable in the outbox, and the endpoint has failed at least once
    await waitFor(async () => (await metricSum(relay, 'cartero_events_queued_total')) >= 2 * N, {
      timeoutMs: 20_000,
      what: 'events committed',
    });
    await waitFor(() => rx.requests.length >= 1, { timeoutMs: 20_000, what: 'a failed request' });
    const view = await waitFor(
      async () => {
        const v = (await (
          await fetch(`http://127.0.0.1:${relay.adminPort}/events`)
        ).json()) as EventsResponse;
        return v.endpoints[0]?.failures > 0 && v;
      },
      { timeoutMs: 20_000, what: 'GET /events showing the failure' },
    );
    assert.equal(view.endpoints[0].endpoint, 'acme/0');
    assert.equal(view.endpoints[0].caughtUp, false);
    assert.equal(view.endpoints[0].lastFailure?.reason, 'http-5xx');
    assert.ok(view.outboxBytes > 0);
    relay.kill('SIGKILL');
    await relay.exited;
    relay = await startRelay({ config: cfg, dir: relay.root, secrets: { 'hook.key': SECRET } });
    rx.setMode('up');
    await waitFor(
      () =>
        byRecipient(rx.accepted()).size === N &&
        [...byRecipient(rx.accepted()).values()].every((l) => l.length >= 2),
      {
        timeoutMs: 40_000,
        what: 'every event after the restart',
      },
    );
    const per = byRecipient(rx.accepted());
    for (let i = 0; i < N; i++) assert.deepEqual(per.get(`r${i}@dest.test`), ['accepted', 'delivered']);
    for (const r of rx.requests.filter((x) => x.status === 200))
      assert.equal(verify(SECRET, r.body, r.signature, Math.floor(Date.now() / 1000)), true);
  },
);

test('a receiver that never answers does not hold up mail delivery', { timeout: 60_000 }, async (t) => {
  const mx = await startTestMx({ name: 'mx.events.test' });
  const rx = await startWebhookReceiver('hang');
  const relay = await startRelay({
    config: config(mx.port, rx, { timeout: '5m', batchSize: 1 }),
    secrets: { 'hook.key': SECRET },
  });
  t.after(async () => {
    await relay.cleanup();
    await rx.close();
    await mx.close();
  });
  await send(relay, 'first@dest.test', 0);
  await waitFor(() => rx.hanging >= 1, { timeoutMs: 20_000, what: 'a request held open by the receiver' });
  for (let i = 1; i <= 10; i++) await send(relay, `n${i}@dest.test`, i);
  await mx.waitForMessages(11, 30_000);
  assert.equal(rx.hanging, 1, 'one request in flight per endpoint, still held');
  rx.setMode('up');
  await waitFor(() => byRecipient(rx.accepted()).size === 11, { timeoutMs: 30_000, what: 'the backlog' });
});

test(
  'a draining relay is done only once its delivery events have reached the endpoint',
  { timeout: 60_000 },
  async (t) => {
    const TOKEN = 'events-drain-admin-token';
    const mx = await startTestMx({ name: 'mx.events.test' });
    const rx = await startWebhookReceiver('down');
    const relay = await startRelay({
      config: { ...config(mx.port, rx), admin: { tokenFile: 'admin.token' } },
      secrets: { 'hook.key': SECRET, 'admin.token': TOKEN },
    });
    t.after(async () => {
      await relay.cleanup();
      await rx.close();
      await mx.close();
    });
    const drain = async (method: string) => {
      const res = await fetch(`http://127.0.0.1:${relay.adminPort}/drain`, {
        method,
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        ...(method === 'POST' ? { body: JSON.stringify({ peers: [] }) } : {}),
      });
      assert.equal(res.status, method === 'POST' ? 202 : 200);
      return (await res.json()) as { done: boolean; queued: number; eventsPending?: boolean };
    };
    await send(relay, 'drained@dest.test', 1);
    await mx.waitForMessages(1, 20_000);
    await waitFor(() => rx.requests.length >= 1, { timeoutMs: 20_000, what: 'a failed request' });
    await drain('POST');
    const pending = await waitFor(
      async () => {
        const s = await drain('GET');
        return s.queued === 0 && s;
      },
      { timeoutMs: 20_000, what: 'an empty queue' },
    );
    assert.equal(pending.eventsPending, true);
    assert.equal(pending.done, false, 'not drained while events wait in the outbox');
    rx.setMode('up');
    await waitFor(async () => (await drain('GET')).done, { timeoutMs: 30_000, what: 'drain done' });
    assert.deepEqual(byRecipient(rx.accepted()).get('drained@dest.test'), ['accepted', 'delivered']);
  },
);

test(
  'endpoints change by hot reload: a new one gets what is written from then on, a removed one nothing more',
  { timeout: 60_000 },
  async (t) => {
    const mx = await startTestMx({ name: 'mx.events.test' });
    const a = await startWebhookReceiver('up');
    const b = await startWebhookReceiver('up');
    const cfg = config(mx.port, a, { events: ['delivered'] });
    const relay = await startRelay({ config: cfg, secrets: { 'hook.key': SECRET } });
    t.after(async () => {
      await relay.cleanup();
      await a.close();
      await b.close();
      await mx.close();
    });
    await send(relay, 'before@dest.test', 1);
    await waitFor(() => a.accepted().length >= 1, { timeoutMs: 20_000, what: 'the first endpoint' });
    assert.deepEqual(
      a.accepted().map((e) => [e.type, e.recipient]),
      [['delivered', 'before@dest.test']],
      'only the types asked for',
    );
    const doc = YAML.parse(await readFile(relay.configFile, 'utf8')) as typeof cfg;
    doc.tenants[0].webhooks = [{ url: b.url, secretFile: 'hook.key', batchSize: 5 }];
    const since = relay.logs.length;
    await writeFile(`${relay.configFile}.tmp`, YAML.stringify(doc));
    await rename(`${relay.configFile}.tmp`, relay.configFile);
    await relay.waitForLog((l) => l.event === 'config.reloaded', 20_000, since);
    await send(relay, 'after@dest.test', 2);
    await waitFor(() => b.accepted().length >= 2, { timeoutMs: 20_000, what: 'the new endpoint' });
    assert.deepEqual(
      b.accepted().map((e) => [e.type, e.recipient]),
      [
        ['accepted', 'after@dest.test'],
        ['delivered', 'after@dest.test'],
      ],
    );
    assert.equal(a.requests.length, 1, 'the removed endpoint got nothing more');
  },
);
