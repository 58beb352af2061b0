/** Reading one queue file (relay/src/spool/reader.ts) from hand-made files: envelope, body, CRC checks. */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { crc32 } from 'node:zlib';
import { encodeTrailer, V1_MAGIC } from '../../relay/src/spool/format.js';
import { crcChecked, readBody, readEnvelope, readHead } from '../../relay/src/spool/reader.js';
import { MAX_BUFFERED_BODY, SpoolCorruptError, type Envelope } from '../../relay/src/spool/types.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

function envelope(id: string, size: number): Envelope {
  return {
    v: 1,
    id,
    tenant: 'acme',
    pool: null,
    arrivedAt: 1,
    from: 'a@example.com',
    rcpts: [{ address: 'b@example.org' }],
    dsn: {},
    size,
    eightBit: false,
    smtpUtf8: false,
    origin: 'smtp',
    client: { address: '127.0.0.1', helo: 'h', listener: 'submission' },
  } as Envelope;
}

/** A v2 queue file: body, envelope JSON, trailer (`crc` overrides the body's checksum). */
function v2(id: string, body: Buffer, crc = crc32(body)): Buffer {
  const json = Buffer.from(JSON.stringify(envelope(id, body.length)));
  return Buffer.concat([body, json, encodeTrailer(body.length, json.length, crc)]);
}

async function collect(s: Buffer | Readable): Promise<Buffer> {
  if (Buffer.isBuffer(s)) return s;
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

describe('spool reader', () => {
  let dir: string;
  before(async () => (dir = await makeTmpDir('cartero-reader-')));
  after(() => removeTmpDir(dir));
  const file = (name: string) => path.join(dir, name);

  it('reads a v2 file: envelope from the trailer, body checked against its CRC', async () => {
    const body = Buffer.from('Subject: hi\r\n\r\nhello\r\n');
    await writeFile(file('a.msg'), v2('a', body));
    const r = await readEnvelope(file('a.msg'), 'a');
    assert.equal(r.env.id, 'a');
    assert.equal(r.bodyOffset, 0);
    assert.equal(r.crc32, crc32(body) >>> 0);
    const msg = { env: r.env, state: undefined as never, bodyOffset: r.bodyOffset, crc32: r.crc32 };
    assert.deepEqual(await readBody(file('a.msg'), msg), body);
    assert.deepEqual(await readHead(file('a.msg'), msg, 7), body.subarray(0, 7));
  });

  it('reads a v1 file (header first, no checksum)', async () => {
    const body = Buffer.from('old message\r\n');
    const json = JSON.stringify(envelope('b', body.length));
    await writeFile(
      file('b.msg'),
      Buffer.concat([Buffer.from(`${V1_MAGIC}${json.length}\n${json}\n`), body]),
    );
    const r = await readEnvelope(file('b.msg'), 'b');
    assert.equal(r.crc32, undefined);
    assert.deepEqual(
      await readBody(file('b.msg'), { env: r.env, state: undefined as never, bodyOffset: r.bodyOffset }),
      body,
    );
  });

  it('refuses empty, truncated and misnamed files as corrupt', async () => {
    await writeFile(file('empty.msg'), '');
    await assert.rejects(readEnvelope(file('empty.msg'), 'empty'), SpoolCorruptError);
    const whole = v2('c', Buffer.from('body'));
    await writeFile(file('c.msg'), whole.subarray(0, whole.length - 3));
    await assert.rejects(readEnvelope(file('c.msg'), 'c'), /no trailer/);
    await writeFile(file('d.msg'), v2('other', Buffer.from('body')));
    await assert.rejects(readEnvelope(file('d.msg'), 'd'), /does not match the file name/);
  });

  it('throws on a damaged body, buffered or streamed, before handing any of it out', async () => {
    for (const size of [100, MAX_BUFFERED_BODY + 1000]) {
      const body = Buffer.alloc(size, 'x');
      await writeFile(file('e.msg'), v2('e', body, crc32(body) ^ 1));
      const r = await readEnvelope(file('e.msg'), 'e');
      const msg = { env: r.env, state: undefined as never, bodyOffset: r.bodyOffset, crc32: r.crc32 };
      await assert.rejects(readBody(file('e.msg'), msg), /checksum does not match/, `size ${size}`);
    }
  });

  it('streams a large body whole when its checksum matches', async () => {
    const body = Buffer.alloc(MAX_BUFFERED_BODY + 70_000);
    for (let i = 0; i < body.length; i++) body[i] = i % 251;
    await writeFile(file('f.msg'), v2('f', body));
    const r = await readEnvelope(file('f.msg'), 'f');
    const s = await readBody(file('f.msg'), {
      env: r.env,
      state: undefined as never,
      bodyOffset: 0,
      crc32: r.crc32,
    });
    assert.ok(!Buffer.isBuffer(s));
    assert.deepEqual(await collect(s), body);
  });
});

describe('crcChecked', () => {
  const chunks = [Buffer.from('abc'), Buffer.from('def'), Buffer.from('gh')];
  const all = Buffer.concat(chunks);

  it('passes a matching body through unchanged', async () => {
    const out: Buffer[] = [];
    const t = crcChecked('x', all.length, crc32(all) >>> 0);
    t.on('data', (c: Buffer) => out.push(c));
    await pipeline(Readable.from(chunks), t);
    assert.deepEqual(Buffer.concat(out), all);
  });

  it('holds back the last chunk when the checksum or the length is wrong', async () => {
    for (const [size, crc, msg] of [
      [all.length, (crc32(all) ^ 1) >>> 0, /checksum/],
      [all.length + 1, crc32(all) >>> 0, /body is 8 bytes, the envelope says 9/],
    ] as const) {
      const out: Buffer[] = [];
      const t = crcChecked('x', size, crc);
      t.on('data', (c: Buffer) => out.push(c));
      await assert.rejects(pipeline(Readable.from(chunks), t), msg);
      assert.deepEqual(Buffer.concat(out), Buffer.from('abcdef'), 'the last chunk never left');
    }
  });
});
