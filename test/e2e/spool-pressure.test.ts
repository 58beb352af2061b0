/**
 * The spool at bulk scale, attacked as a full disk and big senders would: every message acknowledged is
 * delivered byte-exact, nothing refused is delivered, memory stays flat whatever the message size.
 *
 * - 16 clients send 8 MiB each at once to a spool with room for 10;
 * - a disk that another writer fills while messages stream in (ENOSPC in the middle of DATA);
 * - a 100 MB message against a 10 MiB limit;
 * - kill -9 in the middle of DATA.
 */
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, open, readdir, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { startTestMx, type TestMx } from '../helpers/testmx.js';
import { waitFor } from '../helpers/poll.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';
import { SmtpSession, dataPayload } from '../helpers/smtpsession.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;

/** A message tagged `tag` of about `size` bytes, lines of 76 characters, deterministic per tag. */
function bigMessage(tag: string, size: number): Buffer {
  const head = `From: <app@sender.test>\r\nTo: <${tag}@dest.test>\r\nSubject: ${tag}\r\nX-Test-Tag: ${tag}\r\n\r\n`;
  const seed = createHash('sha256').update(tag).digest('hex');
  const line = (i: number) => `${seed.slice(i % 40, (i % 40) + 24)}${String(i).padStart(50, '.')}\r\n`;
  const lines: string[] = [];
  let n = head.length;
  for (let i = 0; n < size; i++) {
    const l = line(i);
    lines.push(l);
    n += l.length;
  }
  return Buffer.from(head + lines.join(''), 'latin1');
}

function tagOf(raw: Buffer): string {
  return /^X-Test-Tag: (\S+)\r$/m.exec(raw.subarray(0, 4096).toString('latin1'))?.[1] ?? '?';
}

/** What the MX got, less the Received line we add in front: must equal what the client sent. */
function withoutOurReceived(raw: Buffer): Buffer {
  const s = raw.subarray(0, 4096).toString('latin1');
  const m = /^Received: from [^\r]*\r\n(\t[^\r]*\r\n)*/.exec(s);
  return m ? raw.subarray(Buffer.byteLength(m[0], 'latin1')) : raw;
}

/** Peak resident memory of a process so far (VmHWM), in bytes. */
async function peakRss(pid: number): Promise<number> {
  const s = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(s)![1]) * 1024;
}

async function queueDepth(relay: RelayProc): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${relay.adminPort}/queue?limit=0`);
  return ((await res.json()) as { depth: number }).depth;
}

async function mountTmpfs(dir: string, size: string): Promise<string | undefined> {
  try {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
    return undefined;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    return (err.stderr || err.message).trim();
  }
}

/** A root folder whose spool/ is a fresh tmpfs of `size`; the reason as a string when none can be mounted. */
async function tmpfsSpool(prefix: string, size: string): Promise<{ root: string; spool: string } | string> {
  const root = await makeTmpDir(prefix);
  const spool = path.join(root, 'spool');
  await mkdir(spool);
  const why = await mountTmpfs(spool, size);
  if (why) {
    await removeTmpDir(root);
    return why;
  }
  return { root, spool };
}

async function dropTmpfsSpool(root: string, spool: string): Promise<void> {
  await run('umount', ['-l', spool]).catch(() => undefined);
  await removeTmpDir(root);
}

function config(mx: TestMx, maxMessageSize: number): Record<string, unknown> {
  return {
    hostname: 'relay.pressure.test',
    trustedNetworks: ['127.0.0.0/8'],
    limits: { maxMessageSize },
    queue: { retry: { initial: '1s', max: '2s' }, minFreeBytes: 0 },
    shaping: { backoff: { initial: '1s', max: '2s' } },
    routing: { default: { type: 'smarthost', smarthost: { host: '127.0.0.1', port: mx.port, tls: 'none' } } },
  };
}

/**
 * A relay (largest message `maxMessageSize`) on a fresh tmpfs spool of `size`, its smarthost a test MX
 * that answers 421 until the test sets it to normal, and the SMTP sessions the test opens; all stopped and
 * unmounted after `fn`. Skips the test when no tmpfs can be mounted.
 */
async function onTmpfsSpool(
  t: TestContext,
  o: { prefix: string; size: string; maxMessageSize: number },
  fn: (r: { mx: TestMx; relay: RelayProc; spool: string; sessions: SmtpSession[] }) => Promise<void>,
): Promise<void> {
  const disk = await tmpfsSpool(o.prefix, o.size);
  if (typeof disk === 'string') return t.skip(`cannot mount a tmpfs (${disk})`);
  const { root, spool } = disk;
  const mx = await startTestMx();
  mx.setMode('down-421');
  let relay: RelayProc | undefined;
  const sessions: SmtpSession[] = [];
  try {
    relay = await startRelay({ config: config(mx, o.maxMessageSize), dir: root });
    await fn({ mx, relay, spool, sessions });
  } finally {
    for (const s of sessions) s.destroy();
    await relay?.stop();
    await mx.close();
    await dropTmpfsSpool(root, spool);
  }
}

/**
 * Waits until every acknowledged message arrived byte-exact, and checks nothing else did. `sent` maps tag to
 * the bytes sent.
 */
async function expectExactly(mx: TestMx, relay: RelayProc, sent: Map<string, Buffer>): Promise<void> {
  await waitFor(async () => mx.messages.length >= sent.size && (await queueDepth(relay)) === 0, {
    timeoutMs: 60_000,
    what: `${sent.size} acknowledged message(s) delivered (have ${mx.messages.length})`,
  });
  const got = mx.messages.map((m) => tagOf(m.raw));
  assert.deepEqual([...got].sort(), [...sent.keys()].sort(), 'each acknowledged message once, nothing else');
  for (const m of mx.messages) {
    const want = sent.get(tagOf(m.raw))!;
    assert.ok(
      withoutOurReceived(m.raw).equals(want),
      `${tagOf(m.raw)} arrived byte-exact (${m.raw.length} bytes)`,
    );
  }
}

describe('spool under pressure', () => {
  test('16 clients × 8 MiB at once, room for 10: only what fits is acknowledged, all byte-exact, memory flat', async (t) => {
    await onTmpfsSpool(
      t,
      { prefix: 'cartero-16x8-', size: '84m', maxMessageSize: 9 * MiB },
      async ({ mx, relay, spool, sessions }) => {
        const before = await peakRss(relay.pid);
        const msgs = Array.from({ length: 16 }, (_, i) => bigMessage(`big${i}`, 8 * MiB));
        for (let i = 0; i < 16; i++) sessions.push(await SmtpSession.open(relay.ports.smtp));
        // half declare SIZE (they reserve what they declare), half do not (they reserve the 9 MiB limit)
        const outcomes = await Promise.all(
          sessions.map(async (s, i) => {
            const size = i % 2 === 0 ? ` SIZE=${msgs[i].length}` : '';
            const [mail, rcpt, data] = await s.command(
              `MAIL FROM:<app@sender.test>${size}`,
              `RCPT TO:<big${i}@dest.test>`,
              'DATA',
            );
            if (data.code !== 354) return { i, code: mail.code, text: mail.text };
            assert.equal(rcpt.code, 250);
            const end = await s.sendData(msgs[i]);
            return { i, code: end.code, text: end.text };
          }),
        );
        const accepted = outcomes.filter((o) => o.code === 250);
        const refused = outcomes.filter((o) => o.code !== 250);
        t.diagnostic(
          `accepted ${accepted.length}, refused ${refused.length}: ${refused.map((r) => r.text)[0] ?? ''}`,
        );
        assert.ok(accepted.length <= 10 && accepted.length >= 8, `between 8 and 10 fit (${accepted.length})`);
        for (const r of refused)
          assert.match(r.text, /^452 4\.3\.1 /, 'the others hear 452 4.3.1, never a 250');
        const peak = (await peakRss(relay.pid)) - before;
        t.diagnostic(`peak RSS growth with 16 × 8 MiB streaming: ${(peak / MiB).toFixed(1)} MiB`);
        assert.ok(
          peak < 96 * MiB,
          `memory does not grow with message size × clients (${(peak / MiB).toFixed(1)} MiB)`,
        );
        assert.deepEqual(await readdir(path.join(spool, 'tmp')), [], 'no partial file left');
        mx.setMode('normal');
        await expectExactly(mx, relay, new Map(accepted.map((o) => [`big${o.i}`, msgs[o.i]])));
      },
    );
  });

  test('a disk filled by another writer during DATA: 452 while full, nothing acknowledged lost or cut, delivery resumes when space returns', async (t) => {
    await onTmpfsSpool(
      t,
      { prefix: 'cartero-fill-', size: '24m', maxMessageSize: 2 * MiB },
      async ({ mx, relay, spool, sessions }) => {
        const sent = new Map<string, Buffer>();
        const refusals: string[] = [];
        let filling = true;
        // The other writer starts once a first message is acknowledged (on a loaded machine it could
        // otherwise fill the disk before any client got a message in), then grabs whatever space there
        // is, 64 KiB at a time, until the disk is full, while the clients go on sending.
        let firstAck!: () => void;
        const acknowledged = new Promise<void>((resolve) => (firstAck = resolve));
        let sendersDone!: () => void;
        const finished = new Promise<void>((resolve) => (sendersDone = resolve));
        const filler = (async () => {
          await Promise.race([acknowledged, finished]);
          const fh = await open(path.join(spool, 'filler'), 'w');
          const chunk = Buffer.alloc(64 * 1024, 0x7a);
          try {
            while (filling) {
              try {
                await fh.write(chunk);
              } catch {
                await new Promise((r) => setImmediate(r));
              }
            }
          } finally {
            await fh.close();
          }
        })();
        for (let i = 0; i < 4; i++) sessions.push(await SmtpSession.open(relay.ports.smtp));
        await Promise.all(
          sessions.map(async (s, c) => {
            let refusedInARow = 0;
            for (let k = 0; k < 40 && refusedInARow < 3; k++) {
              const tag = `fill${c}-${k}`;
              const msg = bigMessage(tag, 200_000 + 50_000 * c);
              const r = await s.send('app@sender.test', [`${tag}@dest.test`], msg);
              const end = r.data ?? r.mail;
              if (end.code === 250) {
                sent.set(tag, msg);
                firstAck();
                refusedInARow = 0;
              } else {
                assert.match(
                  end.text,
                  /^45[12] 4\.3\.[01] /,
                  `a full disk gives 452 (or 451), not ${end.text}`,
                );
                refusals.push(end.text);
                refusedInARow++;
              }
            }
          }),
        ).finally(sendersDone);
        filling = false;
        await filler;
        t.diagnostic(
          `acknowledged ${sent.size}, refused ${refusals.length} (${[...new Set(refusals)].join(' | ')})`,
        );
        assert.ok(refusals.length > 0, 'the full disk was noticed');
        assert.ok(sent.size > 0, 'some mail got through before it filled');
        assert.deepEqual(await readdir(path.join(spool, 'tmp')), [], 'no partial file left');
        assert.equal(await queueDepth(relay), sent.size, 'every acknowledged message is queued');
        await rm(path.join(spool, 'filler'));
        // space is back: mail is accepted again and everything acknowledged is delivered, byte-exact
        const after = bigMessage('after', 100_000);
        await waitFor(
          async () => {
            const r = await sessions[0].send('app@sender.test', ['after@dest.test'], after);
            return r.data?.code === 250;
          },
          { timeoutMs: 10_000, what: 'a message accepted once space returned' },
        );
        sent.set('after', after);
        mx.setMode('normal');
        await expectExactly(mx, relay, sent);
      },
    );
  });

  test('a 100 MB message at a 10 MiB limit: 552 after DATA, refused while streaming, memory flat, nothing stored', async (t) => {
    const mx = await startTestMx();
    const relay = await startRelay({ config: config(mx, 10 * MiB) });
    try {
      const before = await peakRss(relay.pid);
      const sock = net.connect(relay.ports.smtp, '127.0.0.1');
      let buf = '';
      sock.on('data', (d) => (buf += d.toString('latin1')));
      const expectReply = (re: RegExp) =>
        waitFor(() => re.test(buf), {
          timeoutMs: 30_000,
          what: `a reply matching ${re} (have ${JSON.stringify(buf.slice(-200))})`,
        });
      await expectReply(/^220 /m);
      sock.write('EHLO big.test\r\nMAIL FROM:<app@sender.test>\r\nRCPT TO:<big@dest.test>\r\nDATA\r\n');
      await expectReply(/^354 /m);
      const chunk = Buffer.from(`${'x'.repeat(1022)}\r\n`.repeat(1024)); // 1 MiB of lines
      for (let i = 0; i < 100; i++) {
        if (!sock.write(chunk)) await new Promise((r) => sock.once('drain', r));
      }
      sock.write('.\r\n');
      await expectReply(/^552 5\.3\.4 /m);
      sock.write('QUIT\r\n');
      sock.end();
      const peak = (await peakRss(relay.pid)) - before;
      t.diagnostic(`peak RSS growth while 100 MB streamed in: ${(peak / MiB).toFixed(1)} MiB`);
      assert.ok(peak < 48 * MiB, `memory flat (${(peak / MiB).toFixed(1)} MiB)`);
      assert.equal(await queueDepth(relay), 0);
      assert.deepEqual(await readdir(path.join(relay.root, 'spool', 'tmp')), []);
      assert.deepEqual(await readdir(path.join(relay.root, 'spool', 'queue')), []);
    } finally {
      await relay.cleanup();
      await mx.close();
    }
  });

  test('kill -9 in the middle of DATA: the unacknowledged message is never delivered, the acknowledged ones are', async () => {
    const mx = await startTestMx();
    mx.setMode('down-421');
    let relay = await startRelay({ config: config(mx, 16 * MiB) });
    const root = relay.root;
    try {
      const s = await SmtpSession.open(relay.ports.smtp);
      const sent = new Map<string, Buffer>();
      for (const tag of ['k1', 'k2']) {
        const m = bigMessage(tag, 300_000);
        const r = await s.send('app@sender.test', [`${tag}@dest.test`], m);
        assert.equal(r.data?.code, 250);
        sent.set(tag, m);
      }
      // half of an 8 MiB message, then the relay dies
      const [, , data] = await s.command('MAIL FROM:<app@sender.test>', 'RCPT TO:<cut@dest.test>', 'DATA');
      assert.equal(data.code, 354);
      const half = dataPayload(bigMessage('cut', 8 * MiB)).subarray(0, 4 * MiB);
      const sock = (s as unknown as { socket: net.Socket }).socket;
      sock.write(half);
      await waitFor(async () => (await readdir(path.join(root, 'spool', 'tmp'))).length === 1, {
        timeoutMs: 10_000,
        what: 'the message being written to tmp/',
      });
      relay.kill('SIGKILL');
      await relay.exited;
      s.destroy();
      relay = await startRelay({ config: config(mx, 16 * MiB), dir: root });
      assert.deepEqual(
        await readdir(path.join(root, 'spool', 'tmp')),
        [],
        'the partial file is gone at start',
      );
      mx.setMode('normal');
      await expectExactly(mx, relay, sent);
    } finally {
      await relay.cleanup();
      await mx.close();
    }
  });
});
