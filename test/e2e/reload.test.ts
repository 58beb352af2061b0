/**
 * Hot reload of a running relay process. The config file is replaced the way Kubernetes does it (a new
 * file in the same folder, renamed over the old one) while clients stay connected:
 *
 * 1. under load, tenant acme gets a rate limit and a new IP pool: the open sessions keep working, mail
 *    accepted after the reload leaves from the new pool's address, and the new limit holds (20 accepted
 *    recipients, then 451 4.7.1);
 * 2. an invalid config is refused (logged with the field, counted in cartero_config_reloads_total) and the
 *    old one keeps serving, until the file is fixed;
 * 3. a password file replaced under secrets/ applies without a restart.
 *
 * Addresses: test MX 127.0.4.61; egress (IP pool) addresses 127.0.3.20-127.0.3.23.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import type { RateLimitUse } from '../../relay/src/contract/admin-api.js';
import { startRelay, type LogLine, type RelayProc } from '../helpers/relay.js';
import { startTestMx, type ReceivedMessage, type TestMx } from '../helpers/testmx.js';
import { SmtpSession } from '../helpers/smtpsession.js';
import { waitFor } from '../helpers/poll.js';
import { rawSmtp } from '../helpers/rawsmtp.js';

const MX_IP = '127.0.4.61';
const DOMAIN = 'reload.test';
/** Well under the relay's 10 s safety-net poll: a reload seen within this came from the folder watch. */
const RELOAD_TIMEOUT_MS = 5_000;
const HOUR = 3_600_000;

/**
 * `fn` with a relay's sessions: `session()` opens one on its SMTP listener; after `fn`, every session
 * opened is closed and the relay stopped.
 */
async function withSessions(relay: RelayProc, fn: (session: () => Promise<SmtpSession>) => Promise<void>) {
  const open: SmtpSession[] = [];
  try {
    await fn(async () => {
      const s = await SmtpSession.open(relay.ports.smtp);
      open.push(s);
      return s;
    });
  } finally {
    for (const s of open) s.destroy();
    await relay.cleanup();
  }
}

function message(rcpt: string): string {
  return [
    'From: <app@acme.test>',
    `To: <${rcpt}>`,
    `Subject: reload test ${rcpt}`,
    `Message-ID: <${rcpt.replace('@', '.')}@acme.test>`,
    '',
    'Hello from a reload test.',
    '',
  ].join('\r\n');
}

/** A relay config: acme (trusted from 127.0.0.1) sends through `pool`; mail for reload.test goes to the test MX. */
function relayConfig(
  mx: TestMx,
  pools: Record<string, string>,
  acme: Record<string, unknown>,
): Record<string, unknown> {
  return {
    hostname: 'relay.reload.test',
    queue: { retry: { initial: '1s', factor: 1, max: '1s' } },
    routing: {
      default: { type: 'mx' },
      domains: [{ domain: DOMAIN, host: MX_IP, port: mx.port, tls: 'none' }],
    },
    ipPools: Object.entries(pools).map(([name, ip]) => ({
      name,
      addresses: [{ ip, ehlo: `${name}.egress.reload.test` }],
    })),
    tenants: [{ name: 'acme', trustedNetworks: ['127.0.0.1/32'], ...acme }],
  };
}

/** Writes `text` to a temporary file next to `file`, then renames it over `file` (an atomic swap). */
async function swapFile(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  await writeFile(tmp, text, { mode: 0o600 });
  await rename(tmp, file);
}

/** Reads the relay's config file, lets `edit` change the document, and swaps the result in. */
async function rewriteConfig(relay: RelayProc, edit: (doc: Record<string, unknown>) => void): Promise<void> {
  const doc = YAML.parse(await readFile(relay.configFile, 'utf8')) as Record<string, unknown>;
  edit(doc);
  await swapFile(relay.configFile, YAML.stringify(doc));
}

/** The first tenant entry of a config document. */
function acmeOf(doc: Record<string, unknown>): Record<string, unknown> {
  return (doc.tenants as Record<string, unknown>[])[0];
}

async function admin<T>(relay: RelayProc, p: string): Promise<T> {
  const res = await fetch(`http://127.0.0.1:${relay.adminPort}${p}`);
  assert.equal(res.status, 200, `GET ${p}: ${res.status}`);
  return (await res.json()) as T;
}

async function configHash(relay: RelayProc): Promise<string> {
  const c = await admin<{ version: number; hash: string }>(relay, '/config');
  assert.equal(c.version, 1);
  assert.match(c.hash, /^[0-9a-f]{64}$/);
  return c.hash;
}

/** The value of cartero_config_reloads_total{result=...} on /metrics (0 when absent). */
async function reloadsMetric(relay: RelayProc, result: 'applied' | 'invalid'): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${relay.adminPort}/metrics`);
  const text = await res.text();
  const m = new RegExp(`^cartero_config_reloads_total\\{result="${result}"\\} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/** The first log line at index `since` or later with this event, and its index. */
async function nextEvent(
  relay: RelayProc,
  event: string,
  since: number,
  timeoutMs = RELOAD_TIMEOUT_MS,
): Promise<{ line: LogLine; index: number }> {
  const line = await relay.waitForLog((l) => l.event === event, timeoutMs, since);
  return { line, index: relay.logs.indexOf(line) };
}

/** Sends one message that must be accepted; returns its queue id. */
async function sendOk(s: SmtpSession, rcpt: string): Promise<string> {
  const r = await s.send('app@acme.test', [rcpt], message(rcpt));
  assert.equal(
    r.data?.code,
    250,
    `${rcpt} accepted: MAIL ${r.mail.text} / RCPT ${r.rcpts[0]?.text} / DATA ${r.dataCmd.text} / ${r.data?.text}`,
  );
  return /queued as ([0-9A-Z]{20})/.exec(r.data!.text)![1];
}

/** Waits for the message to `rcpt` at the MX. */
async function deliveredTo(mx: TestMx, rcpt: string): Promise<ReceivedMessage> {
  return waitFor(() => mx.byRecipient(rcpt)[0], { timeoutMs: 10_000, what: `${rcpt} at the test MX` });
}

async function auth(s: SmtpSession, user: string, password: string): Promise<number> {
  const token = Buffer.from(`\0${user}\0${password}`).toString('base64');
  return (await s.command(`AUTH PLAIN ${token}`))[0].code;
}

describe('hot reload of a running relay', () => {
  let mx: TestMx;

  before(async () => {
    mx = await startTestMx({ address: MX_IP, name: 'mx.reload.test' });
  });

  after(async () => {
    await mx?.close();
  });

  test('under load: a new rate limit and IP pool apply to open connections without dropping them', async () => {
    const SESSIONS = 2;
    const PER_SESSION = 150; // at most, per connection
    const GATE = 60; // a session that gets here before the reload was seen waits for it (connection open)
    const LIMIT = 20;
    const relay = await startRelay({
      config: relayConfig(mx, { 'pool-a': '127.0.3.20', 'pool-b': '127.0.3.21' }, { ipPool: 'pool-a' }),
    });
    const sessions: SmtpSession[] = [];
    try {
      const hash0 = await configHash(relay);
      for (let i = 0; i < SESSIONS; i++) sessions.push(await SmtpSession.open(relay.ports.smtp));

      interface Tx {
        rcpt: string;
        startedAt: number;
        rcptReply: string;
        accepted: boolean;
        queueId?: string;
      }
      const st: { accepted: number; reloadSeenAt?: number } = { accepted: 0 };
      const load = async (s: SmtpSession, n: number): Promise<Tx[]> => {
        const txs: Tx[] = [];
        let refused = 0;
        for (let seq = 0; seq < PER_SESSION; seq++) {
          if (seq === GATE && st.reloadSeenAt === undefined)
            await waitFor(() => st.reloadSeenAt !== undefined, {
              timeoutMs: 15_000,
              what: `the reload (session ${n} paused at message ${GATE})`,
            });
          if (st.reloadSeenAt !== undefined && refused >= 3) break;
          const rcpt = `ok+load-s${n}-${seq}@${DOMAIN}`;
          const startedAt = Date.now();
          const r = await s.send('app@acme.test', [rcpt], message(rcpt));
          const accepted = r.data?.code === 250;
          txs.push({
            rcpt,
            startedAt,
            rcptReply: r.rcpts[0].text,
            accepted,
            ...(accepted ? { queueId: /queued as ([0-9A-Z]{20})/.exec(r.data!.text)?.[1] } : {}),
          });
          if (accepted) st.accepted++;
          else {
            refused++;
            const [rset] = await s.command('RSET');
            assert.equal(rset.code, 250, `RSET after a refused transaction: ${rset.text}`);
          }
        }
        return txs;
      };
      const loads = Promise.all(sessions.map((s, n) => load(s, n)));
      loads.catch(() => undefined); // awaited below; do not report a rejection twice

      // the load runs and mail leaves from pool-a's address
      await waitFor(
        () => st.accepted >= 20 && mx.messages.filter((m) => m.rcptTo[0].startsWith('ok+load-')).length >= 5,
        { timeoutMs: 10_000, what: '20 messages accepted and 5 delivered before the reload' },
      );
      const preReload = mx.messages.filter((m) => m.rcptTo[0].startsWith('ok+load-'));
      assert.deepEqual(
        [...new Set(preReload.map((m) => `${m.remoteAddress} ${m.helo}`))],
        ['127.0.3.20 pool-a.egress.reload.test'],
        'before the reload, mail leaves from pool-a',
      );

      const since = relay.logs.length;
      const rewrittenAt = Date.now();
      await rewriteConfig(relay, (doc) => {
        acmeOf(doc).rateLimits = [`${LIMIT}/h`];
        acmeOf(doc).ipPool = 'pool-b';
      });
      const reloaded = await nextEvent(relay, 'config.reloaded', since);
      st.reloadSeenAt = Date.now();
      assert.equal(reloaded.line.previous, hash0);
      assert.notEqual(reloaded.line.hash, hash0, 'a new hash');
      assert.deepEqual(reloaded.line.restartNeeded, [], 'nothing in this change needs a restart');
      assert.equal(await configHash(relay), reloaded.line.hash, 'GET /config reports the new hash');

      const txs = (await loads).flat();
      const duringHour = Math.floor(rewrittenAt / HOUR) === Math.floor(Date.now() / HOUR);

      // no connection was dropped: both sessions are still open and answer
      for (const [n, s] of sessions.entries()) {
        assert.equal(s.closed, false, `session ${n} still connected`);
        assert.equal((await s.command('NOOP'))[0].code, 250, `session ${n} answers NOOP`);
      }
      assert.equal(
        relay.logs.filter((l) => l.event === 'config.invalid' || l.event === 'config.restart-needed').length,
        0,
      );

      // the new limit: 20 recipients accepted after the reload, then 451 4.7.1
      const refused = txs.filter((t) => !t.accepted);
      assert.ok(refused.length >= SESSIONS, `each session ended on refusals (${refused.length})`);
      for (const t of refused) {
        assert.match(t.rcptReply, /^451 4\.7\.1 Rate limit 20\/h reached for tenant acme/, t.rcpt);
        assert.ok(t.startedAt >= rewrittenAt, `${t.rcpt} refused only after the config changed`);
      }
      const acceptedAfterSeen = txs.filter((t) => t.accepted && t.startedAt >= st.reloadSeenAt!).length;
      const acceptedAfterWrite = txs.filter((t) => t.accepted && t.startedAt >= rewrittenAt).length;
      assert.ok(
        acceptedAfterSeen <= LIMIT,
        `at most ${LIMIT} accepted after the reload: ${acceptedAfterSeen}`,
      );
      if (duringHour) {
        assert.ok(
          acceptedAfterWrite >= LIMIT,
          `the limit allows ${LIMIT} after the reload: ${acceptedAfterWrite} accepted since the rewrite`,
        );
        for (let n = 0; n < SESSIONS; n++) {
          const mine = txs.filter((t) => t.rcpt.startsWith(`ok+load-s${n}-`));
          const first = mine.findIndex((t) => !t.accepted);
          assert.ok(
            mine.slice(first).every((t) => !t.accepted),
            `session ${n}: nothing accepted after its first 451`,
          );
        }
        const acme = await admin<{ rateLimits: RateLimitUse[] }>(relay, '/tenants/acme');
        assert.deepEqual(
          acme.rateLimits.map((r) => ({ unit: r.unit, limit: r.limit, used: r.used })),
          [{ unit: 'h', limit: LIMIT, used: LIMIT }],
          'the relay counted 20 recipients against the new hourly limit',
        );
      }

      // every accepted message is delivered, once
      const accepted = txs.filter((t) => t.accepted);
      await waitFor(
        () => mx.messages.filter((m) => m.rcptTo[0].startsWith('ok+load-')).length >= accepted.length,
        { timeoutMs: 15_000, what: `${accepted.length} load messages at the MX` },
      );
      const atMx = mx.messages.filter((m) => m.rcptTo[0].startsWith('ok+load-'));
      assert.deepEqual(
        atMx.map((m) => m.rcptTo[0]).sort(),
        accepted.map((t) => t.rcpt).sort(),
        'every accepted message delivered exactly once',
      );

      // mail accepted after the reload (logged after config.reloaded) leaves from pool-b's address
      const afterIds = new Set(
        relay.logs
          .slice(reloaded.index + 1)
          .filter((l) => l.event === 'received')
          .map((l) => l.queueId),
      );
      const afterReload = accepted.filter((t) => afterIds.has(t.queueId) || t.startedAt >= st.reloadSeenAt!);
      assert.ok(
        afterReload.length >= LIMIT - SESSIONS,
        `messages accepted after the reload: ${afterReload.length}`,
      );
      for (const t of afterReload) {
        const m = mx.byRecipient(t.rcpt)[0];
        assert.equal(`${m.remoteAddress} ${m.helo}`, '127.0.3.21 pool-b.egress.reload.test', t.rcpt);
      }
    } finally {
      for (const s of sessions) s.destroy();
      await relay.cleanup();
    }
  });

  test('an invalid config is refused and the old one keeps serving until the file is fixed', async () => {
    const relay = await startRelay({
      config: relayConfig(mx, { 'pool-c': '127.0.3.22', 'pool-d': '127.0.3.23' }, { ipPool: 'pool-c' }),
    });
    const s = await SmtpSession.open(relay.ports.smtp);
    try {
      const hash0 = await configHash(relay);
      await sendOk(s, `ok+inv-0@${DOMAIN}`);
      assert.equal((await deliveredTo(mx, `ok+inv-0@${DOMAIN}`)).remoteAddress, '127.0.3.22');

      // 1. an unknown field (a typo of rateLimits)
      let since = relay.logs.length;
      await rewriteConfig(relay, (doc) => {
        acmeOf(doc).rateLimit = ['1/h'];
        acmeOf(doc).ipPool = 'pool-d';
      });
      const bad1 = await nextEvent(relay, 'config.invalid', since);
      assert.match(String(bad1.line.err), /^\/tenants\/0\/rateLimit: unknown field/);
      assert.equal(bad1.line.keeping, hash0);
      assert.equal(await reloadsMetric(relay, 'invalid'), 1);
      assert.equal(await reloadsMetric(relay, 'applied'), 0);
      assert.equal(await configHash(relay), hash0, 'GET /config still reports the running config');
      // the old config serves: no limit, pool-c, on the connection that was open all along
      for (let i = 1; i <= 3; i++) await sendOk(s, `ok+inv-${i}@${DOMAIN}`);
      for (let i = 1; i <= 3; i++)
        assert.equal((await deliveredTo(mx, `ok+inv-${i}@${DOMAIN}`)).remoteAddress, '127.0.3.22');

      // 2. a tenant naming a pool that does not exist
      since = relay.logs.length;
      await rewriteConfig(relay, (doc) => {
        delete acmeOf(doc).rateLimit;
        acmeOf(doc).ipPool = 'pool-x';
      });
      const bad2 = await nextEvent(relay, 'config.invalid', since);
      assert.match(String(bad2.line.err), /^\/tenants\/0\/ipPool: no ip pool named "pool-x"/);
      assert.equal(await reloadsMetric(relay, 'invalid'), 2);
      assert.equal(await configHash(relay), hash0);
      await sendOk(s, `ok+inv-4@${DOMAIN}`);
      assert.equal((await deliveredTo(mx, `ok+inv-4@${DOMAIN}`)).remoteAddress, '127.0.3.22');

      // 3. a warm-up start date that does not exist (Date.parse would roll it over to March 1st)
      since = relay.logs.length;
      await rewriteConfig(relay, (doc) => {
        acmeOf(doc).ipPool = 'pool-d';
        (doc.ipPools as Record<string, unknown>[])[1].warmup = { start: '2025-02-30', dailyCaps: [100] };
      });
      const bad3 = await nextEvent(relay, 'config.invalid', since);
      assert.match(String(bad3.line.err), /^\/ipPools\/1\/warmup\/start: not a valid date/);
      assert.equal(await reloadsMetric(relay, 'invalid'), 3);
      // a re-check of the same file (SIGHUP, or the periodic poll) does not report it again
      relay.kill('SIGHUP');
      assert.equal(relay.logs.filter((l) => l.event === 'config.reloaded').length, 0, 'nothing applied');

      // 4. fixed: applies
      since = relay.logs.length;
      await rewriteConfig(relay, (doc) => {
        delete (doc.ipPools as Record<string, unknown>[])[1].warmup;
        acmeOf(doc).ipPool = 'pool-d';
        acmeOf(doc).rateLimits = ['1000/h'];
      });
      const good = await nextEvent(relay, 'config.reloaded', since);
      assert.equal(good.line.previous, hash0);
      assert.notEqual(good.line.hash, hash0);
      assert.equal(await configHash(relay), good.line.hash);
      assert.equal(await reloadsMetric(relay, 'applied'), 1);
      assert.equal(await reloadsMetric(relay, 'invalid'), 3, 'each invalid file counted once');
      assert.equal(relay.logs.filter((l) => l.event === 'config.invalid').length, 3);
      await sendOk(s, `ok+inv-5@${DOMAIN}`);
      const m5 = await deliveredTo(mx, `ok+inv-5@${DOMAIN}`);
      assert.equal(`${m5.remoteAddress} ${m5.helo}`, '127.0.3.23 pool-d.egress.reload.test');
      const acme = await admin<{ rateLimits: RateLimitUse[] }>(relay, '/tenants/acme');
      assert.deepEqual(
        acme.rateLimits.map((r) => [r.unit, r.limit]),
        [['h', 1000]],
      );
      assert.equal((await s.command('NOOP'))[0].code, 250, 'the session open since the start still works');
    } finally {
      s.destroy();
      await relay.cleanup();
    }
  });

  test('a password file replaced under secrets/ applies without a restart', async () => {
    const relay = await startRelay({
      config: {
        hostname: 'relay.reload.test',
        routing: {
          default: { type: 'mx' },
          domains: [{ domain: DOMAIN, host: MX_IP, port: mx.port, tls: 'none' }],
        },
        tenants: [{ name: 'acme', accounts: [{ username: 'acme-app', passwordFile: 'acme-app.pass' }] }],
      },
      secrets: { 'acme-app.pass': 'old-secret\n' },
    });
    await withSessions(relay, async (session) => {
      const hash0 = await configHash(relay);
      const early = await session();
      assert.equal(await auth(early, 'acme-app', 'old-secret'), 235, 'the old password works at first');
      const other = await session();
      assert.equal(await auth(other, 'acme-app', 'new-secret'), 535, 'the new one does not, yet');

      const since = relay.logs.length;
      await swapFile(path.join(relay.root, 'secrets', 'acme-app.pass'), 'new-secret\n');
      const reloaded = await nextEvent(relay, 'config.reloaded', since);
      assert.equal(reloaded.line.previous, hash0);
      assert.notEqual(reloaded.line.hash, hash0, 'the secret is part of the config hash');
      assert.equal(await configHash(relay), reloaded.line.hash);
      assert.deepEqual(reloaded.line.restartNeeded, []);

      const withOld = await session();
      const old = await withOld.command(
        `AUTH PLAIN ${Buffer.from('\0acme-app\0old-secret').toString('base64')}`,
      );
      assert.match(old[0].text, /^535 5\.7\.8 /, 'the old password is refused');
      const withNew = await session();
      assert.equal(await auth(withNew, 'acme-app', 'new-secret'), 235, 'the new password works');
      await sendOk(withNew, `ok+secret-new@${DOMAIN}`);
      await deliveredTo(mx, `ok+secret-new@${DOMAIN}`);

      // a session that logged in before the change is not cut off
      assert.equal(early.closed, false);
      await sendOk(early, `ok+secret-early@${DOMAIN}`);
      await deliveredTo(mx, `ok+secret-early@${DOMAIN}`);
    });
  });

  test('accounts and a larger message size added by a reload are offered to new connections', async () => {
    const relay = await startRelay({
      config: {
        ...relayConfig(mx, {}, {}),
        limits: { maxMessageSize: 4096 },
      },
    });
    await withSessions(relay, async (session) => {
      const early = await session();
      assert.doesNotMatch(early.ehloReply!.text, /AUTH/, 'no accounts: AUTH not offered');
      assert.match(early.ehloReply!.text, /^250[ -]SIZE 4096$/m);
      const big = `${message(`ok+size@${DOMAIN}`)}${`${'y'.repeat(76)}\r\n`.repeat(100)}`; // ~8 KB
      const tooBig = await early.send('app@acme.test', [`ok+size-early@${DOMAIN}`], big);
      assert.equal(tooBig.data?.code, 552, `8 KB over a 4 KB limit: ${tooBig.data?.text}`);
      await early.command('RSET');

      const since = relay.logs.length;
      await swapFile(path.join(relay.root, 'secrets', 'acme-app.pass'), 'app-secret\n');
      await rewriteConfig(relay, (doc) => {
        acmeOf(doc).accounts = [{ username: 'acme-app', passwordFile: 'acme-app.pass' }];
        doc.limits = { maxMessageSize: 1_048_576 };
      });
      const reloaded = await nextEvent(relay, 'config.reloaded', since);
      assert.deepEqual(reloaded.line.restartNeeded, []);

      const fresh = await session();
      assert.match(
        fresh.ehloReply!.text,
        /^250[ -]AUTH PLAIN LOGIN$/m,
        'AUTH offered once there are accounts',
      );
      assert.match(fresh.ehloReply!.text, /^250[ -]SIZE 1048576$/m, 'the new size advertised');
      assert.equal(await auth(fresh, 'acme-app', 'app-secret'), 235);
      const r = await fresh.send('app@acme.test', [`ok+size-fresh@${DOMAIN}`], big);
      assert.equal(r.data?.code, 250, `8 KB under the new 1 MB limit: ${r.data?.text}`);
      await deliveredTo(mx, `ok+size-fresh@${DOMAIN}`);
      assert.equal((await early.command('NOOP'))[0].code, 250, 'the early session still works');
    });
  });

  test("a listener's client limits apply at the reload, without a restart", async () => {
    const relay = await startRelay({ config: { hostname: 'relay.reload.test', trustedNetworks: [] } });
    const held: SmtpSession[] = [];
    try {
      held.push(await SmtpSession.open(relay.ports.smtp));
      const since = relay.logs.length;
      await rewriteConfig(relay, (doc) => {
        (doc.listeners as Record<string, unknown>[])[0].limits = { maxConnectionsPerClient: 1 };
      });
      const reloaded = await nextEvent(relay, 'config.reloaded', since);
      assert.deepEqual(reloaded.line.restartNeeded, [], 'client limits need no restart');
      // 127.0.0.1 holds one connection already: a second one is over the new cap
      const second = await rawSmtp(relay.ports.smtp, [], { readGreeting: true });
      assert.match(second[0], /^421 4\.7\.0 Too many concurrent connections/);
      const other = await rawSmtp(relay.ports.smtp, ['QUIT'], { localAddress: '127.0.8.1' });
      assert.match(other[0], /^220 /, 'another address still connects');
    } finally {
      for (const s of held) s.destroy();
      await relay.cleanup();
    }
  });
});
