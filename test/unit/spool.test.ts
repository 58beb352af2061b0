/** Spool on a real temporary directory: durable write, byte-exact read back, state, recovery, removal. */
import { describe, it, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  Spool,
  initialState,
  newQueueId,
  type Envelope,
  type SpooledMessage,
} from '../../relay/src/spool/disk.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

function envelope(id: string, raw: Buffer, over: Partial<Envelope> = {}): Envelope {
  return {
    v: 1,
    id,
    tenant: 'default',
    pool: null,
    arrivedAt: Date.now(),
    from: 'sender@example.test',
    rcpts: [
      { address: 'a@example.test', notify: ['FAILURE'], orcpt: 'rfc822;a@example.test' },
      { address: 'b@example.test' },
    ],
    dsn: { ret: 'HDRS', envid: 'env-1' },
    size: raw.length,
    eightBit: false,
    smtpUtf8: false,
    origin: 'smtp',
    client: { address: '127.0.0.1', helo: 'client.test', listener: 'smtp' },
    ...over,
  };
}

/** Every byte value, CR/LF in odd places, a line that is just a dot, and no final newline. */
function awkwardBody(): Buffer {
  const all = Buffer.alloc(256);
  for (let i = 0; i < 256; i++) all[i] = i;
  return Buffer.concat([
    Buffer.from('Subject: t\r\n\r\nline\r\n.\r\n\n\r\r\n'),
    all,
    Buffer.from('\r\n..x\r\nend-without-newline'),
  ]);
}

describe('Spool', () => {
  let dir: string;
  const open = async (o: { maxMessages?: number; minFreeBytes?: number } = {}) => {
    const s = new Spool({ dir, maxMessages: o.maxMessages ?? 1000, minFreeBytes: o.minFreeBytes ?? 0 });
    await s.open();
    const msgs: SpooledMessage[] = [];
    for await (const batch of s.scan(() => undefined)) for (const e of batch) msgs.push(await s.load(e.id));
    msgs.sort((a, b) => a.env.arrivedAt - b.env.arrivedAt || (a.env.id < b.env.id ? -1 : 1));
    return { s, msgs };
  };

  beforeEach(async () => {
    dir = path.join(await makeTmpDir('cartero-spool-'), 'spool');
  });
  afterEach(async () => {
    await removeTmpDir(path.dirname(dir));
  });

  it('creates its layout on an empty directory and finds nothing', async () => {
    const { s, msgs } = await open();
    assert.deepEqual(msgs, []);
    assert.equal(s.size, 0);
    for (const d of ['tmp', 'queue', 'state']) assert.ok(existsSync(path.join(dir, d)), `${d}/ exists`);
  });

  it('reads back exactly the bytes written, from several buffers, through reopen', async () => {
    const { s } = await open();
    const parts = [Buffer.from('Received: from x\r\n'), awkwardBody()];
    const raw = Buffer.concat(parts);
    const id = newQueueId();
    const env = envelope(id, raw);
    const offset = await s.write(env, parts);
    assert.equal(s.size, 1);
    assert.equal(s.sizeBytes, raw.length);
    assert.deepEqual(await s.readBody({ env, state: initialState(env, 0), bodyOffset: offset }), raw);
    assert.deepEqual(await readdir(path.join(dir, 'tmp')), [], 'nothing left in tmp/ after a write');

    const { s: s2, msgs } = await open();
    assert.equal(msgs.length, 1);
    assert.deepEqual(msgs[0].env, env, 'envelope survives reopen unchanged');
    assert.equal(msgs[0].bodyOffset, offset);
    assert.deepEqual(
      msgs[0].state,
      { ...initialState(env, msgs[0].state.nextAttemptAt) },
      'no state file: initial state',
    );
    assert.deepEqual(await s2.readBody(msgs[0]), raw);
    assert.equal(s2.size, 1);
    assert.equal(s2.sizeBytes, raw.length);
  });

  it('keeps delivery state across reopen, and the latest one wins', async () => {
    const { s } = await open();
    const raw = Buffer.from('Subject: s\r\n\r\nbody\r\n');
    const id = newQueueId();
    const env = envelope(id, raw);
    await s.write(env, [raw]);
    const st = initialState(env, 1000);
    st.attempts = 1;
    st.nextAttemptAt = 5000;
    st.rcpts[0] = {
      status: 'delivered',
      attempts: 1,
      lastAttemptAt: 1000,
      lastReply: '250 ok',
      lastStatus: '2.0.0',
      remoteMta: 'mx.test',
    };
    st.rcpts[1] = {
      status: 'pending',
      attempts: 1,
      lastAttemptAt: 1000,
      lastReply: '451 later',
      lastStatus: '4.3.0',
    };
    await s.saveState(id, st);
    const later = structuredClone(st);
    later.attempts = 2;
    later.nextAttemptAt = 9000;
    later.delayWarned = true;
    await s.saveState(id, later);
    assert.ok(!existsSync(path.join(dir, 'state', `${id}.json.tmp`)), 'no temp state file left');

    const { msgs } = await open();
    assert.equal(msgs.length, 1);
    assert.deepEqual(msgs[0].state, later);
  });

  it('remove() deletes the message and its state; reopen does not bring it back', async () => {
    const { s } = await open();
    const raw = Buffer.from('Subject: r\r\n\r\nx\r\n');
    const keep = envelope(newQueueId(), raw);
    const gone = envelope(newQueueId(), raw);
    await s.write(keep, [raw]);
    await s.write(gone, [raw]);
    await s.saveState(gone.id, initialState(gone, 1));
    await s.remove(gone.id, gone.size);
    assert.equal(s.size, 1);
    assert.equal(s.sizeBytes, raw.length);
    assert.deepEqual(await readdir(path.join(dir, 'state')), []);
    const { msgs } = await open();
    assert.deepEqual(
      msgs.map((m) => m.env.id),
      [keep.id],
    );
  });

  it('recovery drops temp files and orphan or half-written state files, and returns messages oldest first', async () => {
    const { s } = await open();
    const raw = Buffer.from('Subject: o\r\n\r\nx\r\n');
    const newer = envelope(newQueueId(), raw, { arrivedAt: 2_000 });
    const older = envelope(newQueueId(), raw, { arrivedAt: 1_000 });
    await s.write(newer, [raw]);
    await s.write(older, [raw]);
    // what a crash can leave behind
    const orphan = newQueueId();
    await writeFile(path.join(dir, 'tmp', newQueueId()), 'CSPOOL1 12\n{"half":');
    await writeFile(path.join(dir, 'state', `${orphan}.json`), JSON.stringify(initialState(older, 1)));
    await writeFile(path.join(dir, 'state', `${older.id}.json.tmp`), '{"v":1,"attem');
    // a valid state next to the temp one stays
    const st = initialState(older, 7);
    st.attempts = 3;
    await s.saveState(older.id, st);
    await writeFile(path.join(dir, 'state', `${older.id}.json.tmp`), '{"v":1,"attem');

    const { msgs } = await open();
    assert.deepEqual(
      msgs.map((m) => m.env.id),
      [older.id, newer.id],
      'sorted by arrival',
    );
    assert.equal(msgs[0].state.attempts, 3);
    assert.deepEqual(await readdir(path.join(dir, 'tmp')), []);
    assert.deepEqual(await readdir(path.join(dir, 'state')), [`${older.id}.json`]);
  });

  it('sets a corrupt queue file aside under corrupt/ and still opens with the others', async () => {
    const { s } = await open();
    const raw = Buffer.from('Subject: c\r\n\r\nx\r\n');
    const good = envelope(newQueueId(), raw);
    await s.write(good, [raw]);
    const bad = [
      [newQueueId(), 'garbage with no header'],
      [newQueueId(), 'CSPOOL1 500\n{"v":1,"id":"trunc'],
      [newQueueId(), 'CSPOOL1 9\n{"v":1,"i\nbody'],
    ];
    for (const [id, text] of bad) await writeFile(path.join(dir, 'queue', `${id}.msg`), text);
    // an envelope that claims another id
    const other = newQueueId();
    const json = JSON.stringify(envelope(newQueueId(), raw));
    await writeFile(
      path.join(dir, 'queue', `${other}.msg`),
      `CSPOOL1 ${json.length}\n${json}\n${raw.toString()}`,
    );
    bad.push([other, '']);
    await writeFile(path.join(dir, 'state', `${bad[0][0]}.json`), '{}');

    const { s: s2, msgs } = await open();
    assert.deepEqual(
      msgs.map((m) => m.env.id),
      [good.id],
    );
    assert.equal(s2.size, 1);
    assert.deepEqual(s2.quarantined.map((q) => q.file).sort(), bad.map(([id]) => `${id}.msg`).sort());
    for (const q of s2.quarantined) {
      assert.equal(q.movedTo, path.join(dir, 'corrupt', q.file));
      assert.ok(q.reason.length > 0);
    }
    assert.deepEqual((await readdir(path.join(dir, 'queue'))).sort(), [`${good.id}.msg`]);
    assert.deepEqual(
      (await readdir(path.join(dir, 'corrupt'))).sort(),
      bad.map(([id]) => `${id}.msg`).sort(),
    );
    assert.equal(
      await readFile(path.join(dir, 'corrupt', `${bad[0][0]}.msg`), 'utf8'),
      'garbage with no header',
      'kept byte for byte',
    );
    assert.ok(
      s2.quarantined.some((q) => /does not match/.test(q.reason)),
      'id mismatch is named as such',
    );
    assert.deepEqual(await readdir(path.join(dir, 'state')), [], 'state of a set-aside message is dropped');

    // and the next start is clean
    const { s: s3 } = await open();
    assert.deepEqual(s3.quarantined, []);
  });

  it('moves files in queue/ that are not its own aside, and leaves directories alone', async () => {
    await open();
    await mkdir(path.join(dir, 'queue', 'lost+found'));
    await writeFile(path.join(dir, 'queue', 'README'), 'x');
    await writeFile(path.join(dir, 'queue', 'not-an-id.msg'), 'x');
    const { s, msgs } = await open();
    assert.deepEqual(msgs, []);
    assert.deepEqual(s.quarantined.map((q) => q.file).sort(), ['README', 'not-an-id.msg']);
    assert.ok(existsSync(path.join(dir, 'corrupt', 'README')));
    assert.ok(existsSync(path.join(dir, 'queue', 'lost+found')));
  });

  it('refuses with 452 4.3.1 when full, and counts a slot free again after remove', async () => {
    const { s } = await open({ maxMessages: 2 });
    const raw = Buffer.from('Subject: f\r\n\r\nx\r\n');
    const a = envelope(newQueueId(), raw);
    await s.write(a, [raw]);
    await s.write(envelope(newQueueId(), raw), [raw]);
    await assert.rejects(s.checkCapacity(), { responseCode: 452, enhanced: '4.3.1' });
    await assert.rejects(s.write(envelope(newQueueId(), raw), [raw]), {
      responseCode: 452,
      enhanced: '4.3.1',
    });
    assert.equal(s.size, 2, 'a refused write takes no slot');
    assert.equal((await readdir(path.join(dir, 'queue'))).length, 2);
    await s.remove(a.id, a.size);
    await s.checkCapacity();
  });

  it('concurrent writers cannot overshoot maxMessages (check and reservation are one step)', async () => {
    const { s } = await open({ maxMessages: 2 });
    const raw = Buffer.from('Subject: race\r\n\r\nx\r\n');
    const results = await Promise.allSettled(
      Array.from({ length: 5 }, () => s.write(envelope(newQueueId(), raw), [raw])),
    );
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'fulfilled', 'rejected', 'rejected', 'rejected'],
    );
    for (const r of results)
      if (r.status === 'rejected') assert.equal((r.reason as { responseCode: number }).responseCode, 452);
    assert.equal(s.size, 2);
    assert.equal((await readdir(path.join(dir, 'queue'))).length, 2);
  });

  it('refuses with 452 4.3.1 below minFreeBytes', async () => {
    const { s } = await open({ minFreeBytes: 1e15 });
    await assert.rejects(s.checkCapacity(), { responseCode: 452, enhanced: '4.3.1', message: /storage/ });
    const raw = Buffer.from('x');
    await assert.rejects(s.write(envelope(newQueueId(), raw), [raw]), { responseCode: 452 });
    assert.deepEqual(await readdir(path.join(dir, 'queue')), []);
    assert.deepEqual(await readdir(path.join(dir, 'tmp')), []);
  });

  it('a failed write (id already being written) leaves nothing behind and gives 451', async () => {
    const { s } = await open();
    const raw = Buffer.from('x');
    const id = newQueueId();
    await writeFile(path.join(dir, 'tmp', id), 'someone else');
    await assert.rejects(s.write(envelope(id, raw), [raw]), { responseCode: 451, enhanced: '4.3.0' });
    assert.equal(s.size, 0);
    assert.ok(!existsSync(path.join(dir, 'queue', `${id}.msg`)));
  });

  it('concurrent writes all land (shared directory sync)', async () => {
    const { s } = await open();
    const envs = Array.from({ length: 50 }, (_, i) => {
      const raw = Buffer.from(`Subject: ${i}\r\n\r\n${'x'.repeat(i)}\r\n`);
      return { env: envelope(newQueueId(), raw), raw };
    });
    const offsets = await Promise.all(envs.map(({ env, raw }) => s.write(env, [raw])));
    assert.equal(s.size, 50);
    const { msgs, s: s2 } = await open();
    assert.equal(msgs.length, 50);
    for (let i = 0; i < envs.length; i++)
      assert.deepEqual(
        await s2.readBody({ env: envs[i].env, state: initialState(envs[i].env, 0), bodyOffset: offsets[i] }),
        envs[i].raw,
      );
  });
});

describe('newQueueId', () => {
  it('is 20 characters of [0-9A-Z]', () => {
    for (let i = 0; i < 1000; i++) assert.match(newQueueId(), /^[0-9A-Z]{20}$/);
    assert.match(newQueueId(0), /^[0-9A-Z]{20}$/);
  });

  it('is unique over many ids made in the same millisecond', () => {
    const ids = new Set<string>();
    const n = 20_000;
    for (let i = 0; i < n; i++) ids.add(newQueueId(1_700_000_000_000));
    assert.equal(ids.size, n);
  });

  it('sorts by time: a later millisecond always sorts after', () => {
    const times = [
      0, 1, 35, 36, 1_000, 1_700_000_000_000, 1_700_000_000_001, 1_800_000_000_000, 4_000_000_000_000,
    ];
    const ids = times.map((t) => newQueueId(t));
    for (let i = 1; i < ids.length; i++)
      assert.ok(ids[i - 1] < ids[i], `${ids[i - 1]} (${times[i - 1]}) < ${ids[i]} (${times[i]})`);
    // and many random pairs of increasing times
    for (let i = 0; i < 1000; i++) {
      const a = Math.floor(Math.random() * 3e12);
      const b = a + 1 + Math.floor(Math.random() * 1e6);
      assert.ok(newQueueId(a) < newQueueId(b), `${a} < ${b}`);
    }
  });
});
