/** Delivery events (relay/src/events/): record format, signature, back-off, outbox and cursor reading. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { DeliveryEvent } from '../../relay/src/contract/events.js';
import { decodeRecords, encodeRecord, segmentName, segmentSeq } from '../../relay/src/events/record.js';
import { sign, verify } from '../../relay/src/events/signature.js';
import { afterFailure, backoffMs, readStatus, wants } from '../../relay/src/events/policy.js';
import { messageIdOf } from '../../relay/src/events/message-id.js';
import { outcomeEvents, replyOf } from '../../relay/src/events/from-outcomes.js';
import { acceptedEvents, rcptRefusedEvent, rejectedEvents } from '../../relay/src/events/smtp-events.js';
import { applyOutcomes } from '../../relay/src/delivery/outcomes.js';
import type { Outcome } from '../../relay/src/delivery/types.js';
import { initialState, type Envelope } from '../../relay/src/spool/types.js';
import { SmtpReplyError } from '../../relay/src/errors.js';
import { Outbox } from '../../relay/src/events/outbox.js';
import { eventId } from '../../relay/src/events/event-id.js';
import { EventMetrics } from '../../relay/src/events/metrics.js';
import { loadCursor, readBatch, saveCursor } from '../../relay/src/events/cursor.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

const ev = (n: number, tenant = 't'): DeliveryEvent => ({
  id: `id-${n}`,
  type: 'delivered',
  at: '2026-12-05T00:00:00.000Z',
  tenant,
  queueId: `q${n}`,
  recipient: `r${n}@x.test`,
});

test('records round-trip; a torn tail is left unconsumed; a damaged line is skipped and counted', () => {
  const buf = Buffer.concat([encodeRecord(ev(1)), encodeRecord(ev(2)), encodeRecord(ev(3))]);
  const all = decodeRecords(buf);
  assert.deepEqual(
    all.records.map((r) => r.event.id),
    ['id-1', 'id-2', 'id-3'],
  );
  assert.equal(all.consumed, buf.length);
  const torn = decodeRecords(buf.subarray(0, buf.length - 5));
  assert.equal(torn.records.length, 2);
  assert.equal(torn.consumed, all.records[1].end);
  const bad = Buffer.from(buf);
  bad[all.records[1].start + 20] ^= 0x01; // a bit flipped inside record 2's JSON
  const d = decodeRecords(bad);
  assert.deepEqual(
    d.records.map((r) => r.event.id),
    ['id-1', 'id-3'],
  );
  assert.equal(d.corrupt, 1);
  assert.equal(decodeRecords(buf, 1).records.length, 1);
  assert.equal(segmentSeq(segmentName(42)), 42);
  assert.equal(segmentSeq('seg-1.log'), undefined);
});

test('signature: verify accepts its own, refuses another body, key, or a stale timestamp', () => {
  const h = sign('k', '[1]', 1000);
  assert.match(h, /^t=1000,v1=[0-9a-f]{64}$/);
  assert.equal(verify('k', '[1]', h, 1000), true);
  assert.equal(verify('k', '[2]', h, 1000), false);
  assert.equal(verify('other', '[1]', h, 1000), false);
  assert.equal(verify('k', '[1]', h, 1000 + 301), false);
  assert.equal(verify('k', '[1]', 't=1000,v1=zz', 1000), false);
});

test('back-off doubles from 1s to 5 min with jitter, and gives up after retryFor', () => {
  assert.deepEqual(
    [1, 2, 3, 4, 10, 100].map((n) => backoffMs(n, 0)),
    [1000, 2000, 4000, 8000, 300_000, 300_000],
  );
  assert.equal(backoffMs(1, 1), 800);
  assert.deepEqual(afterFailure(0, 1000, 1, 60_000, 0), { retryAt: 2000 });
  assert.deepEqual(afterFailure(0, 59_500, 9, 60_000, 0), { retryAt: 60_000 });
  assert.equal(afterFailure(0, 60_000, 10, 60_000, 0), 'drop');
  assert.deepEqual([200, 204, 301, 400, 429, 500, 503].map(readStatus), [
    'ok',
    'ok',
    'http-other',
    'http-4xx',
    'http-4xx',
    'http-5xx',
    'http-5xx',
  ]);
  assert.equal(wants({ tenant: 't', events: ['delivered'] }, { tenant: 't', type: 'delivered' }), true);
  assert.equal(wants({ tenant: 't', events: ['delivered'] }, { tenant: 'u', type: 'delivered' }), false);
  assert.equal(wants({ tenant: 't', events: ['bounced'] }, { tenant: 't', type: 'delivered' }), false);
});

test('Message-ID from a header section, folded or not; reply code and enhanced status', () => {
  assert.equal(messageIdOf(Buffer.from('From: a@b\r\nMessage-ID: <x@y>\r\n\r\n')), '<x@y>');
  assert.equal(messageIdOf(Buffer.from('message-id:\r\n <folded@y>\r\nSubject: s\r\n')), '<folded@y>');
  assert.equal(messageIdOf(Buffer.from('Subject: Message-ID: <no>\r\n')), undefined);
  assert.deepEqual(replyOf('550 5.1.1 no such user'), {
    code: 550,
    enhanced: '5.1.1',
    text: '550 5.1.1 no such user',
  });
  assert.deepEqual(replyOf('connection refused', '4.4.1'), { enhanced: '4.4.1', text: 'connection refused' });
});

function outbox(
  dir: string,
  o: {
    maxBytes?: number;
    maxBuffered?: number;
    segmentBytes?: number;
    space?: { room(n: number): boolean; wrote(n: number): void };
  } = {},
) {
  const metrics = new EventMetrics(new Registry(), () => 0);
  const box = new Outbox({
    dir,
    maxBytes: o.maxBytes ?? 1 << 30,
    flushIntervalMs: 5,
    maxBuffered: o.maxBuffered ?? 1000,
    segmentBytes: o.segmentBytes,
    space: o.space,
    wanted: (e) => e.tenant !== 'nobody',
    metrics,
    log: pino({ level: 'silent' }),
    now: () => 0,
  });
  return { box, metrics };
}

const count = async (m: EventMetrics, reason: string) =>
  (await m.dropped.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;

test('outbox: group commit, segment roll, cursor reading in order, filter, removal, restart', async () => {
  const dir = await makeTmpDir();
  try {
    const { box } = outbox(dir, { segmentBytes: 600 });
    await box.open();
    for (let i = 0; i < 20; i++)
      box.emit({ type: 'delivered', tenant: i % 2 ? 'a' : 'b', queueId: `q${i}`, recipient: `r${i}@x` });
    box.emit({ type: 'delivered', tenant: 'nobody' });
    await box.flush();
    for (let i = 20; i < 30; i++) box.emit({ type: 'bounced', tenant: 'a', queueId: `q${i}` });
    await box.flush();
    assert.ok(box.segments().length >= 2, 'rolled to a second segment');
    const seen: string[] = [];
    let cur = { seq: box.segments()[0], offset: 0 };
    for (let k = 0; k < 50; k++) {
      const b = await readBatch(box, cur, 3, (e) => e.tenant === 'a');
      seen.push(...b.events.map((e) => e.queueId!));
      if (!b.events.length && b.next.seq === cur.seq && b.next.offset === cur.offset) break;
      cur = b.next;
    }
    const want = [...Array(30).keys()].filter((i) => i >= 20 || i % 2).map((i) => `q${i}`);
    assert.deepEqual(seen, want);
    await saveCursor(dir, 'k', cur);
    assert.deepEqual(await loadCursor(dir, 'k'), cur);
    await box.removeBefore(cur.seq);
    assert.equal(box.segments()[0], cur.seq);
    await box.close();
    // a torn tail (crash mid-write) in the last segment: the reopened outbox seals it, readers skip it
    await fsp.appendFile(box.file(box.segments().at(-1)!), '0000abcd {"id":"torn');
    const again = outbox(dir).box;
    await again.open();
    again.emit({ type: 'delivered', tenant: 'a', queueId: 'after' });
    await again.flush();
    const b = await readBatch(again, cur, 100, () => true);
    assert.deepEqual(
      b.events.map((e) => e.queueId),
      ['after'],
    );
    await again.close();
  } finally {
    await removeTmpDir(dir);
  }
});

test('outbox: beyond maxBytes and maxBuffered, events are dropped and counted', async () => {
  const dir = await makeTmpDir();
  try {
    const { box, metrics } = outbox(dir, { maxBytes: 1000, maxBuffered: 5 });
    await box.open();
    for (let i = 0; i < 8; i++) box.emit({ type: 'accepted', tenant: 't', queueId: `q${i}` });
    assert.equal(await count(metrics, 'buffer-full'), 3);
    await box.flush();
    for (let i = 0; i < 20; i++) {
      box.emit({ type: 'accepted', tenant: 't', queueId: `q${i}`, reply: { text: 'x'.repeat(100) } });
      await box.flush();
    }
    assert.ok((await count(metrics, 'outbox-full')) > 0);
    assert.ok(box.bytes() <= 1000);
    await box.close();
  } finally {
    await removeTmpDir(dir);
  }
});

const T0 = Date.parse('2026-12-01T00:00:00Z');
/** A tenant message `id` to `<user>@y.test` for each of `users`, arrived at T0. */
const envelope = (id: string, users: string[]): Envelope => ({
  v: 1,
  id,
  tenant: 't',
  pool: null,
  arrivedAt: T0,
  from: 's@x.test',
  rcpts: users.map((n) => ({ address: `${n}@y.test` })),
  dsn: {},
  size: 1,
  eightBit: false,
  smtpUtf8: false,
  origin: 'smtp',
  client: { address: '127.0.0.1', helo: 'h', listener: 'smtp' },
});

test('events of an applied attempt: delivered, bounced with class, deferred, expired; none for our DSNs', () => {
  const env: Envelope = { ...envelope('Q1', ['a', 'b', 'c', 'd']), messageId: '<m@x.test>' };
  const o = (result: Outcome['result'], status: string, reply: string): Outcome => ({
    result,
    status,
    reply,
    route: 'mx',
    egress: '192.0.2.1',
  });
  const outcomes = new Map<number, Outcome>([
    [0, o('delivered', '2.0.0', '250 2.0.0 ok')],
    [1, o('bounced', '5.1.1', '550 5.1.1 no such user')],
    [2, o('bounced', '5.7.1', '554 5.7.1 policy')],
    [3, o('deferred', '4.2.2', '452 4.2.2 mailbox full')],
  ]);
  const retry = { policy: { initialMs: 60_000, factor: 2, maxMs: 3_600_000 }, maxAgeMs: 86_400_000 };
  const input = { env, state: initialState(env, T0), outcomes, now: T0, retry, running: true };
  const first = applyOutcomes(input);
  const evs = outcomeEvents(env, outcomes, first, T0);
  assert.deepEqual(
    evs.map((e) => [e.type, e.recipient, e.bounce?.class, e.reply?.code, e.egress, e.messageId, e.queueId]),
    [
      ['delivered', 'a@y.test', undefined, 250, '192.0.2.1', '<m@x.test>', 'Q1'],
      ['bounced', 'b@y.test', 'hard', 550, '192.0.2.1', '<m@x.test>', 'Q1'],
      ['bounced', 'c@y.test', 'soft', 554, '192.0.2.1', '<m@x.test>', 'Q1'],
      ['deferred', 'd@y.test', undefined, 452, '192.0.2.1', '<m@x.test>', 'Q1'],
    ],
  );
  const late = T0 + 2 * 86_400_000;
  const expired = applyOutcomes({
    ...input,
    state: first.state,
    outcomes: new Map([[3, outcomes.get(3)!]]),
    now: late,
  });
  assert.deepEqual(
    outcomeEvents(env, new Map([[3, outcomes.get(3)!]]), expired, late).map((e) => e.type),
    ['expired'],
  );
  assert.deepEqual(outcomeEvents({ ...env, origin: 'dsn' }, outcomes, applyOutcomes(input), T0), []);
  // a hand-off the peer did not take (drain): no event; the peer reports what happens once it takes it
  const refused = new Map<number, Outcome>([
    [3, { ...o('deferred', '4.4.1', '421 peer busy'), route: 'handoff' }],
  ]);
  assert.deepEqual(outcomeEvents(env, refused, applyOutcomes({ ...input, outcomes: refused }), T0), []);
  assert.deepEqual(
    acceptedEvents(env, T0).map((e) => [e.type, e.recipient, e.queueId]),
    env.rcpts.map((r) => ['accepted', r.address, 'Q1']),
  );
  const quota = new SmtpReplyError('ERR_QUOTA', 452, '4.3.1', 'quota');
  assert.deepEqual(
    rejectedEvents('t', ['a@y'], quota, undefined, T0).map((e) => [e.type, e.reply?.code, e.reply?.enhanced]),
    [['rejected', 452, '4.3.1']],
  );
  assert.deepEqual(rejectedEvents('t', ['a@y'], new Error('disk'), undefined, T0), []);
  assert.equal(rcptRefusedEvent('t', 'a@y', 'suppressed', quota, T0).type, 'suppressed');
  assert.equal(rcptRefusedEvent('t', 'a@y', 'rate_limited', quota, T0).type, 'rejected');
});

test('event ids: the same attempt reported again keeps its ids; the next attempt, another type or message does not', async () => {
  const env = envelope('Q2', ['a', 'b']);
  const deferred: Outcome = { result: 'deferred', status: '4.2.2', reply: '452 4.2.2 full', route: 'mx' };
  const outcomes = new Map<number, Outcome>([
    [0, deferred],
    [1, deferred],
  ]);
  const retry = { policy: { initialMs: 60_000, factor: 2, maxMs: 3_600_000 }, maxAgeMs: 86_400_000 };
  const input = { env, state: initialState(env, T0), outcomes, now: T0, retry, running: true };
  const ids = (st: ReturnType<typeof initialState>, at: number) => {
    const plan = applyOutcomes({ ...input, state: st, now: at });
    return { plan, ids: outcomeEvents(env, outcomes, plan, at).map((e) => eventId(e.key)) };
  };
  // the crash: the state with the first attempt never reached the spool, so the attempt runs again
  const first = ids(initialState(env, T0), T0);
  const again = ids(initialState(env, T0), T0 + 5000);
  assert.deepEqual(again.ids, first.ids);
  assert.equal(new Set(first.ids).size, 2, 'one id per recipient');
  for (const id of first.ids)
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  const second = ids(first.plan.state, T0 + 60_000);
  assert.equal(second.ids.filter((id) => first.ids.includes(id)).length, 0, 'the next attempt: new ids');
  const accepted = acceptedEvents(env, T0).map((e) => eventId(e.key));
  assert.equal(accepted.filter((id) => first.ids.includes(id)).length, 0);
  assert.deepEqual(
    acceptedEvents(env, T0 + 1).map((e) => eventId(e.key)),
    accepted,
  );
  const other = acceptedEvents({ ...env, id: 'Q3' }, T0).map((e) => eventId(e.key));
  assert.equal(other.filter((id) => accepted.includes(id)).length, 0);
  assert.notEqual(eventId(), eventId(), 'no key: random');
  // through the outbox: the id is derived from the key, and the key itself is not written
  const dir = await makeTmpDir();
  try {
    const { box } = outbox(dir);
    await box.open();
    box.emit(acceptedEvents(env, T0)[0]);
    await box.flush();
    const b = await readBatch(box, { seq: box.segments()[0], offset: 0 }, 10, () => true);
    assert.equal(b.events[0].id, accepted[0]);
    assert.equal('key' in b.events[0], false);
    await box.close();
  } finally {
    await removeTmpDir(dir);
  }
});

test('outbox: events never take the room mail needs (the spool accounting says no room)', async () => {
  const dir = await makeTmpDir();
  try {
    let free = 400;
    const space = { room: (n: number) => free - n >= 0, wrote: (n: number) => void (free -= n) };
    const { box, metrics } = outbox(dir, { space });
    await box.open();
    for (let i = 0; i < 5; i++) {
      box.emit({ type: 'accepted', tenant: 't', queueId: `q${i}` });
      await box.flush();
    }
    assert.ok(box.bytes() > 0 && box.bytes() <= 400, `${box.bytes()} bytes written`);
    assert.equal(free, 400 - box.bytes(), 'written bytes are reported to the accounting');
    assert.ok((await count(metrics, 'disk-full')) > 0);
    await box.close();
  } finally {
    await removeTmpDir(dir);
  }
});
