/**
 * The event outbox (relay/src/events/outbox.ts) when the disk fills in the middle of a commit: write(2)
 * then writes only a part of the batch and returns its length without an error. The test runs itself
 * again as a child under `ulimit -f` (a file size limit gives the same short write) and checks that every
 * event of a commit that resolved can be read back.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { DeliveryEvent } from '../../relay/src/contract/events.js';
import { Outbox } from '../../relay/src/events/outbox.js';
import { EventMetrics } from '../../relay/src/events/metrics.js';
import { readBatch } from '../../relay/src/events/cursor.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

const CHILD = 'CARTERO_OUTBOX_SHORT_WRITE_DIR';
/** The child's file size limit, in KiB (ulimit -f). */
const LIMIT_KIB = 8;

const ev = (n: number): DeliveryEvent => ({
  id: `id-${n}`,
  type: 'delivered',
  at: '2026-12-05T00:00:00.000Z',
  tenant: 't',
  queueId: `q${n}`,
  recipient: `r${n}@x.test`,
  reply: { text: 'x'.repeat(100) },
});

/** In the child: commits of 5 events until past the limit; which commits resolved, what reads back. */
async function child(dir: string): Promise<void> {
  const box = new Outbox({
    dir,
    maxBytes: 1 << 30,
    flushIntervalMs: 5,
    maxBuffered: 1000,
    wanted: () => true,
    metrics: new EventMetrics(new Registry(), () => 0),
    log: pino({ level: 'silent' }),
    now: () => 0,
  });
  await box.open();
  const first = box.activeSegment;
  const stored: string[] = [];
  let failed = 0;
  for (let b = 0; b < 12; b++) {
    const batch = [0, 1, 2, 3, 4].map((i) => ev(b * 5 + i));
    try {
      await box.appendDurable(batch);
      stored.push(...batch.map((e) => e.id));
    } catch {
      failed++;
    }
  }
  const read: string[] = [];
  let at = { seq: first, offset: 0 };
  for (;;) {
    const r = await readBatch(box, at, 1000, () => true);
    read.push(...r.events.map((e) => e.id));
    if (!r.events.length && r.next.seq === at.seq && r.next.offset === at.offset) break;
    at = r.next;
  }
  await box.close();
  process.stdout.write(JSON.stringify({ stored, failed, read }));
}

if (process.env[CHILD]) await child(process.env[CHILD]);
else
  test('a commit the disk took only in part is not acknowledged; what was acknowledged reads back', async () => {
    const dir = await makeTmpDir();
    try {
      const out = execFileSync(
        'bash',
        ['-c', `ulimit -f ${LIMIT_KIB} && exec "$0" "$1"`, process.execPath, fileURLToPath(import.meta.url)],
        { env: { ...process.env, [CHILD]: dir }, encoding: 'utf8' },
      );
      const r = JSON.parse(out) as { stored: string[]; failed: number; read: string[] };
      assert.ok(r.failed >= 1, 'a commit crossed the limit');
      assert.ok(r.stored.length > 0);
      assert.deepEqual(r.read, r.stored, 'every event of a commit that resolved, in order, and no other');
    } finally {
      await removeTmpDir(dir);
    }
  });
