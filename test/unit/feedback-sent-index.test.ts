/**
 * The sent-message index (relay/src/feedback/sent-entry.ts, sent-index.ts, ADR 020) on a real temporary
 * folder: the entry format, write and lookup, the tenant preference, day expiry, a torn tail, the
 * buffer's cap and the read budget.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  appendFile,
  mkdir,
  readFile,
  readdir,
  rename,
  stat,
  symlink,
  truncate,
  unlink,
  writeFile,
} from 'node:fs/promises';
import path from 'node:path';
import { Registry } from 'prom-client';
import {
  bucketOf,
  dayOf,
  decodeEntry,
  encodeEntry,
  entryOf,
  expired,
  lookupDays,
  messageKey,
  MAX_RECIPIENTS,
} from '../../relay/src/feedback/sent-entry.js';
import { SentIndex, SentIndexMetrics } from '../../relay/src/feedback/sent-index.js';
import { createLogger } from '../../relay/src/log.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 11, 5, 12);
const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await removeTmpDir(d);
});

async function index(
  o: {
    bufferCap?: number;
    maxLookupBytes?: number;
    ttlDays?: number;
    space?: { room(bytes: number): boolean; wrote(bytes: number): void };
  } = {},
) {
  const dir = await makeTmpDir('cartero-sent-index-');
  dirs.push(dir);
  const registry = new Registry();
  const clock = { now: T0 };
  const idx = new SentIndex({
    dir: path.join(dir, 'feedback', 'sent'),
    ttlDays: () => o.ttlDays ?? 30,
    metrics: new SentIndexMetrics(registry),
    log: createLogger('silent'),
    now: () => clock.now,
    ...(o.bufferCap ? { bufferCap: o.bufferCap } : {}),
    ...(o.maxLookupBytes ? { maxLookupBytes: o.maxLookupBytes } : {}),
    ...(o.space ? { space: o.space } : {}),
  });
  const metric = async (name: string, labels = '') => {
    const line = (await registry.metrics()).split('\n').find((l) => l.startsWith(`${name}${labels} `));
    return line ? Number(line.split(' ')[1]) : 0;
  };
  return { idx, clock, metric, root: path.join(dir, 'feedback', 'sent') };
}
const msg = (id: string, tenant = 'acme', recipients = ['bob@dest.test']) => ({
  messageId: `<${id}>`,
  tenant,
  queueId: `Q-${tenant}-${id}`,
  recipients,
});

describe('sent-message entries', () => {
  it('normalizes a Message-ID: between < and >, lower case; refuses empty, spaced or too long ones', () => {
    assert.equal(messageKey(' <ABC.123@Mail.Example> '), 'abc.123@mail.example');
    assert.equal(messageKey('abc@x'), 'abc@x');
    assert.equal(messageKey('<a@b> (comment)'), 'a@b');
    for (const bad of [undefined, '', '<>', '<a b@c>', `<${'x'.repeat(999)}>`])
      assert.equal(messageKey(bad), undefined);
  });

  it('round-trips a line; a damaged or torn one is refused', () => {
    const e = entryOf({ messageId: '<A@b>', tenant: 't', queueId: 'Q', recipients: ['Bob@X.test'] }, T0)!;
    assert.deepEqual(e, {
      messageId: 'a@b',
      tenant: 't',
      queueId: 'Q',
      recipients: ['bob@x.test'],
      count: 1,
      day: '20261205',
    });
    const line = encodeEntry(e).toString().trimEnd();
    assert.deepEqual(decodeEntry(line, e.day), e);
    assert.equal(decodeEntry(line.slice(0, -3), e.day), undefined, 'torn');
    assert.equal(decodeEntry(line.replace('"Q"', '"R"'), e.day), undefined, 'damaged');
    assert.match(bucketOf('a@b'), /^[0-9a-f]{2}$/);
  });

  it('keeps the first 100 recipients and the count', () => {
    const many = Array.from({ length: 150 }, (_, i) => `r${i}@x.test`);
    const e = entryOf({ messageId: '<m@x>', tenant: 't', queueId: 'Q', recipients: many }, T0)!;
    assert.equal(e.recipients.length, MAX_RECIPIENTS);
    assert.equal(e.count, 150);
  });

  it('reads today and the TTL days before; older days expire', () => {
    assert.deepEqual(lookupDays(T0, 2), ['20261205', '20261204', '20261203']);
    assert.equal(dayOf(T0), '20261205');
    assert.ok(expired('20261102', T0, 30));
    assert.ok(!expired('20261105', T0, 30));
    assert.ok(!expired('lost+found', T0, 30));
  });
});

describe('the sent-message index', () => {
  it('writes in one append per bucket and finds a message, preferring the asked tenant', async () => {
    const { idx, metric, root } = await index();
    idx.record(msg('one@acme.test'));
    idx.record(msg('shared@x.test', 'globex', ['eve@dest.test']));
    idx.record(msg('shared@x.test', 'acme', ['carol@dest.test', 'dan@dest.test']));
    idx.record({ tenant: 'acme', queueId: 'Q', recipients: ['a@b.test'] }); // no Message-ID: nothing
    await idx.flush();
    assert.equal(await metric('cartero_feedback_sent_index_written_total'), 3);
    const hit = await idx.lookup('one@acme.test', 'acme');
    assert.equal(hit.result, 'hit');
    assert.deepEqual(hit.result === 'hit' && hit.entry.recipients, ['bob@dest.test']);
    const shared = await idx.lookup('shared@x.test', 'acme');
    assert.equal(shared.result === 'hit' && shared.entry.tenant, 'acme');
    const other = await idx.lookup('one@acme.test', 'globex');
    assert.equal(
      other.result === 'hit' && other.entry.tenant,
      'acme',
      'another tenant only when none of its own',
    );
    assert.deepEqual(await idx.lookup('nope@acme.test', 'acme'), { result: 'miss' });
    assert.equal(await metric('cartero_feedback_sent_lookups_total', '{result="hit"}'), 3);
    assert.equal(await metric('cartero_feedback_sent_lookups_total', '{result="miss"}'), 1);
    assert.deepEqual(await readdir(root), ['20261205']);
  });

  it('finds a message recorded a moment ago (the buffer is written first)', async () => {
    const { idx } = await index();
    idx.record(msg('fresh@acme.test'));
    assert.equal((await idx.lookup('fresh@acme.test', 'acme')).result, 'hit');
  });

  it('finds yesterday’s message; a day beyond the TTL is neither read nor kept', async () => {
    const { idx, clock, root } = await index({ ttlDays: 2 });
    idx.record(msg('old@acme.test'));
    await idx.flush();
    clock.now = T0 + DAY;
    assert.equal((await idx.lookup('old@acme.test', 'acme')).result, 'hit');
    clock.now = T0 + 3 * DAY;
    assert.equal((await idx.lookup('old@acme.test', 'acme')).result, 'miss');
    idx.record(msg('new@acme.test'));
    await idx.flush();
    await idx.expire();
    assert.deepEqual(await readdir(root), ['20261208']);
  });

  it('skips a torn last line (kill -9 in a write) and starts the next append on a new line', async () => {
    const { idx, root } = await index();
    idx.record(msg('before@acme.test'));
    idx.record(msg('torn@acme.test'));
    await idx.flush();
    // both in one bucket only if they hash alike: tear the file holding `torn`
    const file = path.join(root, '20261205', `${bucketOf('torn@acme.test')}.log`);
    const size = (await stat(file)).size;
    await truncate(file, size - 5);
    const fresh = new SentIndex({
      dir: root,
      ttlDays: () => 30,
      metrics: new SentIndexMetrics(new Registry()),
      log: createLogger('silent'),
      now: () => T0,
    }); // a restarted relay: it has not seen the file yet
    assert.equal((await fresh.lookup('torn@acme.test', 'acme')).result, 'miss');
    assert.equal((await fresh.lookup('before@acme.test', 'acme')).result, 'hit');
    // an id in the same bucket as `torn`, appended after the torn line
    let n = 0;
    while (bucketOf(`after${n}@acme.test`) !== bucketOf('torn@acme.test')) n++;
    fresh.record(msg(`after${n}@acme.test`));
    await fresh.flush();
    assert.equal((await fresh.lookup(`after${n}@acme.test`, 'acme')).result, 'hit');
    const lines = (await readFile(file, 'utf8')).split('\n');
    assert.equal(
      lines.filter((l) => decodeEntry(l, '20261205')).length,
      lines.length - 2,
      'one torn, one empty',
    );
    await appendFile(file, 'garbage without a newline');
    assert.equal((await fresh.lookup(`after${n}@acme.test`, 'acme')).result, 'hit');
  });

  it('after a failed append (disk full), the next one checks the tail again and starts on a new line', async () => {
    const { idx, root, metric } = await index();
    const ids: string[] = [];
    for (let i = 0; ids.length < 3; i++)
      if (bucketOf(`full${i}@acme.test`) === bucketOf('full0@acme.test')) ids.push(`full${i}@acme.test`);
    const file = path.join(root, '20261205', `${bucketOf(ids[0])}.log`);
    idx.record(msg(ids[0]));
    await idx.flush();
    // the disk fills: the append fails with ENOSPC, after a part of its line reached the file
    await rename(file, `${file}.kept`);
    await symlink('/dev/full', file);
    idx.record(msg(ids[1]));
    await idx.flush();
    assert.equal(await metric('cartero_feedback_sent_index_dropped_total', '{reason="error"}'), 1);
    await unlink(file);
    await rename(`${file}.kept`, file);
    await appendFile(file, encodeEntry(entryOf(msg(ids[1]), T0)!).subarray(0, 30));
    // room again: the next entry is not glued to the torn line
    idx.record(msg(ids[2]));
    await idx.flush();
    assert.equal((await idx.lookup(ids[2], 'acme')).result, 'hit');
    assert.equal((await idx.lookup(ids[0], 'acme')).result, 'hit');
  });

  it('drops and counts what the full buffer cannot take', async () => {
    const { idx, metric } = await index({ bufferCap: 2 });
    for (const i of [1, 2, 3, 4]) idx.record(msg(`m${i}@acme.test`));
    assert.equal(await metric('cartero_feedback_sent_index_dropped_total', '{reason="full"}'), 2);
    assert.equal(await metric('cartero_feedback_sent_index_pending'), 2);
    await idx.flush();
    assert.equal(await metric('cartero_feedback_sent_index_written_total'), 2);
    assert.equal((await idx.lookup('m3@acme.test', 'acme')).result, 'miss');
  });

  it('never takes the room mail needs: without it, entries are dropped and counted; what is written is reported', async () => {
    const room = { left: 10_000, wrote: 0 };
    const space = {
      room: (n: number) => room.left - n >= 0,
      wrote: (n: number) => {
        room.left -= n;
        room.wrote += n;
      },
    };
    const { idx, metric, root } = await index({ space });
    idx.record(msg('fits@acme.test'));
    await idx.flush();
    assert.equal((await idx.lookup('fits@acme.test', 'acme')).result, 'hit');
    let onDisk = 0;
    for (const day of await readdir(root))
      for (const f of await readdir(path.join(root, day)))
        onDisk += (await stat(path.join(root, day, f))).size;
    assert.equal(room.wrote, onDisk, 'every byte written is reported to the accounting');
    room.left = 0; // mail's reserve reached
    idx.record(msg('no-room@acme.test'));
    await idx.flush();
    assert.equal(await metric('cartero_feedback_sent_index_dropped_total', '{reason="disk-full"}'), 1);
    assert.equal((await idx.lookup('no-room@acme.test', 'acme')).result, 'miss');
  });

  it('finds an entry whose non-ASCII recipient straddles two 64 KiB reads', async () => {
    const { idx, root } = await index();
    const e = entryOf(msg('utf8@acme.test', 'acme', ['jos\u00e9@dest.test']), T0)!;
    const line = encodeEntry(e);
    // the two bytes of the é fall on either side of the first read's end (64 KiB)
    const filler = 65535 - 1 - line.indexOf(Buffer.from('\u00e9'));
    await mkdir(path.join(root, '20261205'), { recursive: true });
    await writeFile(
      path.join(root, '20261205', `${bucketOf(e.messageId)}.log`),
      Buffer.concat([Buffer.from(`${'x'.repeat(filler)}\n`), line]),
    );
    const hit = await idx.lookup('utf8@acme.test', 'acme');
    assert.equal(hit.result, 'hit');
    assert.deepEqual(hit.result === 'hit' && hit.entry.recipients, ['jos\u00e9@dest.test']);
  });

  it('stops reading at the byte budget', async () => {
    const { idx } = await index({ maxLookupBytes: 100 });
    let n = 0;
    const target = bucketOf('needle@acme.test');
    for (let i = 0; n < 5; i++)
      if (bucketOf(`hay${i}@acme.test`) === target) {
        idx.record(msg(`hay${i}@acme.test`));
        n++;
      }
    idx.record(msg('needle@acme.test'));
    await idx.flush();
    assert.deepEqual(await idx.lookup('needle@acme.test', 'acme'), { result: 'truncated' });
  });
});
