/** SuppressionStore on a real temporary directory, with an injected clock and counted fsyncs. */
import { describe, it, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { FileHandle } from 'node:fs/promises';
import { JOURNAL, NEVER, SuppressionStore, type SyncKind } from '../../relay/src/suppression.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

const DAY = 86_400_000;
const T0 = 1_700_000_000_000;

describe('SuppressionStore', () => {
  let dir: string;
  const clock = { t: T0 };
  let syncs: Record<SyncKind, number>;
  let failJournal = false;
  const stores: SuppressionStore[] = [];

  function store(opts: { compactEvery?: number; keepChanges?: number } = {}): SuppressionStore {
    const s = new SuppressionStore({
      dir,
      now: () => clock.t,
      ...opts,
      sync: async (fh: FileHandle, kind: SyncKind) => {
        syncs[kind]++;
        if (kind === 'journal' && failJournal)
          throw Object.assign(new Error('EIO: injected'), { code: 'EIO' });
        await (kind === 'dir' ? fh.sync() : fh.datasync());
      },
    });
    stores.push(s);
    return s;
  }

  async function opened(opts: { compactEvery?: number; keepChanges?: number } = {}) {
    const s = store(opts);
    await s.open();
    return s;
  }

  const bounce = (tenant: string, address: string, ttlMs = 30 * DAY) => ({
    tenant,
    address,
    reason: '550 5.1.1 <x>: Recipient address rejected:\r\n user unknown',
    source: 'bounce' as const,
    ttlMs,
  });

  beforeEach(async () => {
    dir = await makeTmpDir('cartero-suppr-');
    clock.t = T0;
    syncs = { journal: 0, compact: 0, dir: 0 };
    failJournal = false;
  });
  afterEach(async () => {
    for (const s of stores.splice(0)) await s.close().catch(() => undefined);
    await removeTmpDir(dir);
  });

  it('adds and looks up case-insensitively, per tenant', async () => {
    const s = await opened();
    const c = await s.add(bounce('acme', 'Bob@Example.COM'));
    assert.equal(c.seq, 1);
    assert.equal(c.op, 'add');
    assert.equal(c.entry?.address, 'bob@example.com');
    assert.equal(c.entry?.reason, '550 5.1.1 <x>: Recipient address rejected: user unknown', 'one line');
    assert.equal(c.entry?.createdAt, T0);
    assert.equal(c.entry?.expiresAt, T0 + 30 * DAY);
    assert.equal(s.isSuppressed('acme', 'bob@example.com')?.source, 'bounce');
    assert.equal(s.isSuppressed('acme', 'BOB@EXAMPLE.COM')?.address, 'bob@example.com');
    assert.equal(s.isSuppressed('other', 'bob@example.com'), undefined, 'other tenant not affected');
    assert.equal(s.isSuppressed('acme', 'alice@example.com'), undefined);
    assert.equal(s.size, 1);
  });

  it('entries expire with the clock', async () => {
    const s = await opened();
    await s.add(bounce('acme', 'a@x.test', 1000));
    await s.add(bounce('acme', 'b@x.test', Infinity));
    clock.t += 999;
    assert.ok(s.isSuppressed('acme', 'a@x.test'));
    clock.t += 1;
    assert.equal(s.isSuppressed('acme', 'a@x.test'), undefined);
    assert.equal(s.isSuppressed('acme', 'b@x.test')?.expiresAt, NEVER);
    assert.equal(s.size, 1);
    await assert.rejects(s.add(bounce('acme', 'c@x.test', 0)), /ttlMs must be positive/);
  });

  it('is durable across reopen, and drops entries that expired meanwhile', async () => {
    const s = await opened();
    await s.add(bounce('acme', 'a@x.test', DAY));
    await s.add(bounce('acme', 'b@x.test', 10 * DAY));
    await s.add(bounce('beta', 'a@x.test', 10 * DAY));
    await s.remove('acme', 'B@x.test', 'admin');
    await s.add(bounce('acme', 'b@x.test', 10 * DAY)); // added again
    await s.close();
    clock.t += 2 * DAY;
    const r = await opened();
    assert.equal(r.isSuppressed('acme', 'a@x.test'), undefined, 'expired while closed');
    assert.ok(r.isSuppressed('acme', 'b@x.test'));
    assert.ok(r.isSuppressed('beta', 'a@x.test'));
    assert.equal(r.size, 2);
    const c = await r.add(bounce('acme', 'c@x.test'));
    assert.equal(c.seq, 6, 'seq continues after reopen');
  });

  it('removes', async () => {
    const s = await opened();
    await s.add(bounce('acme', 'a@x.test'));
    const c = await s.remove('acme', 'A@X.test', 'admin');
    assert.equal(c?.op, 'remove');
    assert.equal(c?.address, 'a@x.test');
    assert.equal(c?.source, 'admin');
    assert.equal(s.isSuppressed('acme', 'a@x.test'), undefined);
    assert.equal(await s.remove('acme', 'a@x.test'), undefined, 'nothing to remove: nothing written');
    assert.equal(s.size, 0);
    await s.close();
    const r = await opened();
    assert.equal(r.isSuppressed('acme', 'a@x.test'), undefined, 'the removal is durable');
  });

  it('a remove right after an unresolved add is not lost', async () => {
    const s = await opened();
    const added = s.add(bounce('acme', 'a@x.test'));
    const removed = s.remove('acme', 'a@x.test');
    await added;
    assert.equal((await removed)?.op, 'remove');
    assert.equal(s.isSuppressed('acme', 'a@x.test'), undefined);
  });

  it('ignores a torn last journal line and appends cleanly after it', async () => {
    const s = await opened();
    await s.add(bounce('acme', 'a@x.test'));
    await s.add(bounce('acme', 'b@x.test'));
    await s.close();
    const file = path.join(dir, JOURNAL);
    const whole = (await stat(file)).size;
    await appendFile(file, '{"seq":3,"op":"add","tenant":"acme","address":"c@x.te');
    const r = await opened();
    assert.equal(r.tornTail, true);
    assert.equal(r.corruptLines, 0);
    assert.equal(r.size, 2);
    assert.equal(r.isSuppressed('acme', 'c@x.test'), undefined);
    assert.equal((await stat(file)).size, whole, 'the torn tail was cut off');
    await r.add(bounce('acme', 'd@x.test'));
    await r.close();
    const again = await opened();
    assert.equal(again.corruptLines, 0);
    assert.equal(again.tornTail, false);
    assert.ok(again.isSuppressed('acme', 'd@x.test'));
    assert.equal(again.size, 3);
  });

  it('skips and counts an unreadable line in the middle', async () => {
    const s = await opened();
    await s.add(bounce('acme', 'a@x.test'));
    await s.close();
    await appendFile(path.join(dir, JOURNAL), 'garbage\n');
    const r = await opened();
    await r.add(bounce('acme', 'b@x.test'));
    await r.close();
    const again = await opened();
    assert.equal(again.corruptLines, 0, 'a bad last line counts as torn, and is cut off');
    assert.equal(again.size, 2);
    await again.close();
    const text = await readFile(path.join(dir, JOURNAL), 'utf8');
    const lines = text.trimEnd().split('\n');
    lines.splice(1, 0, '{"not":"a change"}');
    await writeFile(path.join(dir, JOURNAL), lines.join('\n') + '\n');
    const last = await opened();
    assert.equal(last.corruptLines, 1);
    assert.equal(last.size, 2);
  });

  it('compaction keeps the content and shrinks the file', async () => {
    const s = await opened({ compactEvery: 60 });
    const file = path.join(dir, JOURNAL);
    for (let i = 0; i < 10; i++) await s.add(bounce('acme', `keep${i}@x.test`, 10 * DAY));
    await s.add(bounce('acme', `soon@x.test`, 1000));
    for (let round = 0; round < 3; round++)
      for (let i = 0; i < 10; i++) await s.add(bounce('acme', `churn${i}@x.test`)); // replaced: dead lines
    for (let i = 0; i < 10; i++) await s.remove('acme', `churn${i}@x.test`);
    assert.equal(await s.remove('beta', 'nothing@x.test'), undefined, 'writes nothing');
    clock.t += 2000; // soon@ expired
    for (let i = 0; i < 8; i++) await s.add(bounce('beta', `b${i}@x.test`, 10 * DAY)); // 59 lines
    assert.equal(s.compactions, 0);
    const before = (await stat(file)).size;
    await s.add(bounce('beta', 'b8@x.test', 10 * DAY)); // line 60: compaction follows this batch
    await s.add(bounce('beta', 'c@x.test', 10 * DAY)); // written after the compaction
    assert.equal(s.compactions, 1);
    assert.equal(s.compactionError, undefined);
    assert.equal(syncs.compact, 1);
    const after = (await stat(file)).size;
    assert.ok(after < before / 2, `${after} < ${before} / 2`);
    assert.equal(s.size, 20);
    const fed = s.changesSince(0, 1000);
    assert.equal(fed.changes.length, 61, 'the feed in memory survives a compaction');
    assert.equal(fed.lastSeq, 61);
    await s.close();
    const r = await opened({ compactEvery: 60 });
    assert.equal(r.compactions, 0);
    assert.equal(r.size, 20);
    for (let i = 0; i < 10; i++) assert.ok(r.isSuppressed('acme', `keep${i}@x.test`));
    for (let i = 0; i < 9; i++) assert.ok(r.isSuppressed('beta', `b${i}@x.test`));
    assert.ok(r.isSuppressed('beta', 'c@x.test'));
    assert.equal(r.isSuppressed('acme', 'soon@x.test'), undefined);
    assert.equal(r.isSuppressed('acme', 'churn0@x.test'), undefined);
    assert.equal((await r.add(bounce('acme', 'z@x.test'))).seq, 62, 'seq survives compaction and reopen');
    assert.deepEqual(
      r.changesSince(60, 10).changes.map((c) => c.seq),
      [61, 62],
      'changes after the compaction are replayed into the feed',
    );
    assert.equal(r.changesSince(10, 10).reset, true, 'older history went with the compaction');
    assert.equal(r.changesSince(59, 10).reset, true);
  });

  it('compacts at open when the journal is mostly dead', async () => {
    const s = await opened({ compactEvery: 1000 });
    for (let i = 0; i < 30; i++) await s.add(bounce('acme', 'a@x.test'));
    await s.close();
    const file = path.join(dir, JOURNAL);
    const before = (await stat(file)).size;
    const r = await opened({ compactEvery: 20 });
    assert.equal(r.compactions, 1);
    assert.ok((await stat(file)).size < before / 10);
    assert.ok(r.isSuppressed('acme', 'a@x.test'));
  });

  it('changesSince pages with a cursor and asks for a reset when the cursor is too old', async () => {
    const s = await opened({ keepChanges: 10 });
    assert.deepEqual(s.changesSince(0, 5), { changes: [], lastSeq: 0 });
    for (let i = 0; i < 8; i++) await s.add(bounce('acme', `a${i}@x.test`));
    await s.remove('acme', 'a0@x.test');
    let page = s.changesSince(0, 5);
    assert.deepEqual(
      page.changes.map((c) => c.seq),
      [1, 2, 3, 4, 5],
    );
    assert.equal(page.lastSeq, 5);
    page = s.changesSince(page.lastSeq, 5);
    assert.deepEqual(
      page.changes.map((c) => [c.seq, c.op]),
      [
        [6, 'add'],
        [7, 'add'],
        [8, 'add'],
        [9, 'remove'],
      ],
    );
    assert.equal(page.lastSeq, 9);
    assert.deepEqual(s.changesSince(9, 5), { changes: [], lastSeq: 9 });
    assert.equal(s.changesSince(10, 5).reset, true, 'a cursor from the future (store wiped) resets');
    for (let i = 0; i < 20; i++) await s.add(bounce('beta', `b${i}@x.test`));
    const old = s.changesSince(3, 5);
    assert.equal(old.reset, true);
    assert.equal(old.lastSeq, 29);
    const recent = s.changesSince(25, 100);
    assert.deepEqual(
      recent.changes.map((c) => c.seq),
      [26, 27, 28, 29],
    );
  });

  it('lists with paging, per tenant or all, skipping expired entries', async () => {
    const s = await opened();
    for (const a of ['c', 'a', 'e', 'b', 'd']) await s.add(bounce('acme', `${a}@x.test`));
    await s.add(bounce('acme', 'gone@x.test', 10));
    for (const a of ['z', 'y']) await s.add(bounce('beta', `${a}@x.test`));
    await s.add(bounce('aaa', 'first@x.test'));
    clock.t += 10;
    const seen: string[] = [];
    let page = s.list({ tenant: 'acme', limit: 2 });
    for (;;) {
      seen.push(...page.items.map((i) => i.address));
      if (!page.next) break;
      page = s.list({ tenant: 'acme', after: page.next, limit: 2 });
    }
    assert.deepEqual(seen, ['a@x.test', 'b@x.test', 'c@x.test', 'd@x.test', 'e@x.test']);
    const all = s.list({ limit: 100 });
    assert.equal(all.next, undefined);
    assert.deepEqual(
      all.items.map((i) => `${i.tenant}/${i.address}`),
      [
        'aaa/first@x.test',
        'acme/a@x.test',
        'acme/b@x.test',
        'acme/c@x.test',
        'acme/d@x.test',
        'acme/e@x.test',
        'beta/y@x.test',
        'beta/z@x.test',
      ],
    );
    const exact = s.list({ tenant: 'beta', limit: 2 });
    assert.equal(exact.items.length, 2);
    assert.equal(exact.next, undefined, 'no empty last page');
    // A cursor stays valid across changes: it names a position, not an index.
    const p1 = s.list({ limit: 3 });
    await s.add(bounce('aaa', 'second@x.test'));
    await s.remove('acme', 'c@x.test');
    const p2 = s.list({ after: p1.next, limit: 3 });
    assert.deepEqual(
      p2.items.map((i) => i.address),
      ['d@x.test', 'e@x.test', 'y@x.test'],
    );
    assert.deepEqual(s.list({ tenant: 'nobody', limit: 5 }), { items: [] });
  });

  it('concurrent adds share fsyncs and all land', async () => {
    const s = await opened();
    const before = syncs.journal;
    const changes = await Promise.all(
      Array.from({ length: 200 }, (_, i) => s.add(bounce(i % 2 ? 'acme' : 'beta', `u${i}@x.test`))),
    );
    const used = syncs.journal - before;
    assert.ok(used <= 2, `200 concurrent adds used ${used} journal fsyncs`);
    assert.deepEqual(
      changes.map((c) => c.seq),
      Array.from({ length: 200 }, (_, i) => i + 1),
    );
    assert.equal(s.size, 200);
    // Adds queued while a sync runs share the next one.
    const first = s.add(bounce('acme', 'x@x.test'));
    await Promise.resolve();
    await Promise.resolve();
    const rest = Array.from({ length: 50 }, (_, i) => s.add(bounce('acme', `late${i}@x.test`)));
    const mark = syncs.journal;
    await Promise.all([first, ...rest]);
    assert.ok(syncs.journal - mark <= 2, `${syncs.journal - mark}`);
    await s.close();
    const r = await opened();
    assert.equal(r.size, 251);
  });

  it('a failed append rejects, is not applied, and leaves the journal clean', async () => {
    const s = await opened();
    await s.add(bounce('acme', 'a@x.test'));
    failJournal = true;
    await assert.rejects(s.add(bounce('acme', 'b@x.test')), /EIO: injected/);
    assert.equal(s.isSuppressed('acme', 'b@x.test'), undefined);
    failJournal = false;
    const c = await s.add(bounce('acme', 'c@x.test'));
    assert.equal(c.seq, 3, 'the failed seq is not reused');
    assert.deepEqual(
      s.changesSince(0, 10).changes.map((x) => x.seq),
      [1, 3],
    );
    await s.close();
    const r = await opened();
    assert.equal(r.corruptLines, 0);
    assert.equal(r.tornTail, false);
    assert.equal(r.size, 2);
    assert.equal(r.isSuppressed('acme', 'b@x.test'), undefined);
  });

  it('rejects after close', async () => {
    const s = await opened();
    const pending = s.add(bounce('acme', 'a@x.test'));
    await s.close();
    assert.equal((await pending).seq, 1, 'close waits for pending appends');
    await assert.rejects(s.add(bounce('acme', 'b@x.test')), /closed/);
  });
});
