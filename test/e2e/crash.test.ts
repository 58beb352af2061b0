/**
 * Durability under kill -9: thousands of messages from many concurrent clients, while the relay is
 * accepting and delivering it is SIGKILLed three times and restarted on the same spool. Every message
 * that got a 250 must reach the MX; duplicates may only come from deliveries in flight at a kill.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { startTestMx, type TestMx } from '../helpers/testmx.js';
import { waitFor } from '../helpers/poll.js';
import { SmtpSession, SmtpSessionError } from '../helpers/smtpsession.js';

const TARGET = 5_000; // acknowledged messages wanted
const SENDERS = 32; // concurrent client connections
const KILL_AT = [1_200, 2_500, 3_800]; // acknowledged count at which each SIGKILL happens
const DELIVERY = { concurrency: 20, perDestinationConcurrency: 20 };

/** The message with sequence number `seq`: ~1 KB, no line starts with a dot, deterministic. */
function message(seq: number): Buffer {
  const filler = `seq ${seq} `.padEnd(76, String.fromCharCode(97 + (seq % 26)));
  return Buffer.from(
    [
      'From: <load@crash.test>',
      `To: <rcpt${seq}@dest.test>`,
      `Subject: crash test ${seq}`,
      `Message-ID: <seq-${seq}@crash.test>`,
      `X-Test-Seq: ${seq}`,
      '',
      ...Array.from({ length: 12 }, () => filler),
      '',
    ].join('\r\n'),
  );
}

async function queueDepth(relay: RelayProc): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${relay.adminPort}/queue?limit=1`);
  assert.equal(res.status, 200);
  return ((await res.json()) as { depth: number }).depth;
}

interface KillRecord {
  ackedAtKill: number;
  mxAtKill: number;
  /** Messages the restarted relay found in its spool. */
  recoveredAfter: number;
  restartMs: number;
  /** Acknowledged before the kill, not yet at the MX at the kill: what the spool had to keep. */
  ackedUndelivered?: number;
  /** Messages at the MX before the kill that arrived again after it. */
  duplicates?: number;
}

test(
  'kill -9 three times while accepting and delivering: every acknowledged message arrives, duplicates stay bounded',
  { timeout: 110_000 },
  async (t) => {
    const started = Date.now();
    const mx: TestMx = await startTestMx({ name: 'mx.crash.test' });
    const config = {
      hostname: 'relay.crash.test',
      trustedNetworks: ['127.0.0.0/8'],
      queue: { retry: { initial: '1s', max: '2s' } },
      delivery: DELIVERY,
      routing: {
        default: { type: 'smarthost', smarthost: { host: '127.0.0.1', port: mx.port, tls: 'none' } },
      },
    };
    let relay = await startRelay({ config });
    const root = relay.root;

    // what the clients saw
    const ackedQueueId = new Map<number, string>(); // seq -> relay queue id from "250 ... queued as ID"
    const ackOrder = new Map<number, number>(); // seq -> how many acks came before it
    const cut: number[] = []; // transaction cut off by a kill before its 250 (not acknowledged, may or may not arrive)
    const refusals: string[] = []; // any non-2xx/3xx reply: there should be none
    const unexpectedErrors: string[] = []; // connection failures not caused by a kill
    let nextSeq = 1;
    const maxSeq = TARGET * 2; // bound on attempts: a runaway sender loop fails the test instead of hanging

    // the relay generation senders talk to
    let gen = 0;
    let port = relay.ports.smtp;
    let killing = false;
    const kills: KillRecord[] = [];

    /** After a failed connection: wait for the restarted relay, or note an error no kill explains. */
    const afterFailure = async (myGen: number, err: unknown) => {
      if (gen === myGen && !killing) {
        unexpectedErrors.push(`gen ${myGen}: ${(err as Error).message}`);
        if (unexpectedErrors.length > 20)
          throw new Error(
            `too many connection failures without a kill: ${unexpectedErrors.slice(0, 5).join('; ')}`,
          );
        return;
      }
      await waitFor(() => gen > myGen && !killing, {
        timeoutMs: 30_000,
        intervalMs: 10,
        what: 'the restarted relay',
      });
    };

    const sender = async (n: number) => {
      while (ackedQueueId.size < TARGET) {
        const myGen = gen;
        let s: SmtpSession;
        try {
          s = await SmtpSession.open(port, { ehlo: `sender${n}.crash.test`, timeoutMs: 20_000 });
        } catch (e) {
          await afterFailure(myGen, e);
          continue;
        }
        try {
          while (ackedQueueId.size < TARGET) {
            if (nextSeq > maxSeq)
              throw new Error(`more than ${maxSeq} attempts for ${TARGET} acknowledgements`);
            const seq = nextSeq++;
            let r;
            try {
              r = await s.send('load@crash.test', [`rcpt${seq}@dest.test`], message(seq));
            } catch (e) {
              if (!(e instanceof SmtpSessionError)) throw e;
              cut.push(seq);
              throw e;
            }
            const final = r.data ?? r.dataCmd;
            if (r.mail.code !== 250 || r.rcpts[0].code !== 250 || !r.data || r.data.code !== 250) {
              refusals.push(`seq ${seq}: MAIL ${r.mail.code} RCPT ${r.rcpts[0]?.code} DATA ${final.text}`);
              if (refusals.length > 20)
                throw new Error(`too many refusals: ${refusals.slice(0, 5).join('; ')}`);
              continue;
            }
            const m = /queued as ([0-9A-Z]{20})/.exec(r.data.text);
            assert.ok(m, `250 reply names the queue id: ${r.data.text}`);
            ackOrder.set(seq, ackedQueueId.size);
            ackedQueueId.set(seq, m[1]);
          }
          await s.quit();
        } catch (e) {
          s.destroy();
          if (!(e instanceof SmtpSessionError)) throw e;
          await afterFailure(myGen, e);
        }
      }
    };

    const killer = async () => {
      for (const at of KILL_AT) {
        await waitFor(() => ackedQueueId.size >= at, {
          timeoutMs: 60_000,
          intervalMs: 5,
          what: `${at} acknowledged messages`,
        });
        const mxBefore = kills.length ? kills[kills.length - 1].mxAtKill : 0;
        killing = true;
        relay.kill('SIGKILL');
        const ex = await relay.exited;
        const rec: KillRecord = {
          ackedAtKill: ackedQueueId.size,
          mxAtKill: mx.messages.length,
          recoveredAfter: 0,
          restartMs: 0,
        };
        assert.equal(
          ex.signal,
          'SIGKILL',
          `relay died of the SIGKILL (exit ${JSON.stringify(ex)}); stderr:\n${relay.stderr}`,
        );
        // it was delivering, not only accepting, when it died
        assert.ok(
          rec.mxAtKill > mxBefore,
          `MX received messages between kills (${mxBefore} -> ${rec.mxAtKill})`,
        );
        const t0 = Date.now();
        relay = await startRelay({ config, dir: root });
        rec.restartMs = Date.now() - t0;
        const recovered = relay.logs.find((l) => l.event === 'queue.recovered');
        rec.recoveredAfter = typeof recovered?.messages === 'number' ? recovered.messages : 0;
        kills.push(rec);
        port = relay.ports.smtp;
        gen++;
        killing = false;
      }
    };

    try {
      await Promise.all([killer(), ...Array.from({ length: SENDERS }, (_, i) => sender(i))]);
      const sendSecs = (Date.now() - started) / 1000;

      // index what the MX received: seq -> arrivals, relay queue id -> arrivals
      const bySeq = new Map<number, number>();
      const firstArrival = new Map<number, number>(); // seq -> index of its first arrival at the MX
      const byQid = new Map<string, number>();
      const corrupt: string[] = [];
      let indexed = 0;
      const index = () => {
        for (; indexed < mx.messages.length; indexed++) {
          const raw = mx.messages[indexed].raw;
          const text = raw.toString('latin1');
          const seq = Number(/^X-Test-Seq: (\d+)\r$/m.exec(text)?.[1]);
          const qid = /^\tby relay\.crash\.test \(Cartero\) with \S+ id ([0-9A-Z]{20})/m.exec(text)?.[1];
          const expected = message(seq);
          if (
            !seq ||
            !qid ||
            !text.startsWith('Received: ') ||
            !raw.subarray(raw.length - expected.length).equals(expected)
          ) {
            corrupt.push(`#${indexed} seq ${seq} qid ${qid}: ${JSON.stringify(text.slice(0, 300))}`);
            continue;
          }
          bySeq.set(seq, (bySeq.get(seq) ?? 0) + 1);
          if (!firstArrival.has(seq)) firstArrival.set(seq, indexed);
          byQid.set(qid, (byQid.get(qid) ?? 0) + 1);
        }
      };
      const missing = () => [...ackedQueueId.keys()].filter((s) => !bySeq.has(s));
      try {
        await waitFor(
          () => {
            index();
            return missing().length === 0;
          },
          { timeoutMs: 60_000, intervalMs: 100, what: 'every acknowledged message at the MX' },
        );
      } catch (e) {
        const miss = missing();
        assert.fail(
          `${miss.length} of ${ackedQueueId.size} acknowledged messages never arrived, first: ${miss
            .slice(0, 20)
            .map((s) => `${s} (${ackedQueueId.get(s)})`)
            .join(', ')}; ${(e as Error).message}`,
        );
      }
      await waitFor(async () => (await queueDepth(relay)) === 0, {
        timeoutMs: 30_000,
        intervalMs: 100,
        what: 'an empty relay queue',
      });
      index();
      const totalSecs = (Date.now() - started) / 1000;

      const dupSeqs = [...bySeq].filter(([, n]) => n > 1);
      const duplicates = dupSeqs.reduce((a, [, n]) => a + n - 1, 0);
      const qidDuplicates = [...byQid.values()].reduce((a, n) => a + n - 1, 0);
      const ackedQids = new Set(ackedQueueId.values());
      const unackedDelivered = [...bySeq.keys()].filter((s) => !ackedQueueId.has(s)).length;
      // attribute figures to kills: kill k is the first one after the message's first arrival / acknowledgement
      const killAfter = (mxIndex: number) => kills.findIndex((k) => mxIndex < k.mxAtKill);
      for (const k of kills) {
        k.duplicates = 0;
        k.ackedUndelivered = [...ackOrder].filter(
          ([s, o]) => o < k.ackedAtKill && (firstArrival.get(s) ?? Infinity) >= k.mxAtKill,
        ).length;
      }
      for (const [s] of dupSeqs) {
        const k = killAfter(firstArrival.get(s)!);
        assert.ok(k >= 0, `duplicate of seq ${s} first arrived after the last kill: nothing explains it`);
        kills[k].duplicates! += 1;
      }
      const figures = {
        acked: ackedQueueId.size,
        attempts: nextSeq - 1,
        cutByKill: cut.length,
        deliveredToMx: mx.messages.length,
        distinctDelivered: bySeq.size,
        duplicates,
        unackedButDelivered: unackedDelivered,
        kills,
        unexpectedConnectionErrors: unexpectedErrors.length,
        secondsSending: Number(sendSecs.toFixed(1)),
        secondsTotal: Number(totalSecs.toFixed(1)),
        ackedPerSecond: Math.round(ackedQueueId.size / sendSecs),
      };
      console.log(`crash test figures: ${JSON.stringify(figures)}`);
      t.diagnostic(
        `acked=${figures.acked} delivered=${figures.deliveredToMx} distinct=${figures.distinctDelivered} duplicates=${duplicates} unackedButDelivered=${unackedDelivered} cut=${cut.length} time=${figures.secondsTotal}s`,
      );
      for (const [i, k] of kills.entries())
        t.diagnostic(
          `kill ${i + 1}: acked ${k.ackedAtKill}, at MX ${k.mxAtKill}, acked but undelivered ${k.ackedUndelivered}, recovered ${k.recoveredAfter} queued, duplicates ${k.duplicates}, restart ${k.restartMs} ms`,
        );

      assert.deepEqual(
        corrupt,
        [],
        'every delivered message is byte-identical to what the client sent (after our Received header)',
      );
      assert.deepEqual(refusals, [], 'no transaction was refused');
      assert.deepEqual(unexpectedErrors, [], 'no connection failed except at a kill');
      assert.ok(ackedQueueId.size >= TARGET);
      assert.equal(ackedQids.size, ackedQueueId.size, 'every acknowledged message got its own queue id');
      for (const k of kills)
        assert.ok(k.recoveredAfter > 0, `restart recovered queued mail (kill at ${k.ackedAtKill} acked)`);
      assert.equal(
        qidDuplicates,
        duplicates,
        'a duplicate is a redelivery of one spooled message, nothing else',
      );
      for (const k of kills)
        assert.ok(
          k.ackedUndelivered! > 0,
          `kill at ${k.ackedAtKill} acked found acknowledged mail still to deliver (else it tested nothing)`,
        );
      // Bound on duplicates per kill. A message reaches the MX twice only if the kill falls between the MX
      // storing it and the relay unlinking its queue file (a kill before the MX stores it is a plain retry;
      // after the unlink it is not recovered). Messages in that window at one moment:
      //  - inside open outbound transactions: one message per transaction, and with a single destination
      //    at most min(concurrency, perDestinationConcurrency) of them;
      //  - done at the MX but the unlink not yet run: the engine frees the delivery slot when the MX
      //    answers and unlinks right after, without waiting for the slot's next transaction; the next
      //    transaction on that slot needs ≥ 4 round trips to the MX, against one unlink, so in practice
      //    at most one such message per slot, i.e. as many again. (Not strictly guaranteed by the engine:
      //    a very slow disk can delay the unlink behind the inbound fsyncs.)
      // So per kill: 2 × min(concurrency, perDestinationConcurrency). Measured: 0-3 per kill.
      const perKill = 2 * Math.min(DELIVERY.concurrency, DELIVERY.perDestinationConcurrency);
      for (const [i, k] of kills.entries())
        assert.ok(
          k.duplicates! <= perKill,
          `kill ${i + 1}: ${k.duplicates} duplicates > bound ${perKill}; e.g. ${dupSeqs
            .slice(0, 10)
            .map(([s, n]) => `${s}×${n}`)
            .join(', ')}`,
        );
    } finally {
      await relay.cleanup();
      await mx.close();
    }
  },
);
