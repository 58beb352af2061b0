/**
 * Durability under kill -9: thousands of messages from many concurrent clients; while the relay is
 * accepting and delivering it is SIGKILLed three times and restarted on the same spool. Every message
 * that got a 250 must reach the MX; duplicates may only come from deliveries in flight at a kill.
 *
 * Each relay run ("generation" g) gets its own hostname, relay-g<g>.crash.test. It appears in the
 * Received header the relay adds when it accepts a message, and in the EHLO it gives the MX when it
 * delivers one, so for every copy at the MX the test knows which run accepted it and which delivered it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { startTestMx, type TestMx } from '../helpers/testmx.js';
import { waitFor } from '../helpers/poll.js';
import { SmtpSession, SmtpSessionError } from '../helpers/smtpsession.js';

const TARGET = 5_000; // acknowledged messages wanted
const SENDERS = 32; // concurrent client connections, each reused for many messages
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

const hostname = (gen: number) => `relay-g${gen}.crash.test`;

async function queueDepth(relay: RelayProc): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${relay.adminPort}/queue?limit=1`);
  assert.equal(res.status, 200);
  return ((await res.json()) as { depth: number }).depth;
}

interface KillRecord {
  ackedAtKill: number;
  /** Messages the restarted relay found in its spool. */
  recoveredAfter: number;
  restartMs: number;
  /** Acknowledged by a run up to this kill, first delivered by a later run: kept across the kill. */
  ackedSurvived: number;
  /** Copies delivered again by a later run of a message an earlier run (ended by this kill) had delivered. */
  duplicates: number;
}

/** One copy at the MX. */
interface Copy {
  seq: number;
  qid: string;
  acceptedBy: number;
  deliveredBy: number;
}

test(
  'kill -9 three times while accepting and delivering: every acknowledged message arrives, duplicates stay bounded',
  { timeout: 110_000 },
  async (t) => {
    const started = Date.now();
    const mx: TestMx = await startTestMx({ name: 'mx.crash.test' });
    const config = (gen: number) => ({
      hostname: hostname(gen),
      trustedNetworks: ['127.0.0.0/8'],
      queue: { retry: { initial: '1s', max: '2s' } },
      delivery: DELIVERY,
      routing: {
        default: { type: 'smarthost', smarthost: { host: '127.0.0.1', port: mx.port, tls: 'none' } },
      },
    });
    let relay = await startRelay({ config: config(0) });
    const root = relay.root;

    // what the clients saw
    const ackedQueueId = new Map<number, string>(); // seq -> relay queue id from "250 ... queued as ID"
    const cut: number[] = []; // cut off by a kill before a 250: not acknowledged, may or may not arrive
    const refusals: string[] = []; // any refusal: there should be none
    const unexpectedErrors: string[] = []; // connection failures not caused by a kill
    let nextSeq = 1;
    const maxSeq = TARGET * 2; // bound on attempts: a runaway sender loop fails the test instead of hanging

    // the relay generation the senders talk to
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
            const seq = nextSeq++; // a message cut off by a kill is not resent under the same number
            let r;
            try {
              r = await s.send('load@crash.test', [`rcpt${seq}@dest.test`], message(seq));
            } catch (e) {
              if (e instanceof SmtpSessionError) cut.push(seq);
              throw e;
            }
            if (r.mail.code !== 250 || r.rcpts[0].code !== 250 || r.data?.code !== 250) {
              refusals.push(
                `seq ${seq}: MAIL ${r.mail.code} RCPT ${r.rcpts[0]?.code} DATA ${(r.data ?? r.dataCmd).text}`,
              );
              if (refusals.length > 20)
                throw new Error(`too many refusals: ${refusals.slice(0, 5).join('; ')}`);
              continue;
            }
            const m = /queued as ([0-9A-Z]{20})/.exec(r.data.text);
            assert.ok(m, `250 reply names the queue id: ${r.data.text}`);
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
          what: `${at} acknowledged`,
        });
        const mxBefore = mx.messages.length;
        killing = true;
        relay.kill('SIGKILL');
        const ex = await relay.exited;
        assert.equal(
          ex.signal,
          'SIGKILL',
          `relay died of the SIGKILL (${JSON.stringify(ex)}); stderr:\n${relay.stderr}`,
        );
        const rec: KillRecord = {
          ackedAtKill: ackedQueueId.size,
          recoveredAfter: 0,
          restartMs: 0,
          ackedSurvived: 0,
          duplicates: 0,
        };
        const t0 = Date.now();
        relay = await startRelay({ config: config(gen + 1), dir: root });
        rec.restartMs = Date.now() - t0;
        // the relay listens first and indexes its spool in the background: wait for the figure
        const started = relay;
        const recovered = await waitFor(() => started.logs.find((l) => l.event === 'queue.recovered'), {
          timeoutMs: 30_000,
          what: 'the spool indexed after the restart',
        });
        rec.recoveredAfter = typeof recovered?.messages === 'number' ? recovered.messages : 0;
        kills.push(rec);
        port = relay.ports.smtp;
        gen++;
        killing = false;
        // the MX keeps receiving from the new run: delivery goes on after each restart
        await waitFor(() => mx.messages.length > mxBefore, {
          timeoutMs: 30_000,
          what: 'deliveries after the restart',
        });
      }
    };

    try {
      await Promise.all([killer(), ...Array.from({ length: SENDERS }, (_, i) => sender(i))]);
      const sendSecs = (Date.now() - started) / 1000;

      // what the MX received
      const copies: Copy[] = [];
      const bySeq = new Map<number, Copy[]>();
      const corrupt: string[] = [];
      let indexed = 0;
      const index = () => {
        for (; indexed < mx.messages.length; indexed++) {
          const { raw, helo } = mx.messages[indexed];
          const text = raw.toString('latin1');
          const seq = Number(/^X-Test-Seq: (\d+)\r$/m.exec(text)?.[1]);
          const rcv = /^\tby relay-g(\d+)\.crash\.test \(Cartero\) with \S+ id ([0-9A-Z]{20})/m.exec(text);
          const by = /^relay-g(\d+)\.crash\.test$/.exec(helo);
          const expected = message(seq);
          if (
            !seq ||
            !rcv ||
            !by ||
            !text.startsWith('Received: ') ||
            !raw.subarray(raw.length - expected.length).equals(expected)
          ) {
            corrupt.push(`#${indexed} from ${helo}: ${JSON.stringify(text.slice(0, 300))}`);
            continue;
          }
          const c: Copy = { seq, qid: rcv[2], acceptedBy: Number(rcv[1]), deliveredBy: Number(by[1]) };
          copies.push(c);
          bySeq.set(seq, [...(bySeq.get(seq) ?? []), c]);
        }
      };
      // The relay unlinks a message only after the MX's 250, and the MX records a message before its 250,
      // so once the queue is empty (nothing adds to it any more) everything it will deliver is at the MX.
      let depth = -1;
      try {
        await waitFor(async () => (depth = await queueDepth(relay)) === 0, {
          timeoutMs: 60_000,
          intervalMs: 100,
          what: 'an empty relay queue',
        });
      } finally {
        index();
        const miss = [...ackedQueueId.keys()].filter((s) => !bySeq.has(s));
        const first = miss.slice(0, 20).map((s) => `${s} (${ackedQueueId.get(s)})`);
        assert.equal(
          miss.length,
          0,
          `${miss.length} of ${ackedQueueId.size} acknowledged messages never arrived (relay queue depth ${depth}), first: ${first.join(', ')}`,
        );
      }
      index();
      const totalSecs = (Date.now() - started) / 1000;

      // duplicates: for each message, consecutive copies; a later run redelivering is a crash duplicate
      // (counted against the kill that ended the earlier run), the same run delivering twice is a bug
      let duplicates = 0;
      const sameRun: string[] = [];
      const qids = new Map<string, number>();
      for (const [seq, cs] of bySeq) {
        const runs = cs.map((c) => c.deliveredBy).sort((a, b) => a - b);
        for (let i = 1; i < runs.length; i++) {
          duplicates++;
          if (runs[i] === runs[i - 1]) sameRun.push(`seq ${seq} twice by run ${runs[i]}`);
          else kills[runs[i - 1]].duplicates++;
        }
        for (const c of cs)
          assert.equal(c.qid, cs[0].qid, `all copies of seq ${seq} come from one spooled message`);
        qids.set(cs[0].qid, seq);
      }
      for (const [seq] of ackedQueueId) {
        const c = bySeq.get(seq)![0];
        assert.equal(c.qid, ackedQueueId.get(seq), `seq ${seq} arrived under the queue id its 250 named`);
        const firstDelivery = Math.min(...bySeq.get(seq)!.map((x) => x.deliveredBy));
        for (let k = c.acceptedBy; k < firstDelivery; k++) kills[k].ackedSurvived++;
      }
      const unackedDelivered = [...bySeq.keys()].filter((s) => !ackedQueueId.has(s)).length;
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
        `acked=${figures.acked} delivered=${figures.deliveredToMx} distinct=${figures.distinctDelivered} duplicates=${duplicates} ` +
          `unackedButDelivered=${unackedDelivered} cut=${cut.length} time=${figures.secondsTotal}s (${figures.ackedPerSecond} acked/s)`,
      );
      for (const [i, k] of kills.entries())
        t.diagnostic(
          `kill ${i + 1} at ${k.ackedAtKill} acked: ${k.ackedSurvived} acknowledged but undelivered survived it, ` +
            `${k.recoveredAfter} recovered, ${k.duplicates} duplicates, restart ${k.restartMs} ms`,
        );

      assert.deepEqual(
        corrupt,
        [],
        'every delivered message is byte-identical to what the client sent, after our Received header',
      );
      assert.deepEqual(refusals, [], 'no transaction was refused');
      assert.deepEqual(unexpectedErrors, [], 'no connection failed except at a kill');
      assert.ok(ackedQueueId.size >= TARGET);
      assert.equal(
        new Set(ackedQueueId.values()).size,
        ackedQueueId.size,
        'every acknowledgement named its own queue id',
      );
      assert.deepEqual(sameRun, [], 'no run delivered a message twice');
      // The kills hit acknowledged mail that was still queued (else they tested nothing about durability).
      const survived = kills.reduce((a, k) => a + k.ackedSurvived, 0);
      assert.ok(survived > 0, 'some acknowledged, undelivered mail was in the spool at a kill');
      for (const k of kills)
        assert.ok(
          k.duplicates + k.ackedSurvived <= k.recoveredAfter,
          'what a restart delivers again or late came from its spool',
        );
      // Bound on duplicates per kill. A message reaches the MX twice only if the kill falls between the MX
      // storing it and the relay unlinking its queue file (a kill before the MX stores it is a plain retry;
      // after the unlink it is not recovered). Messages in that window at one moment:
      //  - inside open outbound transactions: one message each, and with a single destination at most
      //    min(concurrency, perDestinationConcurrency) transactions;
      //  - answered by the MX but not yet unlinked: the engine frees the delivery slot when the MX answers
      //    and unlinks right after, not waiting for anything else; the next transaction on that slot needs
      //    ≥ 4 round trips to the MX against one unlink, so about one such message per slot: as many again.
      //    This term is not strictly capped by the engine: the unlink waits in libuv's thread pool behind
      //    the inbound fdatasyncs, and on a slow disk more than one transaction can complete meanwhile.
      // So per kill: 2 × min(concurrency, perDestinationConcurrency) = 40 here. Measured on 2 shared
      // cores: 0-12 per kill alone, up to 24 with two such tests running side by side.
      const perKill = 2 * Math.min(DELIVERY.concurrency, DELIVERY.perDestinationConcurrency);
      for (const [i, k] of kills.entries())
        assert.ok(k.duplicates <= perKill, `kill ${i + 1}: ${k.duplicates} duplicates > bound ${perKill}`);
    } finally {
      await relay.cleanup();
      await mx.close();
    }
  },
);
