/**
 * Delivery events handed off during a drain (relay/src/events/handoff-wire.ts, ADR 019): the message
 * format and its checks, the shipper's decisions (lowest cursor, cursors to move, which events go, back-off),
 * chunks bounded in events and bytes, and the outbox's durable append of a peer's events.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { DeliveryEvent } from '../../relay/src/contract/events.js';
import {
  CHUNK_MAX_BYTES,
  EventsBody,
  chunkBytes,
  cursorsToAdvance,
  decodeEventsBody,
  encodeEventsMessage,
  lowestCursor,
  parseEventsHeader,
  shipBackoffMs,
  shipDecision,
  type ShipEndpoint,
} from '../../relay/src/events/handoff-wire.js';
import { takeHandoffHeader } from '../../relay/src/delivery/handoff.js';
import { Outbox } from '../../relay/src/events/outbox.js';
import { EventMetrics } from '../../relay/src/events/metrics.js';
import { readBatch, type Cursor } from '../../relay/src/events/cursor.js';
import { encodeRecord, MAX_RECORD_BYTES } from '../../relay/src/events/record.js';
import { SmtpReplyError } from '../../relay/src/errors.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

const T0 = Date.parse('2026-12-05T00:00:00Z');
const ev = (n: number, o: Partial<DeliveryEvent> = {}): DeliveryEvent => ({
  id: `id-${n}`,
  type: 'delivered',
  at: new Date(T0).toISOString(),
  tenant: 't',
  queueId: `q${n}`,
  recipient: `r${n}@x.test`,
  reply: { text: 'ünïcode ok' },
  ...o,
});

/** The body of a message as the peer gets it: after the header section. */
function bodyOf(msg: Buffer): { head: Buffer; body: Buffer } {
  const end = msg.indexOf('\r\n\r\n') + 4;
  return { head: msg.subarray(0, end), body: msg.subarray(end) };
}

test('an events message round-trips with CRLF lines; the header gives the count', () => {
  const events = [ev(1), ev(2), ev(3)];
  const msg = encodeEventsMessage(events);
  const { head, body } = bodyOf(msg);
  assert.equal(head.toString(), 'X-Cartero-Events: 1; count=3\r\n\r\n');
  assert.ok(body.toString('latin1').split('\r\n').slice(0, -1).length === 3, 'one CRLF line per event');
  assert.deepEqual(decodeEventsBody(body, 3), { events });
  // the end of DATA may take the last line's CRLF with it
  assert.deepEqual(decodeEventsBody(body.subarray(0, body.length - 2), 3), { events });
  assert.deepEqual(parseEventsHeader(' 1; count=3'), { count: 3 });
  assert.equal(parseEventsHeader(' 2; count=3'), undefined);
  assert.equal(parseEventsHeader(' 1'), undefined);
  assert.equal(parseEventsHeader(' 1; count=-1'), undefined);
});

test('a damaged, torn or short chunk is refused whole', () => {
  const { body } = bodyOf(encodeEventsMessage([ev(1), ev(2), ev(3)]));
  const bad = Buffer.from(body);
  bad[40] ^= 0x01;
  assert.match((decodeEventsBody(bad, 3) as { error: string }).error, /1 damaged/);
  // cut in the middle of the last line: its CRC fails
  assert.ok('error' in decodeEventsBody(body.subarray(0, body.length - 20), 3));
  // a whole line missing: fewer than announced
  const two = body.subarray(0, body.indexOf('\r\n', body.indexOf('\r\n') + 2) + 2);
  assert.match(
    (decodeEventsBody(two, 3) as { error: string }).error,
    /2 events where the header announced 3/,
  );
  assert.ok('error' in decodeEventsBody(Buffer.from('garbage\r\n'), 1));
  assert.deepEqual(decodeEventsBody(Buffer.alloc(0), 0), { events: [] });
});

test("a peer's event line longer than the outbox's records is refused: stored, it would stall every reader", async () => {
  // the outbox's own records are a few KiB (free text cut to 1000 characters), whatever the characters
  const wide = ev(1, {
    reply: { text: '\u{1F600}'.repeat(1000) },
    recipient: `${'\u{1F600}'.repeat(1000)}@x.test`,
  });
  assert.ok(encodeRecord(wide).length <= MAX_RECORD_BYTES);
  const fine = bodyOf(encodeEventsMessage([ev(0), wide])).body;
  assert.equal((decodeEventsBody(fine, 2) as { events: DeliveryEvent[] }).events.length, 2);
  // a CRC-valid line of 300 KiB: more than readBatch reads at a time
  const huge = ev(2, { reply: { text: 'x'.repeat(300 * 1024) } });
  const { body } = bodyOf(encodeEventsMessage([ev(0), huge, ev(3)]));
  assert.match(
    (decodeEventsBody(body, 3) as { error: string }).error,
    new RegExp(`longer than ${MAX_RECORD_BYTES} bytes`),
  );
  // why: in the outbox, such a line is never read whole, and the reader does not move past it
  const dir = await makeTmpDir();
  try {
    const box = outbox(dir);
    await box.open();
    await box.appendDurable([huge, ev(3)]);
    const b = await readBatch(box, { seq: box.activeSegment, offset: 0 }, 100, () => true);
    assert.equal(b.events.length, 0);
    assert.deepEqual(b.next, { seq: box.activeSegment, offset: 0 });
    await box.close();
  } finally {
    await removeTmpDir(dir);
  }
});

test('the body is held up to its bound, then 552', () => {
  const b = new EventsBody(1, 10);
  b.push(Buffer.alloc(10));
  assert.throws(
    () => b.push(Buffer.alloc(1)),
    (e: unknown) => e instanceof SmtpReplyError && e.responseCode === 552,
  );
});

test('X-Cartero-Events is taken out of the header section, with X-Cartero-Handoff', () => {
  const raw = Buffer.from(
    'Subject: x\r\nX-Cartero-Events: 1; count=2\r\nx-cartero-events: 1; count=9\r\n\r\nbody',
  );
  const t = takeHandoffHeader(raw);
  assert.deepEqual(t.events, { count: 2 });
  assert.equal(t.raw.toString(), 'Subject: x\r\n\r\nbody');
  const junk = takeHandoffHeader(Buffer.from('X-Cartero-Events: yes\r\n\r\nbody'));
  assert.equal(junk.events, undefined, 'a malformed value is dropped');
  assert.equal(junk.raw.toString(), '\r\nbody');
  assert.equal(takeHandoffHeader(Buffer.from('Subject: y\r\n\r\n')).events, undefined);
});

test('the shipper reads from the lowest cursor and moves only the cursors behind a chunk', () => {
  const c = (seq: number, offset: number): Cursor => ({ seq, offset });
  assert.equal(lowestCursor([]), undefined);
  assert.deepEqual(lowestCursor([c(2, 0), c(1, 500), c(1, 700)]), c(1, 500));
  const cursors = new Map([
    ['behind', c(1, 100)],
    ['at', c(2, 40)],
    ['ahead', c(3, 0)],
  ]);
  assert.deepEqual(cursorsToAdvance(cursors, c(2, 40)), ['behind']);
  assert.deepEqual(cursorsToAdvance(cursors, c(2, 41)), ['behind', 'at']);
});

test('an event goes when an endpoint that has not passed it wants it and it is younger than its retryFor', () => {
  const ep = (o: Partial<ShipEndpoint>): ShipEndpoint => ({
    tenant: 't',
    events: ['delivered'],
    retryForMs: 3_600_000,
    cursor: { seq: 1, offset: 0 },
    ...o,
  });
  const at = { seq: 1, offset: 100 };
  assert.equal(shipDecision([ep({})], ev(1), at, T0), 'ship');
  assert.equal(shipDecision([ep({ tenant: 'u' })], ev(1), at, T0), 'skip', 'another tenant');
  assert.equal(shipDecision([ep({ events: ['bounced'] })], ev(1), at, T0), 'skip', 'another type');
  assert.equal(shipDecision([ep({ cursor: { seq: 1, offset: 101 } })], ev(1), at, T0), 'skip', 'passed');
  assert.equal(shipDecision([ep({})], ev(1), at, T0 + 3_600_000), 'expired');
  assert.equal(
    shipDecision([ep({}), ep({ retryForMs: 7_200_000 })], ev(1), at, T0 + 3_600_000),
    'ship',
    'one endpoint still retries it',
  );
  assert.equal(shipDecision([], ev(1), at, T0), 'skip');
  assert.equal(chunkBytes(26_214_400), CHUNK_MAX_BYTES);
  assert.equal(chunkBytes(1_048_576), 942_694, "a peer's smaller size limit bounds a chunk");
  assert.equal(chunkBytes(1024), 1, 'at least one event');
  assert.deepEqual(
    [1, 2, 5, 6, 50].map((n) => shipBackoffMs(n, 0)),
    [1000, 2000, 16_000, 30_000, 30_000],
  );
});

function outbox(dir: string, maxBytes = 1 << 30) {
  const metrics = new EventMetrics(new Registry(), () => 0);
  const box = new Outbox({
    dir,
    maxBytes,
    flushIntervalMs: 5,
    maxBuffered: 1000,
    wanted: () => true,
    metrics,
    log: pino({ level: 'silent' }),
    now: () => T0,
  });
  return box;
}

test('chunks are bounded in bytes (always one event), and the reader says where each event starts', async () => {
  const dir = await makeTmpDir();
  try {
    const box = outbox(dir);
    await box.open();
    const events = [...Array(10).keys()].map((i) => ev(i));
    await box.appendDurable(events);
    const line = encodeRecord(ev(0)).length;
    const starts: number[] = [];
    const from = { seq: box.activeSegment, offset: 0 };
    const b = await readBatch(
      box,
      from,
      100,
      (_e, at) => {
        starts.push(at.offset);
        return true;
      },
      3 * line,
    );
    assert.deepEqual(
      b.events.map((e) => e.id),
      ['id-0', 'id-1', 'id-2'],
    );
    assert.deepEqual(starts, [0, line, 2 * line]);
    assert.deepEqual(b.next, { seq: from.seq, offset: 3 * line });
    const one = await readBatch(box, b.next, 100, () => true, 1);
    assert.deepEqual(
      one.events.map((e) => e.id),
      ['id-3'],
      'an event larger than the bound still goes alone',
    );
    const rest = await readBatch(box, one.next, 100, () => true, 1 << 20);
    assert.equal(rest.events.length, 6);
    await box.close();
  } finally {
    await removeTmpDir(dir);
  }
});

test("a peer's events are appended with their ids and times, durably; a full outbox throws", async () => {
  const dir = await makeTmpDir();
  try {
    const box = outbox(dir, 2000);
    await box.open();
    box.emit({ type: 'accepted', tenant: 't', queueId: 'own' });
    const theirs = [ev(1, { at: '2026-01-01T00:00:00.000Z' }), ev(2)];
    await box.appendDurable(theirs);
    const b = await readBatch(box, { seq: box.activeSegment, offset: 0 }, 100, () => true);
    assert.deepEqual(
      b.events.map((e) => e.queueId),
      ['own', 'q1', 'q2'],
      'after what was emitted before',
    );
    assert.deepEqual(b.events.slice(1), theirs, 'ids and times kept');
    await assert.rejects(box.appendDurable([...Array(20).keys()].map((i) => ev(i))), /outbox full/);
    await box.close();
    await assert.rejects(box.appendDurable([ev(1)]), /closed/);
  } finally {
    await removeTmpDir(dir);
  }
});
