/**
 * kill -9 while the relay indexes a large spool at start: it listens before the index is done, and after a
 * second start every message in the spool is delivered, each at least once, with duplicates bounded by what
 * was in flight at the kill.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Spool, newQueueId } from '../../relay/src/spool/disk.js';
import { startRelay } from '../helpers/relay.js';
import { startTestMx } from '../helpers/testmx.js';
import { waitFor } from '../helpers/poll.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

const N = 20_000;
const DELIVERY = { concurrency: 20, perDestinationConcurrency: 20 };

test(`kill -9 during recovery of ${N} queued messages: nothing lost, duplicates bounded`, async (t) => {
  const root = await makeTmpDir('cartero-recovery-');
  const mx = await startTestMx();
  try {
    // the backlog, written the way the relay writes it
    const spool = new Spool({ dir: path.join(root, 'spool'), maxMessages: 10 * N, minFreeBytes: 0 });
    await spool.open();
    let next = 0;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (next < N) {
          const seq = next++;
          const raw = Buffer.from(
            `From: <app@sender.test>\r\nTo: <r${seq}@dest.test>\r\nX-Test-Seq: ${seq}\r\nSubject: ${seq}\r\n\r\nbody ${seq}\r\n`,
          );
          await spool.write(
            {
              v: 1,
              id: newQueueId(),
              tenant: 'default',
              pool: null,
              arrivedAt: Date.now(),
              from: 'app@sender.test',
              rcpts: [{ address: `r${seq}@dest.test` }],
              dsn: {},
              size: raw.length,
              eightBit: false,
              smtpUtf8: false,
              origin: 'smtp',
              client: { address: '127.0.0.1', helo: 'test', listener: 'smtp' },
            },
            [raw],
          );
        }
      }),
    );
    const config = {
      hostname: 'relay.recovery.test',
      trustedNetworks: ['127.0.0.0/8'],
      delivery: DELIVERY,
      queue: { retry: { initial: '1s', max: '2s' } },
      shaping: { backoff: { initial: '1s', max: '2s' } },
      routing: {
        default: { type: 'smarthost', smarthost: { host: '127.0.0.1', port: mx.port, tls: 'none' } },
      },
    };
    const first = await startRelay({ config, dir: root });
    const recoveredEarly = first.logs.some((l) => l.event === 'queue.recovered');
    first.kill('SIGKILL');
    await first.exited;
    t.diagnostic(
      `killed ${recoveredEarly ? 'after' : 'during'} recovery; ${mx.messages.length} delivered before the kill`,
    );
    const second = await startRelay({ config, dir: root });
    try {
      await waitFor(() => new Set(mx.messages.map((m) => m.rcptTo[0])).size >= N, {
        timeoutMs: 120_000,
        what: `all ${N} messages at the MX (have ${mx.messages.length})`,
      });
      const counts = new Map<string, number>();
      for (const m of mx.messages) counts.set(m.rcptTo[0], (counts.get(m.rcptTo[0]) ?? 0) + 1);
      const dup = [...counts.values()].reduce((a, n) => a + n - 1, 0);
      t.diagnostic(`${counts.size} distinct, ${dup} duplicates`);
      assert.equal(counts.size, N, 'every queued message delivered');
      assert.ok(
        dup <= DELIVERY.concurrency,
        `duplicates only from deliveries in flight at the kill (${dup})`,
      );
      await waitFor(
        async () => {
          const q = (await (await fetch(`http://127.0.0.1:${second.adminPort}/queue?limit=0`)).json()) as {
            depth: number;
            recovering: boolean;
          };
          return q.depth === 0 && q.recovering === false;
        },
        { timeoutMs: 30_000, what: 'an empty queue, recovery done' },
      );
    } finally {
      await second.stop();
    }
  } finally {
    await mx.close();
    await removeTmpDir(root);
  }
});
