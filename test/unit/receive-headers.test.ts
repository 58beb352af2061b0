/**
 * Header line and header section limits while DATA streams: the HeaderScanner on its own (limits at the
 * octet, lines and CRLFs split across chunks, bare LF), then receiveInto on a real spool (refusal with
 * 552 5.6.0, DATA read to its end, nothing left behind, memory bounded whatever the header size).
 */
import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import {
  DEFAULT_HEADER_LIMITS,
  HeaderScanner,
  MAX_HEAD,
  receiveInto,
  type HeaderLimits,
} from '../../relay/src/receive.js';
import { Spool, newQueueId } from '../../relay/src/spool/disk.js';
import { SmtpReplyError } from '../../relay/src/errors.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

const LINE_TOO_LONG = { code: 'ERR_HEADER_LINE_TOO_LONG', responseCode: 552, enhanced: '5.6.0' };
const HEADER_TOO_BIG = { code: 'ERR_HEADER_TOO_BIG', responseCode: 552, enhanced: '5.6.0' };

/** Feeds `parts` to a fresh scanner; where the header section ends (undefined: not yet). */
function scan(parts: (string | Buffer)[], limits: Partial<HeaderLimits> = {}): number | undefined {
  const s = new HeaderScanner({ ...DEFAULT_HEADER_LIMITS, ...limits });
  for (const p of parts) s.push(Buffer.from(p));
  return s.end;
}

/** A header field line of exactly `n` octets (without its line ending). */
function field(n: number, name = 'X-Long'): string {
  return `${name}: ${'a'.repeat(n - name.length - 2)}`;
}

/** Header field lines (CRLF included) of `total` octets in all. */
function fields(total: number): string {
  const out: string[] = [];
  for (let left = total, i = 0; left > 0; i++) {
    const n = left - 500 >= 10 || left <= 500 ? Math.min(left, 500) : left - 10;
    out.push(`${field(n - 2, `X-${i % 10}`)}\r\n`);
    left -= n;
  }
  return out.join('');
}

describe('HeaderScanner', () => {
  it('ends the header section after its empty line: CRLF, bare LF, mixed, at the very start', () => {
    assert.equal(scan(['A: b\r\n\r\nbody']), 8);
    assert.equal(scan(['A: b\n\nbody']), 6);
    assert.equal(scan(['A: b\r\nC: d\n\r\nbody\r\n\r\n']), 13);
    assert.equal(scan(['\r\nbody']), 2, 'a message without header fields');
    assert.equal(scan(['\nbody']), 1);
    assert.equal(scan(['A: b\r\nC: d\r\n']), undefined, 'all header so far');
    assert.equal(scan(['A: b\r\n', '\r', '\nbody']), 8, 'the empty CRLF split across chunks');
    assert.equal(scan(['A: b\r', '\n\r\n']), 8);
    assert.equal(scan(['A', ': b\r\n\tfolded\r\n \r\n\r\n']), 20, 'continuation lines, one only white space');
  });

  it('ends it, as Postfix does, at the first line that is not a header field: that line is body', () => {
    assert.equal(scan(['A: b\r\nnot a header\r\n']), 6, 'no colon');
    assert.equal(scan(['A: b\r\nNo-Colon\r\n']), 6);
    assert.equal(scan(['A: b\r\n', 'X-Split', '-Name', ' and more\r\n']), 6, 'decided chunks later');
    assert.equal(scan(['A: b\r\n:colon first\r\n']), 6);
    assert.equal(scan(['A: b\r\n\r body\r\n']), 6, 'a CR that is not an empty line');
    assert.equal(scan(['From sender@x.test Mon Jan 1 00:00:00 2024\r\nA: b\r\n']), 0, 'an mbox From line');
    assert.equal(scan([' leading space\r\n']), 0, 'nothing to continue');
    assert.equal(scan([`${'x'.repeat(5000)}\r\n`]), 0, 'a long line without a colon is body, not refused');
    assert.equal(scan(['Name \t: value\r\n\r\n']), 17, 'white space before the colon (obsolete syntax)');
    assert.equal(scan(['Name x: value\r\n']), 0);
  });

  it('gives the same answer fed one byte at a time', () => {
    const msg = Buffer.from(`${field(998)}\r\nB: c\n\tfolded\r\n\r\n${'x'.repeat(5000)}\r\n`);
    const s = new HeaderScanner(DEFAULT_HEADER_LIMITS);
    for (let i = 0; i < msg.length; i++) s.push(msg.subarray(i, i + 1));
    assert.equal(s.end, msg.indexOf('\r\n\r\n') + 4);
    assert.equal(
      s.size,
      msg.indexOf('\r\n\r\n') + 2,
      'the header lines with their CRLFs, not the empty line',
    );
  });

  it('accepts a line of exactly maxHeaderLine octets and refuses one more, CRLF or bare LF', () => {
    for (const eol of ['\r\n', '\n']) {
      assert.equal(scan([`${field(998)}${eol}${eol}`]), 998 + 2 * eol.length);
      assert.throws(() => scan([`${field(999)}${eol}${eol}`]), LINE_TOO_LONG);
      assert.equal(scan([`${field(200)}${eol}${eol}`], { maxHeaderLine: 200 }), 200 + 2 * eol.length);
      assert.throws(() => scan([`${field(201)}${eol}`], { maxHeaderLine: 200 }), LINE_TOO_LONG);
      assert.throws(() => scan([`A: b${eol}\t${'c'.repeat(998)}${eol}`]), LINE_TOO_LONG, 'a continuation');
    }
    assert.throws(
      () => scan([`${field(999)}\r\n`]),
      (e: SmtpReplyError) => e.message === '5.6.0 Header line too long (at most 998 octets)',
    );
    // a field name alone can make the line too long, once its colon shows it is a field
    assert.throws(() => scan([`X-${'n'.repeat(1200)}`, ': v\r\n']), LINE_TOO_LONG);
  });

  it('counts a line split across chunks as one, and refuses it before its end arrives', () => {
    const line = field(998);
    assert.equal(scan([line.slice(0, 500), line.slice(500), '\r\n\r\n']), 1002);
    const long = field(999);
    assert.throws(() => scan([long.slice(0, 500), long.slice(500), '\r\n']), LINE_TOO_LONG);
    // no line ending at all: refused as soon as the octets pass the limit
    const s = new HeaderScanner(DEFAULT_HEADER_LIMITS);
    s.push(Buffer.from(long.slice(0, 998)));
    assert.throws(() => s.push(Buffer.from('a')), LINE_TOO_LONG);
  });

  it('does not count the CR of a CRLF split across chunks, but counts a CR that is not followed by LF', () => {
    const line = field(998);
    assert.equal(scan([`${line}\r`, '\n\r\n']), 1002, 'CR | LF');
    assert.equal(scan([line, '\r', '\n', '\r\n']), 1002);
    assert.throws(() => scan([`${line}\r`, 'x\r\n']), LINE_TOO_LONG, 'a bare CR is part of the line');
    assert.throws(() => scan([`${field(997)}\r`, 'x\r\n']), LINE_TOO_LONG, '997 + CR + x: 999 octets');
    assert.equal(scan([`${field(996)}\r`, 'x\r\n\r\n']), 1002, '996 + CR + x: 998 octets');
  });

  it('limits each physical line of a folded field, not the field', () => {
    const folded = [field(900, 'X-Folded'), ...Array.from({ length: 5 }, () => `\t${'b'.repeat(997)}`)].join(
      '\r\n',
    );
    assert.equal(scan([`${folded}\r\n\r\n`]), folded.length + 4);
  });

  it('does not look at the body: its lines may be any length', () => {
    const s = new HeaderScanner({ maxHeaderLine: 78, maxHeaderSize: 1024 });
    s.push(Buffer.from('Subject: x\r\n\r\n'));
    assert.equal(s.end, 14);
    s.push(Buffer.from(`${'y'.repeat(100_000)}: z\r\n`));
    assert.ok(s.done);
  });

  it('accepts a header section of exactly maxHeaderSize octets and refuses one more', () => {
    const exact = fields(4096);
    assert.equal(exact.length, 4096);
    assert.equal(scan([exact, '\r\nbody'], { maxHeaderSize: 4096 }), 4098);
    assert.throws(() => scan([fields(4098), '\r\n'], { maxHeaderSize: 4096 }), HEADER_TOO_BIG);
    // refused while the last line still streams in, before it ends
    assert.throws(() => scan([exact, 'Y: '], { maxHeaderSize: 4096 }), HEADER_TOO_BIG);
    assert.throws(
      () => scan([fields(5000)], { maxHeaderSize: 4096 }),
      (e: SmtpReplyError) => e.message === '5.6.0 Header section too big (at most 4096 bytes)',
    );
  });
});

describe('receiveInto with header limits', () => {
  let root: string;
  let spool: Spool;
  beforeEach(async () => {
    root = await makeTmpDir('cartero-recv-head-');
    spool = new Spool({ dir: path.join(root, 'spool'), maxMessages: 100, minFreeBytes: 0 });
    await spool.open();
  });
  afterEach(async () => removeTmpDir(root));

  const tmpFiles = () => readdir(path.join(root, 'spool', 'tmp'));
  async function tmpBytes(): Promise<number> {
    let n = 0;
    for (const f of await tmpFiles()) n += (await stat(path.join(root, 'spool', 'tmp', f))).size;
    return n;
  }

  it('refuses an over-long header line with 552 5.6.0, reads DATA to its end and leaves nothing', async () => {
    let pulled = 0;
    const parts = [
      'Subject: x\r\nX-Long: ',
      'a'.repeat(600),
      'a'.repeat(600),
      '\r\n\r\n',
      'body\r\n'.repeat(1000),
    ];
    const src = Readable.from(
      (function* () {
        for (const p of parts) {
          pulled++;
          yield Buffer.from(p);
        }
      })(),
    );
    let hooked = false;
    await assert.rejects(
      receiveInto(src, spool, newQueueId(), await spool.reserve(100_000), 1e6, {
        head: (h) => ((hooked = true), h),
      }),
      LINE_TOO_LONG,
    );
    assert.equal(pulled, parts.length, 'the rest of DATA was read');
    assert.equal(hooked, false, 'refused before the header section was complete');
    assert.deepEqual(await tmpFiles(), []);
    assert.deepEqual(await readdir(path.join(root, 'spool', 'queue')), []);
    assert.equal(spool.reservations, 0);
  });

  it('accepts a line at the limit and body lines of any length, stored byte-exact', async () => {
    const msg = Buffer.from(`${field(300)}\r\nSubject: ok\r\n\r\n${'z'.repeat(10_000)}\r\n`);
    const r = await receiveInto(Readable.from([msg]), spool, newQueueId(), await spool.reserve(20_000), 1e6, {
      head: (h) => h,
      headerLimits: { maxHeaderLine: 300, maxHeaderSize: 1024 },
    });
    assert.deepEqual(r.body, msg);
    await r.writer.abort();
  });

  it('refuses a 2 MiB header section at 1 MiB: past MAX_HEAD it goes to disk, not to memory', async () => {
    const line = Buffer.from(`${field(998, 'X-Filler')}\r\n`);
    const chunk = Buffer.concat(Array.from({ length: 64 }, () => line)); // 64 000 bytes, whole lines
    let pulled = 0;
    let peakOnDisk = 0;
    const src = Readable.from(
      (async function* () {
        yield Buffer.from('Subject: big header\r\n');
        while (pulled < 2 * 1024 * 1024) {
          peakOnDisk = Math.max(peakOnDisk, await tmpBytes());
          pulled += chunk.length;
          yield Buffer.from(chunk); // a fresh buffer each time, as from a socket
        }
        yield Buffer.from('\r\nbody\r\n');
      })(),
    );
    let seen = 0;
    await assert.rejects(
      receiveInto(src, spool, newQueueId(), await spool.reserve(4 * 1024 * 1024), 1e7, {
        head: (h) => {
          seen = h.length;
          return h;
        },
      }),
      HEADER_TOO_BIG,
    );
    assert.ok(pulled >= 2 * 1024 * 1024, 'DATA read to its end');
    assert.ok(
      seen >= MAX_HEAD && seen < MAX_HEAD + chunk.length,
      `the hook saw the first ${seen} bytes only`,
    );
    assert.ok(peakOnDisk > 512 * 1024, `the header past MAX_HEAD streamed to disk (${peakOnDisk} bytes)`);
    assert.ok(
      peakOnDisk <= DEFAULT_HEADER_LIMITS.maxHeaderSize + 2 * chunk.length,
      `writing stopped at the limit (${peakOnDisk} bytes)`,
    );
    assert.deepEqual(await tmpFiles(), []);
    assert.equal(spool.reservations, 0);
  });

  it('does not hold a 15 MiB header section (16 MiB limit): a few MiB of buffers live at most', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const line = Buffer.from(`${field(998, 'X-Filler')}\r\n`);
    const chunk = Buffer.concat(Array.from({ length: 64 }, () => line));
    const total = 15 * 1024 * 1024;
    gc();
    const base = process.memoryUsage().arrayBuffers;
    let peak = 0;
    let n = 0;
    const src = Readable.from(
      (async function* () {
        yield Buffer.from('Subject: huge header\r\n');
        for (let sent = 0; sent < total; sent += chunk.length) {
          if (++n % 16 === 0) {
            gc();
            peak = Math.max(peak, process.memoryUsage().arrayBuffers - base);
          }
          yield Buffer.from(chunk);
        }
        yield Buffer.from('\r\nbody\r\n');
      })(),
      { objectMode: false, highWaterMark: 64 * 1024 }, // read ahead like a socket, not 16 chunks
    );
    const r = await receiveInto(src, spool, newQueueId(), await spool.reserve(total + 100_000), total * 2, {
      head: (h) => h,
      headerLimits: { maxHeaderLine: 998, maxHeaderSize: 16 * 1024 * 1024 },
    });
    assert.ok(r.size > total, 'accepted whole');
    // what is held is MAX_HEAD at most, plus a chunk or two in the writer and the source; the measure is
    // coarse (it swings by about 2 MiB between samples), a receiver holding the header would show 15 MiB
    assert.ok(peak < 6 * 1024 * 1024, `${peak} bytes of buffers live while streaming`);
    await r.writer.abort();
  });
});
