/**
 * Expiry and delay warnings with an injected clock: the relay runs in this process with a clock the test
 * moves, so days pass without waiting. Bounces and warnings go to the sender through the relay's own queue.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveConfig } from '../../relay/src/config.js';
import { Relay } from '../../relay/src/relay.js';
import { createLogger } from '../../relay/src/log.js';
import { startTestMx, type TestMx } from '../helpers/testmx.js';
import { sendMail } from '../helpers/swaks.js';
import { waitFor } from '../helpers/poll.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';
import { parseDsn } from '../helpers/dsn.js';

const HOUR = 3_600_000;
let mx: TestMx;
let relay: Relay;
let dir: string;
let clock = Date.parse('2026-11-29T10:00:00Z');

before(async () => {
  mx = await startTestMx({ address: '127.0.4.8' });
  dir = await makeTmpDir('cartero-expiry-');
  const cfg = resolveConfig(
    {
      version: 1,
      hostname: 'relay.expiry.test',
      listeners: [{ name: 'smtp', port: 0 }],
      trustedNetworks: ['127.0.0.0/8'],
      queue: { retry: { initial: '10m', factor: 2, max: '4h' }, maxAge: '5d', delayWarningAfter: '4h' },
      routing: {
        default: { type: 'smarthost', smarthost: { host: '127.0.4.8', port: mx.port, tls: 'none' } },
      },
      admin: { port: 0 },
    },
    dir,
  );
  relay = new Relay(cfg, { log: createLogger('silent'), now: () => clock });
  await relay.start();
});

after(async () => {
  await relay?.stop(2000);
  await mx?.close();
  if (dir) await removeTmpDir(dir);
});

/** Moves the clock and runs what became due. */
function advance(ms: number): void {
  clock += ms;
  relay.engine.kick();
}

test('warns after delayWarningAfter, then bounces as expired after maxAge', async () => {
  await sendMail(relay.inbound.ports.smtp, {
    from: 'owner@sender.test',
    to: ['tempfail@dest.test'],
    subject: 'stuck',
  });
  const attempts = () => mx.rcptAttempts.filter((a) => a.address === 'tempfail@dest.test').length;
  await waitFor(() => attempts() >= 1, { what: 'first attempt' });
  // the MX saw the attempt; wait until the relay has recorded it (and scheduled the next one)
  await waitFor(async () => (await relay.engine.list(1))[0]?.attempts === 1, {
    what: 'first attempt recorded',
  });
  assert.equal(relay.engine.stats().depth, 1);

  // Jump from one scheduled retry to the next until more than 4 hours have passed: the first retry past
  // delayWarningAfter sends the warning. The retry schedule itself is the one from the config (10m, 20m, 40m, ...).
  const arrived = clock;
  for (let i = 0; clock - arrived < 4 * HOUR; i++) {
    assert.ok(i < 20, 'bounded');
    const n = attempts();
    const [m] = await relay.engine.list(1);
    assert.ok(m.nextAttemptAt > clock, 'the next attempt is scheduled in the future');
    advance(m.nextAttemptAt - clock);
    await waitFor(() => attempts() > n, { what: `retry ${i + 1}` });
    await waitFor(
      async () =>
        (await relay.engine.list(1))[0]?.attempts === i + 2 || mx.byRecipient('owner@sender.test').length > 0,
      { what: 'attempt recorded' },
    );
  }
  const warning = await waitFor(() => mx.byRecipient('owner@sender.test')[0], { what: 'delay warning' });
  const w = parseDsn(warning.raw);
  assert.equal(warning.mailFrom, '');
  assert.equal(w.recipients[0]['action'], 'delayed');
  assert.equal(w.recipients[0]['final-recipient'], 'rfc822; tempfail@dest.test');
  assert.ok(w.recipients[0]['will-retry-until'], 'says until when it retries');
  // the warning itself leaves the queue once delivered; the original stays
  await waitFor(() => relay.engine.stats().depth === 1, {
    what: 'only the original still queued after the warning',
  });
  assert.equal((await relay.engine.list(1))[0].id.length, 20);

  // Past maxAge (5 days): the next attempt expires the recipient and bounces it.
  advance(5 * 24 * HOUR);
  const bounces = await waitFor(
    () => (mx.byRecipient('owner@sender.test').length >= 2 ? mx.byRecipient('owner@sender.test') : undefined),
    { what: 'expiry bounce' },
  );
  const b = parseDsn(bounces[1].raw);
  assert.equal(b.recipients[0]['action'], 'failed');
  assert.equal(b.recipients[0]['status'], '4.4.7');
  assert.match(b.recipients[0]['diagnostic-code'] ?? '', /expired/);
  await waitFor(() => relay.engine.stats().depth === 0, { what: 'queue empty after expiry' });
  assert.equal(mx.byRecipient('owner@sender.test').length, 2, 'one warning, one bounce, nothing more');
});
