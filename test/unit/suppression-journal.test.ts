/** The suppression journal's line format and replay scan (suppression-journal.ts), without the store. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { open, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  changeLine,
  entryLine,
  headerLine,
  MAX_REASON,
  oneLine,
  parseChange,
  scanJournal,
  type Change,
  type Suppression,
} from '../../relay/src/suppression-journal.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

const entry: Suppression = {
  tenant: 'acme',
  address: 'a@example.com',
  reason: '550 no such user',
  source: 'bounce',
  createdAt: 1000,
  expiresAt: 2000,
};

describe('suppression journal format', () => {
  it('reads back the lines it writes', () => {
    const add: Change = { seq: 3, op: 'add', tenant: 'acme', address: entry.address, entry, at: 1000 };
    assert.deepEqual(parseChange(changeLine(add).trimEnd()), add);
    const rm: Change = {
      seq: 4,
      op: 'remove',
      tenant: 'acme',
      address: entry.address,
      source: 'admin',
      at: 5,
    };
    assert.deepEqual(parseChange(changeLine(rm).trimEnd()), rm);
    assert.deepEqual(parseChange(headerLine(7, 99).trimEnd()), { header: 7 });
    assert.deepEqual(parseChange(entryLine(entry, 9).trimEnd()), {
      seq: 9,
      op: 'add',
      tenant: 'acme',
      address: entry.address,
      entry,
      at: entry.createdAt,
    });
  });

  it('refuses lines that are not a change', () => {
    for (const bad of [
      '',
      'not json',
      'null',
      '42',
      '{"seq":1,"op":"add","tenant":"t","address":"a"}', // add without an entry
      '{"seq":1,"op":"add","tenant":"t","address":"a","entry":{"tenant":"t"}}',
      '{"seq":"1","op":"remove","tenant":"t","address":"a"}',
      '{"seq":1,"op":"rename","tenant":"t","address":"a"}',
      '{"v":1,"lastSeq":3,"op":"add"}',
      '{"seq":1,"op":"remove","tenant":"t","address":"a"', // torn
    ])
      assert.equal(parseChange(bad), undefined, bad);
  });

  it('stores a reason as one bounded line', () => {
    assert.equal(oneLine('  550 no\r\n  such\tuser \n'), '550 no such user');
    const long = oneLine('x'.repeat(MAX_REASON + 10));
    assert.equal(long.length, MAX_REASON);
    assert.ok(long.endsWith('…'));
    assert.equal(oneLine('y'.repeat(MAX_REASON)), 'y'.repeat(MAX_REASON));
  });
});

describe('scanJournal', () => {
  async function scan(text: string) {
    const dir = await makeTmpDir('cartero-sjournal-');
    try {
      const file = path.join(dir, 'j.log');
      await writeFile(file, text);
      const fh = await open(file, 'r');
      try {
        const seen: [number, boolean][] = [];
        const r = await scanJournal(fh, (c, after) => seen.push([c.seq, after]));
        return { ...r, seen };
      } finally {
        await fh.close();
      }
    } finally {
      await removeTmpDir(dir);
    }
  }
  const add = (seq: number) =>
    changeLine({
      seq,
      op: 'add',
      tenant: 'acme',
      address: `${seq}@x`,
      entry: { ...entry, address: `${seq}@x` },
      at: 1,
    });

  it('reports the header, the changes after it, and where the good lines end', async () => {
    const text = headerLine(2, 0) + add(1) + add(2) + '\n' + add(3);
    const r = await scan(text);
    assert.deepEqual(r.seen, [
      [1, false],
      [2, false],
      [3, true],
    ]);
    assert.equal(r.header, 2);
    assert.equal(r.maxSeq, 3);
    assert.equal(r.lines, 3);
    assert.equal(r.corruptLines, 0);
    assert.equal(r.good, Buffer.byteLength(text));
    assert.equal(r.size, r.good);
  });

  it('counts unreadable lines in the middle, and leaves a torn tail beyond `good`', async () => {
    const head = add(1) + 'garbage\n' + headerLine(5, 0) + add(2);
    const r = await scan(head + '{"seq":3,"op"');
    assert.deepEqual(
      r.seen.map(([s]) => s),
      [1, 2],
    );
    assert.equal(r.header, 0, 'a header after the first line is not one');
    assert.equal(r.corruptLines, 2, 'the garbage line and the misplaced header');
    assert.equal(r.good, Buffer.byteLength(head));
    assert.equal(r.size, Buffer.byteLength(head) + '{"seq":3,"op"'.length);
  });

  it('reads a journal larger than one read chunk', async () => {
    const lines: string[] = [];
    for (let i = 1; i <= 9000; i++) lines.push(add(i));
    const text = lines.join('');
    assert.ok(text.length > 1 << 20);
    const r = await scan(text);
    assert.equal(r.lines, 9000);
    assert.equal(r.maxSeq, 9000);
    assert.equal(r.good, Buffer.byteLength(text));
  });
});
