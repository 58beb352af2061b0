/**
 * The pieces that keep a streamed message intact: the queue file trailer (a half-written file is never taken
 * for a whole one), the space accountant (transactions in flight cannot together overdraw the disk), and
 * the streaming receiver on a real directory (the header scan: receive-headers.test.ts).
 */
import { describe, it, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { encodeTrailer, parseTrailer, MAX_TRAILER } from '../../relay/src/spool/format.js';
import { SpaceAccountant } from '../../relay/src/spool/space.js';
import { receiveInto, MAX_CACHED_BODY } from '../../relay/src/receive.js';
import {
  Spool,
  initialState,
  newQueueId,
  SpoolCorruptError,
  type Envelope,
} from '../../relay/src/spool/disk.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';
import { waitFor } from '../helpers/poll.js';

/** A one-recipient envelope for a message of `size` bytes. */
function testEnvelope(id: string, size: number, over: Partial<Envelope> = {}): Envelope {
  return {
    v: 1,
    id,
    tenant: 't',
    pool: null,
    arrivedAt: 1,
    from: 'a@x.test',
    rcpts: [{ address: 'b@y.test' }],
    dsn: {},
    size,
    eightBit: false,
    smtpUtf8: false,
    origin: 'smtp',
    client: { address: '127.0.0.1', helo: 'x', listener: 'smtp' },
    ...over,
  };
}

/** An open spool in a temporary directory, for `fn`; the directory is removed after. */
async function withSpool(prefix: string, fn: (s: Spool, root: string) => Promise<void>): Promise<void> {
  const root = await makeTmpDir(prefix);
  try {
    const s = new Spool({ dir: path.join(root, 'spool'), maxMessages: 100, minFreeBytes: 0 });
    await s.open();
    await fn(s, root);
  } finally {
    await removeTmpDir(root);
  }
}

function tailOf(file: Buffer): Buffer {
  return file.subarray(Math.max(0, file.length - MAX_TRAILER));
}

describe('queue file trailer', () => {
  const body = Buffer.from('Subject: x\r\n\r\nhello\r\n');
  const json = Buffer.from('{"v":1}');
  const whole = Buffer.concat([body, json, encodeTrailer(body.length, json.length, 0xdeadbeef)]);

  it('finds body and envelope in a complete file', () => {
    const l = parseTrailer(whole.length, tailOf(whole));
    assert.ok(typeof l !== 'string', String(l));
    assert.equal(l.bodyLen, body.length);
    assert.equal(l.jsonOffset, body.length);
    assert.equal(l.jsonLen, json.length);
    assert.equal(l.crc, 0xdeadbeef);
  });

  it('refuses every truncation of the file', () => {
    for (let n = 0; n < whole.length; n++) {
      const cut = whole.subarray(0, n);
      assert.equal(typeof parseTrailer(cut.length, tailOf(cut)), 'string', `cut at ${n} of ${whole.length}`);
    }
  });

  it('refuses a file with bytes appended after the trailer or lengths that do not add up', () => {
    const longer = Buffer.concat([whole, Buffer.from('x\n')]);
    assert.equal(typeof parseTrailer(longer.length, tailOf(longer)), 'string');
    const lying = Buffer.concat([body, json, encodeTrailer(body.length + 1, json.length, 0)]);
    assert.match(String(parseTrailer(lying.length, tailOf(lying))), /do not add up/);
  });
});

describe('SpaceAccountant', () => {
  const fixed = (free: number) => async () => ({ bavail: free, bsize: 1 });

  it('reserves across transactions and refuses what does not fit', async () => {
    const s = new SpaceAccountant('/', 100, fixed(1000));
    await s.refresh();
    const a = s.tryReserve(500)!;
    assert.ok(a);
    assert.ok(s.tryReserve(400), '500 + 400 + 100 minFree = 1000 fits exactly');
    assert.equal(s.tryReserve(1), undefined, 'nothing more');
    a.release();
    assert.ok(s.tryReserve(500), 'released space can be promised again');
  });

  it('counts written bytes until the next statfs, and grows a reservation only while room remains', async () => {
    const s = new SpaceAccountant('/', 0, fixed(1000));
    await s.refresh();
    const a = s.tryReserve(300)!;
    assert.ok(a.wrote(300));
    assert.equal(s.available(), 700, 'written bytes leave available, the reservation is used up');
    assert.ok(a.wrote(600), 'a client sending more than declared grows its reservation while there is room');
    assert.equal(s.available(), 100);
    assert.equal(a.wrote(200), false, 'and is refused when there is none');
    const b = s.tryReserve(50);
    assert.equal(b, undefined, 'the overdraft is visible to others');
  });

  it('keeps the last figure when statfs fails', async () => {
    let fail = false;
    const s = new SpaceAccountant('/', 0, async () => {
      if (fail) throw new Error('EIO');
      return { bavail: 10, bsize: 1 };
    });
    await s.refresh();
    fail = true;
    await s.refresh();
    assert.equal(s.available(), 10);
  });
});

describe('receiveInto on a real spool', () => {
  let root: string;
  let spool: Spool;
  beforeEach(async () => {
    root = await makeTmpDir('cartero-recv-');
    spool = new Spool({ dir: path.join(root, 'spool'), maxMessages: 100, minFreeBytes: 0 });
    await spool.open();
  });
  afterEach(async () => removeTmpDir(root));

  const env = (id: string, size: number) =>
    testEnvelope(id, size, { tenant: 'default', arrivedAt: Date.now() });

  /** A stream of `n` chunks of awkward sizes carrying `msg`. */
  function chunked(msg: Buffer, sizes: number[]): Readable {
    const parts: Buffer[] = [];
    for (let off = 0, i = 0; off < msg.length; i++) {
      const n = sizes[i % sizes.length];
      parts.push(msg.subarray(off, off + n));
      off += n;
    }
    return Readable.from(parts);
  }

  it('stores the header hook output plus the rest byte-exact, whatever the chunking; reads it back checked', async () => {
    const head = 'Subject: s\r\nX-A: b\r\n\r\n';
    const bodyPart = Buffer.alloc(300_000);
    for (let i = 0; i < bodyPart.length; i++) bodyPart[i] = (i * 7) & 0xff;
    const msg = Buffer.concat([Buffer.from(head), bodyPart]);
    for (const sizes of [[1], [3, 17, 4096], [65536 * 3]]) {
      const id = newQueueId();
      const r = await receiveInto(chunked(msg, sizes), spool, id, await spool.reserve(400_000), 1e7, {
        head: (h) => {
          assert.equal(h.toString(), head, 'the hook sees exactly the header section');
          return Buffer.concat([Buffer.from('Received: test\r\n'), h]);
        },
      });
      const want = Buffer.concat([Buffer.from('Received: test\r\n'), msg]);
      assert.equal(r.size, want.length);
      assert.equal(r.eightBit, true);
      assert.equal(r.body, undefined, 'a 300 KB body is not kept in memory');
      const e = env(id, r.size);
      const { crc32 } = await r.writer.commit(e);
      const loaded = await spool.load(id);
      assert.equal(loaded.crc32, crc32);
      const body = await spool.readBody(loaded);
      const got = Buffer.isBuffer(body) ? body : Buffer.concat(await body.toArray());
      assert.ok(got.equals(want), `byte-exact with chunk sizes ${sizes.join(',')}`);
    }
    assert.deepEqual(await readdir(path.join(root, 'spool', 'tmp')), []);
  });

  it('keeps small messages in memory for the first attempt', async () => {
    const msg = Buffer.from('Subject: small\r\n\r\nhi\r\n');
    const r = await receiveInto(Readable.from([msg]), spool, newQueueId(), await spool.reserve(1000), 1e6, {
      head: (h) => h,
    });
    assert.deepEqual(r.body, msg);
    assert.ok(MAX_CACHED_BODY >= msg.length);
    await r.writer.abort();
  });

  it('refuses past the limit while streaming: 552, no file left, reservation released', async () => {
    const big = Buffer.alloc(5 * 1024 * 1024, 0x61);
    let pulled = 0;
    const src = Readable.from(
      (function* () {
        yield Buffer.from('Subject: big\r\n\r\n');
        for (let off = 0; off < big.length; off += 65536) {
          pulled += 65536;
          yield big.subarray(off, off + 65536);
        }
      })(),
    );
    await assert.rejects(
      receiveInto(src, spool, newQueueId(), await spool.reserve(1_000_000), 1_000_000, { head: (h) => h }),
      { responseCode: 552 },
    );
    assert.equal(pulled, big.length, 'the rest of DATA is read (the dialogue needs it) but not stored');
    assert.deepEqual(await readdir(path.join(root, 'spool', 'tmp')), []);
    assert.deepEqual(await readdir(path.join(root, 'spool', 'queue')), []);
    assert.equal(spool.reservations, 0);
  });

  it('a header hook refusal (loop) removes the partial file and gives its reply', async () => {
    const err = Object.assign(new Error('loop'), {});
    await assert.rejects(
      receiveInto(
        Readable.from([Buffer.from('Received: a\r\n\r\nx')]),
        spool,
        newQueueId(),
        await spool.reserve(100),
        1e6,
        {
          head: () => {
            throw err;
          },
        },
      ),
      { responseCode: 451 },
    );
    assert.equal(spool.reservations, 0);
  });

  it('a body damaged or cut after acceptance is never read back as a message', async () => {
    const msg = Buffer.concat([Buffer.from('Subject: d\r\n\r\n'), Buffer.alloc(400_000, 0x62)]);
    const small = Buffer.from('Subject: s\r\n\r\nsmall body\r\n');
    const ids: string[] = [];
    for (const m of [msg, small]) {
      const id = newQueueId();
      ids.push(id);
      const r = await receiveInto(Readable.from([m]), spool, id, await spool.reserve(m.length), 1e7, {
        head: (h) => h,
      });
      await r.writer.commit(env(id, r.size));
    }
    // flip one byte in each body (bit rot): the checksum catches it, buffered or streamed
    for (const id of ids) {
      const file = path.join(root, 'spool', 'queue', `${id}.msg`);
      const b = await readFile(file);
      b[20] ^= 0xff;
      await writeFile(file, b);
    }
    const big = await spool.load(ids[0]);
    // a streamed body is checked whole before its first byte would leave
    await assert.rejects(spool.readBody(big), SpoolCorruptError);
    await assert.rejects(spool.readBody(await spool.load(ids[1])), SpoolCorruptError);
    // a cut file is not even loadable
    await truncate(path.join(root, 'spool', 'queue', `${ids[1]}.msg`), 30);
    await assert.rejects(spool.load(ids[1]), SpoolCorruptError);
    // and a message loaded before the cut is refused at read time
    const s2 = { ...big, state: initialState(big.env, 0) };
    await truncate(path.join(root, 'spool', 'queue', `${ids[0]}.msg`), 1000);
    await assert.rejects(spool.readBody(s2), SpoolCorruptError);
  });
});

describe('scan of a damaged spool', () => {
  it('yields the good messages and moves truncated, empty, unparseable and foreign entries aside', async () => {
    const root = await makeTmpDir('cartero-scan-');
    try {
      const dir = path.join(root, 'spool');
      const s = new Spool({ dir, maxMessages: 100, minFreeBytes: 0 });
      await s.open();
      const good: string[] = [];
      for (let i = 0; i < 3; i++) {
        const id = newQueueId();
        const raw = Buffer.from(`Subject: ${i}\r\n\r\nbody ${i}\r\n`);
        await s.write(testEnvelope(id, raw.length), [raw]);
        good.push(id);
      }
      const q = path.join(dir, 'queue');
      const whole = await readFile(path.join(q, `${good[0]}.msg`));
      const bad = {
        truncated: newQueueId(),
        empty: newQueueId(),
        garbage: newQueueId(),
      };
      await writeFile(path.join(q, `${bad.truncated}.msg`), whole.subarray(0, whole.length - 5));
      await writeFile(path.join(q, `${bad.empty}.msg`), '');
      await writeFile(path.join(q, `${bad.garbage}.msg`), 'hello\nCSPOOL2 1 2 zz\n');
      await writeFile(path.join(q, 'README'), 'not ours');
      const s2 = new Spool({ dir, maxMessages: 100, minFreeBytes: 0 });
      await s2.open();
      const seen: string[] = [];
      const corrupt: string[] = [];
      for await (const batch of s2.scan((c) => corrupt.push(`${c.file}: ${c.reason}`)))
        for (const e of batch) seen.push(e.id);
      assert.deepEqual(seen.sort(), good.sort());
      assert.equal(corrupt.length, 4, corrupt.join('\n'));
      assert.deepEqual(
        (await readdir(path.join(dir, 'corrupt'))).sort(),
        [`${bad.truncated}.msg`, `${bad.empty}.msg`, `${bad.garbage}.msg`, 'README'].sort(),
      );
      assert.deepEqual((await readdir(q)).sort(), good.map((id) => `${id}.msg`).sort());
      assert.equal(s2.size, 3);
    } finally {
      await removeTmpDir(root);
    }
  });
});

describe('scan while mail arrives', () => {
  it('counts a message written after open() once, whether or not the scan also lists it', async () => {
    await withSpool('cartero-scan-race-', async (s) => {
      const write = async () => {
        const raw = Buffer.from('Subject: r\r\n\r\nx\r\n');
        const id = newQueueId();
        await s.write(testEnvelope(id, raw.length), [raw]);
        return id;
      };
      const before = await write(); // after open(), before the scan starts (the relay listens first)
      const it = s.scan(() => undefined)[Symbol.asyncIterator]();
      const first = it.next();
      const during = await write();
      const seen: string[] = [];
      for (let r = await first; !r.done; r = await it.next()) for (const e of r.value) seen.push(e.id);
      assert.equal(
        s.size,
        2,
        `two messages, counted once each (the scan listed ${seen.join(', ') || 'none'})`,
      );
      assert.ok(!seen.includes(before) && !seen.includes(during), 'the scan does not hand them over again');
    });
  });
});

describe('a client that goes away in the middle of DATA', () => {
  it('leaves no file and no reservation behind, whether the stream errors or just closes', async () => {
    await withSpool('cartero-gone-', async (s, root) => {
      for (const withError of [true, false]) {
        const src = new Readable({ read() {} });
        const p = receiveInto(src, s, newQueueId(), await s.reserve(1_000_000), 1e7, { head: (h) => h });
        src.push(Buffer.from('Subject: gone\r\n\r\n'));
        src.push(Buffer.alloc(200_000, 0x61)); // past the first write: a file exists in tmp/
        await waitFor(async () => (await readdir(path.join(root, 'spool', 'tmp'))).length === 1, {
          timeoutMs: 5000,
          what: 'the partial file in tmp/',
        });
        src.destroy(withError ? Object.assign(new Error('gone'), { code: 'ECONNECTION' }) : undefined);
        await assert.rejects(p);
        assert.equal(s.reservations, 0, 'reservation released');
        assert.deepEqual(await readdir(path.join(root, 'spool', 'tmp')), [], 'partial file removed');
      }
    });
  });
});
