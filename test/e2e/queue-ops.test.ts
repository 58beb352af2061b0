/**
 * Bulk queue operations on a real relay: suspend by tenant and by destination domain (held, not attempted,
 * kept across a restart), resume (released mail is delivered), purge with and without a DSN.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestMx, type TestMx } from '../helpers/testmx.js';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { sendMail } from '../helpers/swaks.js';
import { waitFor } from '../helpers/poll.js';
import { parseDsn } from '../helpers/dsn.js';

const ACME = { user: 'acme-app', pass: 'acme-secret-1' };
const GLOBEX = { user: 'globex-app', pass: 'globex-secret-1' };
let mx: TestMx;
let relay: RelayProc;

const config = () => ({
  hostname: 'relay.queue-ops.test',
  tenants: [
    {
      name: 'acme',
      accounts: [{ username: ACME.user, passwordFile: 'acme.password' }],
      senderDomains: ['acme.test'],
    },
    {
      name: 'globex',
      accounts: [{ username: GLOBEX.user, passwordFile: 'globex.password' }],
      senderDomains: ['globex.test'],
    },
  ],
  queue: { retry: { initial: '1h', max: '1h' } },
  routing: { default: { type: 'smarthost', smarthost: { host: '127.0.4.90', port: mx.port, tls: 'none' } } },
});
const secrets = { 'acme.password': ACME.pass, 'globex.password': GLOBEX.pass };

async function api<T = Record<string, unknown>>(
  method: string,
  p: string,
  body?: unknown,
): Promise<{ status: number; json: T }> {
  const res = await fetch(`http://127.0.0.1:${relay.adminPort}${p}`, {
    method,
    ...(body !== undefined
      ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }
      : {}),
  });
  return { status: res.status, json: (await res.json()) as T };
}

async function send(acct: { user: string; pass: string }, from: string, to: string[]): Promise<void> {
  await sendMail(relay.ports.smtp, { auth: acct, from, to, subject: `to ${to.join(',')}` });
}

/** RCPT commands the MX saw for an address: any attempt at all. */
const attempts = (addr: string) => mx.rcptAttempts.filter((a) => a.address === addr).length;
const depth = async () => (await api<{ depth: number }>('GET', '/queue')).json.depth;

/**
 * Purges until no matching message is busy: a message being attempted right now (the unsuspended half of
 * a partly held message, a new message's first look) is skipped and reported as busy, so the caller asks
 * again. Returns the totals over all calls.
 */
async function purgeWhenIdle(
  body: Record<string, unknown>,
): Promise<{ purged: number; dsn: number; busy: number }> {
  const total = { purged: 0, dsn: 0, busy: 0 };
  await waitFor(
    async () => {
      const r = await api<{ purged: number; dsn: number; busy: number }>('POST', '/queue/purge', body);
      assert.equal(r.status, 200, JSON.stringify(r.json));
      total.purged += r.json.purged;
      total.dsn += r.json.dsn;
      total.busy = r.json.busy;
      return r.json.busy === 0;
    },
    { what: `a purge of ${JSON.stringify(body)} with nothing busy` },
  );
  return total;
}

before(async () => {
  mx = await startTestMx({ address: '127.0.4.90' });
  relay = await startRelay({ config: config(), secrets });
});

after(async () => {
  await relay?.cleanup();
  await mx?.close();
});

test('suspend holds mail across a restart, resume delivers it, purge removes it with or without a DSN', async () => {
  // bad requests
  assert.equal((await api('POST', '/queue/suspend', {})).status, 400);
  assert.equal((await api('POST', '/queue/suspend', { tenant: 'nobody' })).status, 404);

  const byTenant = await api<{ suspension: { tenant: string; source: string; since: string }; held: number }>(
    'POST',
    '/queue/suspend',
    { tenant: 'acme', reason: 'customer asked' },
  );
  assert.equal(byTenant.status, 200);
  assert.equal(byTenant.json.held, 0);
  assert.equal(byTenant.json.suspension.tenant, 'acme');
  assert.equal(byTenant.json.suspension.source, 'admin');
  assert.ok(!Number.isNaN(Date.parse(byTenant.json.suspension.since)));
  const byDomain = await api<{ held: number }>('POST', '/queue/suspend', { domain: 'Slow.TEST' });
  assert.equal(byDomain.status, 200);
  // idempotent: the same tenant+domain+source replaces
  await api('POST', '/queue/suspend', { domain: 'slow.test', reason: 'again' });

  await send(ACME, 'x@acme.test', ['ok-a1@dest.test']);
  await send(GLOBEX, 'y@globex.test', ['ok-g1@slow.test', 'ok-g2@dest.test']);
  await send(GLOBEX, 'y@globex.test', ['ok-g3@dest.test']);
  // the recipients nobody suspended are delivered; the suspended ones stay queued, never attempted
  await waitFor(() => mx.byRecipient('ok-g2@dest.test').length && mx.byRecipient('ok-g3@dest.test').length, {
    what: 'unsuspended mail delivered',
  });
  await waitFor(async () => (await depth()) === 2, { what: 'two messages held' });
  assert.equal(attempts('ok-a1@dest.test'), 0, 'suspended tenant: not attempted');
  assert.equal(attempts('ok-g1@slow.test'), 0, 'suspended domain: not attempted');
  const list = await api<{ suspensions: { tenant?: string; domain?: string; reason: string }[] }>(
    'GET',
    '/queue/suspensions',
  );
  assert.deepEqual(
    list.json.suspensions.map((s) => [s.tenant ?? null, s.domain ?? null, s.reason]),
    [
      ['acme', null, 'customer asked'],
      [null, 'slow.test', 'again'],
    ],
  );
  const metrics = await (await fetch(`http://127.0.0.1:${relay.adminPort}/metrics`)).text();
  assert.match(metrics, /^cartero_queue_suspended\{tenant="acme"\} 1$/m);
  assert.match(metrics, /^cartero_queue_suspended\{tenant="globex"\} 1$/m);

  // a restart keeps the suspensions: the recovered messages are held again
  await relay.stop();
  relay = await startRelay({ config: config(), secrets, dir: relay.root });
  const restarted = relay;
  await waitFor(() => restarted.logs.find((l) => l.event === 'queue.recovered'), { what: 'spool indexed' });
  await send(GLOBEX, 'y@globex.test', ['ok-g4@dest.test']);
  await waitFor(() => mx.byRecipient('ok-g4@dest.test').length, {
    what: 'new mail delivered after the restart',
  });
  assert.equal(
    (await api<{ suspensions: unknown[] }>('GET', '/queue/suspensions')).json.suspensions.length,
    2,
  );
  // the MX has the new message; the relay removes it from its queue right after
  await waitFor(async () => (await depth()) === 2, { what: 'the two held messages left' });
  assert.equal(attempts('ok-a1@dest.test') + attempts('ok-g1@slow.test'), 0, 'still not attempted');

  // resume the domain: its held recipient is delivered at once
  const resumed = await api<{ resumed: boolean; released: number }>('POST', '/queue/resume', {
    domain: 'slow.test',
  });
  assert.deepEqual(resumed.json, { resumed: true, released: 1 });
  await waitFor(() => mx.byRecipient('ok-g1@slow.test').length, { what: 'released recipient delivered' });
  assert.equal(mx.byRecipient('ok-g2@dest.test').length, 1, 'the other recipient was not sent again');
  assert.deepEqual((await api('POST', '/queue/resume', { domain: 'slow.test' })).json, {
    resumed: false,
    released: 0,
  });

  // purge the suspended tenant's mail with a DSN
  const purged = await api('POST', '/queue/purge', { tenant: 'acme', dsn: true });
  assert.deepEqual(purged.json, { purged: 1, dsn: 1, busy: 0 });
  const dsn = await waitFor(() => mx.byRecipient('x@acme.test')[0], { what: 'DSN for the purged message' });
  const report = parseDsn(dsn.raw);
  assert.equal(report.recipients[0]['action'], 'failed');
  assert.equal(report.recipients[0]['status'], '5.0.0');
  assert.match(report.recipients[0]['diagnostic-code'] ?? '', /purged by an administrator/);

  // and without one
  await send(ACME, 'x@acme.test', ['ok-a2@dest.test']);
  await waitFor(async () => (await depth()) === 1, { what: 'one held' });
  assert.deepEqual(await purgeWhenIdle({ tenant: 'acme', dsn: false }), {
    purged: 1,
    dsn: 0,
    busy: 0,
  });

  // purge by domain: only that domain's recipients go
  await api('POST', '/queue/suspend', { domain: 'hold.test', source: 'fleet' });
  await send(GLOBEX, 'y@globex.test', ['ok-g5@hold.test', 'ok-g6@dest.test']);
  await waitFor(() => mx.byRecipient('ok-g6@dest.test').length, { what: 'unsuspended recipient delivered' });
  await waitFor(async () => (await depth()) === 1, { what: 'one partly held' });
  assert.deepEqual(await purgeWhenIdle({ domain: 'hold.test', dsn: false }), {
    purged: 1,
    dsn: 0,
    busy: 0,
  });
  await waitFor(async () => (await depth()) === 0, { what: 'queue empty' });
  assert.equal(attempts('ok-g5@hold.test') + attempts('ok-a2@dest.test'), 0);
  assert.equal(mx.byRecipient('x@acme.test').length, 1, 'one DSN only');
  assert.deepEqual((await api('POST', '/queue/resume', { tenant: 'acme' })).json, {
    resumed: true,
    released: 0,
  });
});
