/**
 * The spool under pressure loses nothing: a full queue and a full disk answer 452 (never 250 for a message
 * that was not stored, never a crash), queued mail survives and is delivered once the pressure is gone,
 * and what a crash leaves in the spool (temp files, orphan state, a corrupt queue file) does not stop
 * the next start.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { startTestMx, type TestMx } from '../helpers/testmx.js';
import { waitFor } from '../helpers/poll.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';
import { SmtpSession } from '../helpers/smtpsession.js';

const run = promisify(execFile);

const FULL_452 = /^452 4\.3\.1 /;

function msg(tag: string): string {
  return `From: <app@sender.test>\r\nTo: <${tag}@dest.test>\r\nSubject: ${tag}\r\nX-Test-Tag: ${tag}\r\n\r\nbody of ${tag}\r\n`;
}

function relayConfig(mx: TestMx, queue: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    hostname: 'relay.spool.test',
    trustedNetworks: ['127.0.0.0/8'],
    queue: { retry: { initial: '1s', max: '2s' }, ...queue },
    // the down MX answers 421, a throttle signal: keep its back-off as short as the retries here
    shaping: { backoff: { initial: '1s', max: '2s' } },
    routing: { default: { type: 'smarthost', smarthost: { host: '127.0.0.1', port: mx.port, tls: 'none' } } },
  };
}

/** Tags (X-Test-Tag) of the messages the MX received, in order. */
function tags(mx: TestMx): string[] {
  return mx.messages.map((m) => /^X-Test-Tag: (\S+)\r$/m.exec(m.raw.toString('latin1'))?.[1] ?? '?');
}

async function admin(
  relay: RelayProc,
  p: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${relay.adminPort}${p}`);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function queueDepth(relay: RelayProc): Promise<number> {
  return (await admin(relay, '/queue')).body.depth as number;
}

/** Sends one message and expects 250 (returns the queue id). */
async function accept(s: SmtpSession, tag: string): Promise<string> {
  const r = await s.send('app@sender.test', [`${tag}@dest.test`], msg(tag));
  assert.equal(
    r.data?.code,
    250,
    `message ${tag} accepted: MAIL ${r.mail.text} / DATA ${r.dataCmd.text} / ${r.data?.text}`,
  );
  return /queued as ([0-9A-Z]{20})/.exec(r.data!.text)![1];
}

/** Waits until the MX holds exactly `want` (as a multiset) and the relay queue is empty. */
async function expectDelivered(mx: TestMx, relay: RelayProc, want: string[]): Promise<void> {
  await waitFor(() => mx.messages.length >= want.length, {
    timeoutMs: 15_000,
    what: `${want.length} message(s) at the MX (have ${tags(mx).join(',')})`,
  });
  await waitFor(async () => (await queueDepth(relay)) === 0, {
    timeoutMs: 10_000,
    what: 'an empty relay queue',
  });
  assert.deepEqual(
    tags(mx).sort(),
    [...want].sort(),
    'each queued message delivered exactly once, nothing else',
  );
}

describe('spool failures lose nothing', () => {
  test('queue.maxMessages: 3 — the 4th message gets 452 4.3.1, the first 3 are kept and delivered when the MX is back', async () => {
    const mx = await startTestMx();
    mx.setMode('down-421');
    const relay = await startRelay({ config: relayConfig(mx, { maxMessages: 3 }) });
    const s = await SmtpSession.open(relay.ports.smtp);
    try {
      const ids = [await accept(s, 'm1'), await accept(s, 'm2'), await accept(s, 'm3')];
      assert.equal(new Set(ids).size, 3);

      // the 4th: refused at MAIL FROM, and the pipelined RCPT/DATA do not start a transaction
      const r4 = await s.send('app@sender.test', ['m4@dest.test'], msg('m4'));
      assert.match(r4.mail.text, FULL_452, `MAIL FROM refused while the queue is full: ${r4.mail.text}`);
      assert.equal(r4.data, undefined, 'no message data was taken');
      assert.notEqual(r4.dataCmd.code, 354);

      // the relay is trying (and failing) to deliver, and keeps the 3
      await waitFor(() => mx.connections >= 1, {
        timeoutMs: 10_000,
        what: 'a delivery attempt at the down MX',
      });
      const q = await admin(relay, '/queue');
      assert.equal(q.body.depth, 3);
      assert.equal((await s.command('NOOP'))[0].code, 250, 'the session still works after the 452');

      // the last free slot is held from MAIL FROM on: a second session asking meanwhile gets 452 at MAIL,
      // never a 354 for a message that cannot be stored
      mx.setMode('normal');
      await waitFor(async () => (await queueDepth(relay)) === 0, {
        timeoutMs: 10_000,
        what: 'the first 3 delivered',
      });
      mx.setMode('down-421');
      await accept(s, 'm5');
      await accept(s, 'm6');
      const a = await SmtpSession.open(relay.ports.smtp);
      const b = await SmtpSession.open(relay.ports.smtp);
      try {
        const envA = await a.command('MAIL FROM:<app@sender.test>', 'RCPT TO:<race-a@dest.test>', 'DATA');
        const envB = await b.command('MAIL FROM:<app@sender.test>');
        assert.deepEqual(
          [...envA, ...envB].map((r) => r.code),
          [250, 250, 354, 452],
          'the first MAIL holds the last slot, the second is refused at MAIL',
        );
        assert.match(envB[0].text, FULL_452);
        const endA = await a.sendData(msg('race-a'));
        assert.equal(endA.code, 250, endA.text);
        const winner = 'race-a';
        assert.equal(await queueDepth(relay), 3);
        mx.setMode('normal');
        await expectDelivered(mx, relay, ['m1', 'm2', 'm3', 'm5', 'm6', winner]);
        // room again
        await accept(s, 'm7');
        await expectDelivered(mx, relay, ['m1', 'm2', 'm3', 'm5', 'm6', winner, 'm7']);
      } finally {
        a.destroy();
        b.destroy();
      }
    } finally {
      s.destroy();
      await relay.cleanup();
      await mx.close();
    }
  });

  test('a full queue still returns bounces: the DSN is not held to maxMessages', async () => {
    const mx = await startTestMx();
    const relay = await startRelay({ config: relayConfig(mx, { maxMessages: 1 }) });
    const s = await SmtpSession.open(relay.ports.smtp);
    try {
      // the only slot: a message whose recipient the MX refuses; its DSN needs a second slot
      const r = await s.send('app@sender.test', ['reject@dest.test'], msg('bounce-me'));
      assert.equal(r.data?.code, 250, r.data?.text);
      const dsn = await waitFor(() => mx.byRecipient('app@sender.test')[0], { what: 'the DSN' });
      assert.equal(dsn.mailFrom, '');
      await waitFor(async () => (await queueDepth(relay)) === 0, { what: 'queue empty' });
    } finally {
      await s.quit();
      await relay.cleanup();
      await mx.close();
    }
  });

  test('queue.minFreeBytes above the free space: 452 4.3.1 at MAIL FROM, nothing queued, the relay keeps serving', async () => {
    const mx = await startTestMx();
    const relay = await startRelay({ config: relayConfig(mx, { minFreeBytes: 1e15 }) });
    const s = await SmtpSession.open(relay.ports.smtp);
    try {
      for (let i = 0; i < 3; i++) {
        const r = await s.send('app@sender.test', ['x@dest.test'], msg('x'));
        assert.match(r.mail.text, FULL_452);
        assert.match(r.mail.text, /storage/i);
      }
      assert.equal(await queueDepth(relay), 0);
      assert.equal((await admin(relay, '/healthz')).status, 200);
      assert.equal((await s.command('NOOP'))[0].code, 250);
      assert.deepEqual(await readdir(path.join(relay.root, 'spool', 'queue')), []);
    } finally {
      s.destroy();
      await relay.cleanup();
      await mx.close();
    }
  });

  test('a real full disk (tmpfs): ENOSPC gives 452, queued mail survives failed state writes, space back = accepted again', async (t) => {
    const root = await makeTmpDir('cartero-diskfull-');
    const spool = path.join(root, 'spool');
    await mkdir(spool);
    try {
      await run('mount', ['-t', 'tmpfs', '-o', 'size=512k,nr_inodes=64', 'tmpfs', spool]);
    } catch (e) {
      await removeTmpDir(root);
      const err = e as { stderr?: string; message: string };
      t.skip(`cannot mount a tmpfs to fill (${(err.stderr || err.message).trim()})`);
      return;
    }
    const mx = await startTestMx();
    let relay: RelayProc | undefined;
    let s: SmtpSession | undefined;
    let exitedEarly = false;
    try {
      mx.setMode('down-421');
      // a 512 KiB disk: each transaction reserves the size limit (as Postfix wants 1.5 × message_size_limit
      // free), so the limit must fit; 64 KiB leaves room for a few
      relay = await startRelay({
        config: { ...relayConfig(mx, { minFreeBytes: 0 }), limits: { maxMessageSize: 65536 } },
        dir: root,
      });
      void relay.exited.then(() => (exitedEarly = true));
      s = await SmtpSession.open(relay.ports.smtp);
      await accept(s, 'queued-before'); // stays queued: the MX is down

      // 1. out of inodes: statfs still shows free bytes, so the write itself hits ENOSPC
      const fill = path.join(spool, 'fill');
      await mkdir(fill);
      let files = 0;
      for (; files < 10_000; files++) {
        try {
          await writeFile(path.join(fill, `i${files}`), '');
        } catch (e) {
          assert.equal((e as NodeJS.ErrnoException).code, 'ENOSPC');
          break;
        }
      }
      assert.ok(files < 10_000, 'the tmpfs ran out of inodes');
      const since = relay.logs.length;
      const r1 = await s.send('app@sender.test', ['lost1@dest.test'], msg('lost1'));
      assert.equal(r1.dataCmd.code, 354);
      assert.match(r1.data!.text, FULL_452, `no inode for the spool file: 452, not ${r1.data!.text}`);
      // the deferred message's state cannot be saved either; the relay logs it and keeps the message
      const qerr = await relay.waitForLog((l) => l.event === 'queue.error', 10_000, since);
      assert.match(String(qerr.err), /ENOSPC/);
      t.diagnostic(
        `out of inodes after ${files} files: DATA got "${r1.data!.text}"; delivery logged "${String(qerr.err)}"`,
      );
      assert.equal((await admin(relay, '/healthz')).status, 200, 'still serving');
      assert.equal(await queueDepth(relay), 1);
      await rm(fill, { recursive: true });

      // 2. out of blocks
      const big = path.join(spool, 'big');
      const fh = await open(big, 'w');
      try {
        for (const chunk of [65536, 4096]) {
          const buf = Buffer.alloc(chunk, 0x78);
          for (let i = 0; i < 1000; i++) {
            try {
              await fh.write(buf);
            } catch (e) {
              assert.equal((e as NodeJS.ErrnoException).code, 'ENOSPC');
              break;
            }
          }
        }
      } finally {
        await fh.close();
      }
      const r2 = await s.send('app@sender.test', ['lost2@dest.test'], msg('lost2'));
      const refusal = r2.mail.code === 452 ? r2.mail : r2.data!;
      assert.match(
        refusal.text,
        FULL_452,
        `disk full: 452 at MAIL or DATA, got MAIL ${r2.mail.text} / ${r2.data?.text}`,
      );
      t.diagnostic(`out of blocks: ${r2.mail.code === 452 ? 'MAIL' : 'DATA'} got "${refusal.text}"`);
      assert.equal(exitedEarly, false, 'the relay did not crash');
      assert.equal(await queueDepth(relay), 1);
      assert.deepEqual(await readdir(path.join(spool, 'tmp')), [], 'no half-written file left in tmp/');

      // 3. space back: the next message is accepted (the free-space figure is cached for up to 1 s)
      await rm(big);
      let refusedAfterFree = 0;
      await waitFor(
        async () => {
          const r = await s!.send('app@sender.test', ['after@dest.test'], msg('after'));
          if (r.data?.code === 250) return true;
          assert.match(r.data?.text ?? r.mail.text, FULL_452);
          refusedAfterFree++;
          return false;
        },
        { timeoutMs: 5_000, intervalMs: 250, what: 'a message accepted once space is back' },
      );
      assert.ok(refusedAfterFree <= 5, `refused ${refusedAfterFree} times after space came back`);
      t.diagnostic(
        `space back: accepted after ${refusedAfterFree} refusal(s) (free-space figure cached up to 1 s)`,
      );
      mx.setMode('normal');
      await expectDelivered(mx, relay, ['queued-before', 'after']);
      assert.equal(exitedEarly, false, 'the relay did not crash');
    } finally {
      s?.destroy();
      await relay?.stop();
      await mx.close();
      await run('umount', [spool]).catch(() => run('umount', ['-l', spool]));
      await removeTmpDir(root);
    }
  });

  test('after a crash: temp files and orphan state are cleaned, a corrupt queue file is set aside, the rest is delivered', async () => {
    const mx = await startTestMx();
    mx.setMode('down-421');
    let relay = await startRelay({ config: relayConfig(mx) });
    const spool = path.join(relay.root, 'spool');
    try {
      const s = await SmtpSession.open(relay.ports.smtp);
      const idA = await accept(s, 'a');
      const idB = await accept(s, 'b');
      s.destroy();
      // let one attempt fail, so there is a state file to leave half-written
      await waitFor(() => existsSync(path.join(spool, 'state', `${idA}.json`)), {
        timeoutMs: 10_000,
        what: 'a saved delivery state',
      });
      relay.kill('SIGKILL');
      await relay.exited;

      // what a crash (or a disk) may leave behind
      const partialId = 'ZZZZZZZZZZPARTIAL000';
      await writeFile(path.join(spool, 'tmp', partialId), 'CSPOOL1 200\n{"v":1,"id":"ZZZ');
      const orphan = '00000000000RPHAN0000';
      await writeFile(
        path.join(spool, 'state', `${orphan}.json`),
        '{"v":1,"attempts":1,"nextAttemptAt":0,"delayWarned":false,"rcpts":[]}',
      );
      await writeFile(path.join(spool, 'state', `${idB}.json.tmp`), '{"v":1,"attem');
      const corruptId = '00000000000CORRUPT00';
      const corruptBytes = Buffer.from('CSPOOL1 40\n{"v":1,"id":"00000000000CORRUPT00","ten\nnot json');
      await writeFile(path.join(spool, 'queue', `${corruptId}.msg`), corruptBytes);
      await writeFile(path.join(spool, 'state', `${corruptId}.json`), '{"v":1}');

      mx.setMode('normal');
      relay = await startRelay({ config: relayConfig(mx), dir: relay.root });
      // the spool is indexed in the background once the relay listens
      const started = relay;
      await waitFor(() => started.logs.find((l) => l.event === 'queue.recovered'), { what: 'spool indexed' });
      // it listened first: ready before the spool was indexed
      const at = (event: string) => started.logs.findIndex((l) => l.event === event);
      assert.ok(at('ready') >= 0 && at('ready') < at('queue.recovered'), 'ready before the index finished');
      const q = await admin(relay, '/queue');
      assert.equal(q.body.recovering, false);
      const metrics = await (await fetch(`http://127.0.0.1:${relay.adminPort}/metrics`)).text();
      assert.match(metrics, /^cartero_spool_recovering 0$/m);
      assert.match(metrics, /^cartero_spool_recovery_scanned_total 3$/m);
      assert.match(metrics, /^cartero_spool_recovery_corrupt_total 1$/m);
      assert.match(metrics, /^cartero_spool_corrupt_total\{stage="start"\} 1$/m);
      const logged = relay.logs.find((l) => l.event === 'spool.corrupt');
      assert.ok(logged, 'the corrupt file is logged');
      assert.equal(logged.file, `${corruptId}.msg`);
      assert.equal(logged.level, 'error');
      assert.equal(relay.logs.find((l) => l.event === 'queue.recovered')?.messages, 2);
      assert.deepEqual(
        await readFile(path.join(spool, 'corrupt', `${corruptId}.msg`)),
        corruptBytes,
        'kept byte for byte under corrupt/',
      );
      assert.deepEqual(await readdir(path.join(spool, 'tmp')), []);
      const state = await readdir(path.join(spool, 'state'));
      for (const f of [`${orphan}.json`, `${idB}.json.tmp`, `${corruptId}.json`])
        assert.ok(!state.includes(f), `${f} removed`);
      assert.ok(!(await readdir(path.join(spool, 'queue'))).includes(`${corruptId}.msg`));

      await expectDelivered(mx, relay, ['a', 'b']);
      // a clean start afterwards: nothing logged as corrupt again
      await relay.stop();
      relay = await startRelay({ config: relayConfig(mx), dir: relay.root });
      const again = relay;
      await waitFor(() => again.logs.find((l) => l.event === 'queue.recovered'), { what: 'spool indexed' });
      assert.equal(
        relay.logs.find((l) => l.event === 'spool.corrupt'),
        undefined,
      );
      assert.equal(await queueDepth(relay), 0);
    } finally {
      await relay.cleanup();
      await mx.close();
    }
  });
});
