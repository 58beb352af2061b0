/**
 * Tenancy end to end: tenants and their accounts, sender domains, egress IP pools (source address and EHLO
 * name), warm-up caps, rate limits (per relay, across a restart, shared by a fleet), spool quotas, the
 * bounce-rate guard, the per-tenant suppression list and the admin token.
 *
 * Address plan: 127.0.3.x stand in for public egress addresses (Linux binds any 127.x address), the test
 * MXs listen on 127.0.4.40-127.0.4.49. Behaviour that depends on the time of day (warm-up days, hourly
 * windows, cool-downs) runs a Relay in this process with a clock the test moves; behaviour that must
 * survive a restart, or involves two relays, runs relay processes.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { resolveConfig } from '../../relay/src/config.js';
import { Relay } from '../../relay/src/relay.js';
import { createLogger } from '../../relay/src/log.js';
import { startTestMx, type TestMx, type ReceivedMessage } from '../helpers/testmx.js';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { SmtpSession, type TxReplies } from '../helpers/smtpsession.js';
import { waitFor } from '../helpers/poll.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';
import { parseDsn } from '../helpers/dsn.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const QUEUED_RE = /queued as ([0-9A-Z]{20})/;

// ---- clients ----

interface Account {
  user: string;
  pass: string;
}

const ACME: Account = { user: 'acme-app', pass: 'acme-Pa55word' };
const GLOBEX: Account = { user: 'globex-app', pass: 'globex-Pa55word' };

/** A tenant entry with one account (password file `<name>.password`) and its own sender domain. */
function tenant(name: string, acct: Account, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name,
    accounts: [{ username: acct.user, passwordFile: `${name}.password` }],
    senderDomains: [`${name}.test`],
    ...extra,
  };
}

/** Connects, says EHLO and logs in as `acct`. */
async function login(port: number, acct: Account): Promise<SmtpSession> {
  const s = await SmtpSession.open(port);
  const [r] = await s.command(`AUTH PLAIN ${Buffer.from(`\0${acct.user}\0${acct.pass}`).toString('base64')}`);
  assert.equal(r.code, 235, `AUTH as ${acct.user}: ${r.text}`);
  return s;
}

function message(from: string, to: string[], subject: string): string {
  return `From: <${from}>\r\nTo: ${to.map((t) => `<${t}>`).join(', ')}\r\nSubject: ${subject}\r\n\r\n${subject}\r\n`;
}

/** One transaction on an open session: MAIL, RCPT..., DATA pipelined; the message only after a 354. */
function sendOn(s: SmtpSession, from: string, to: string[], subject = 'tenancy test'): Promise<TxReplies> {
  return s.send(from, to, message(from, to, subject));
}

/** One transaction on a fresh, logged-in connection. */
async function send(
  port: number,
  acct: Account,
  from: string,
  to: string[],
  subject?: string,
): Promise<TxReplies> {
  const s = await login(port, acct);
  try {
    return await sendOn(s, from, to, subject);
  } finally {
    await s.quit();
  }
}

/** Asserts that the whole transaction was accepted and returns the queue id. */
function queued(r: TxReplies): string {
  assert.equal(r.mail.code, 250, r.mail.text);
  r.rcpts.forEach((x) => assert.equal(x.code, 250, x.text));
  assert.equal(r.data?.code, 250, r.data?.text ?? r.dataCmd.text);
  return QUEUED_RE.exec(r.data.text)![1];
}

/** MAIL and one RCPT without DATA (what the relay answers to a recipient), then RSET. */
async function rcptReply(s: SmtpSession, from: string, to: string): Promise<{ code: number; text: string }> {
  const [mail, rcpt] = await s.command(`MAIL FROM:<${from}>`, `RCPT TO:<${to}>`);
  assert.equal(mail.code, 250, mail.text);
  await s.command('RSET');
  return rcpt;
}

// ---- admin API ----

interface QueuedMessage {
  id: string;
  tenant: string;
  from: string;
  attempts: number;
  nextAttemptAt: number;
  rcpts: { address: string; status: string; lastReply?: string }[];
}
interface QueueSummary {
  depth: number;
  byTenant: Record<string, number>;
  byState: Record<'new' | 'deferred' | 'active', number>;
  messages: QueuedMessage[];
}
interface TenantView {
  name: string;
  state: 'active' | 'warning' | 'paused';
  reason?: string;
  by?: string;
  pausedUntil?: number;
  queue: { messages: number; bytes: number };
}
interface SuppressionItem {
  tenant: string;
  address: string;
  reason: string;
  source: string;
}
interface Change {
  seq: number;
  op: 'add' | 'remove';
  tenant: string;
  address: string;
}
interface WindowUsage {
  unit: string;
  limit: number;
  used: number;
}

async function api<T>(
  port: number,
  urlPath: string,
  opts: { method?: string; token?: string; body?: unknown } = {},
): Promise<{ status: number; body: T; headers: Headers }> {
  const res = await fetch(`http://127.0.0.1:${port}${urlPath}`, {
    method: opts.method ?? 'GET',
    headers: {
      ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
      ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* /metrics is text */
  }
  return { status: res.status, body: body as T, headers: res.headers };
}

/** GET that must answer 200. */
async function get<T>(port: number, urlPath: string, token?: string): Promise<T> {
  const r = await api<T>(port, urlPath, { token });
  assert.equal(r.status, 200, `GET ${urlPath}: ${JSON.stringify(r.body)}`);
  return r.body;
}

/** The value of one sample of a Prometheus text exposition (labels must match exactly), or undefined. */
function metric(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries(
      [...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]),
    );
    const want = Object.entries(labels);
    if (want.length === Object.keys(have).length && want.every(([k, v]) => have[k] === v))
      return Number(m[3]);
  }
  return undefined;
}

async function metrics(port: number): Promise<string> {
  return get<string>(port, '/metrics');
}

// ---- a relay in this process, with a clock the test moves ----

interface LocalRelay {
  relay: Relay;
  smtp: number;
  admin: number;
  now(): number;
  /** Moves the clock to `t` and runs whatever became due. */
  setClock(t: number): void;
  stop(): Promise<void>;
}

async function startLocal(
  prefix: string,
  doc: Record<string, unknown>,
  start: number,
  secrets: Record<string, string>,
): Promise<LocalRelay> {
  const dir = await makeTmpDir(`cartero-${prefix}-`);
  await mkdir(path.join(dir, 'secrets'), { recursive: true });
  for (const [f, v] of Object.entries(secrets))
    await writeFile(path.join(dir, 'secrets', f), v, { mode: 0o600 });
  let clock = start;
  const cfg = resolveConfig(
    { version: 1, listeners: [{ name: 'smtp', port: 0 }], admin: { port: 0 }, ...doc },
    dir,
  );
  const relay = new Relay(cfg, { log: createLogger('silent'), now: () => clock });
  try {
    await relay.start();
  } catch (e) {
    await removeTmpDir(dir);
    throw e;
  }
  return {
    relay,
    smtp: relay.inbound.ports.smtp,
    admin: relay.admin.port,
    now: () => clock,
    setClock(t) {
      clock = t;
      relay.engine.kick();
    },
    async stop() {
      await relay.stop(2000);
      await removeTmpDir(dir);
    },
  };
}

/** A smarthost route to a test MX (no TLS). */
function routeTo(mx: TestMx): Record<string, unknown> {
  return { default: { type: 'smarthost', smarthost: { host: mx.address, port: mx.port, tls: 'none' } } };
}

/**
 * Tests against a real clock whose limits are counted in UTC hour or day windows: when the current window
 * ends within `marginMs`, wait for the next one, so the test does not straddle a boundary.
 */
async function clearOfWindowEnd(unitMs: number, marginMs: number): Promise<void> {
  if (unitMs - (Date.now() % unitMs) >= marginMs) return;
  await waitFor(() => Date.now() % unitMs < unitMs / 2, {
    timeoutMs: marginMs + 2000,
    intervalMs: 100,
    what: 'the next UTC window',
  });
}

// =====================================================================================================

describe('tenants, egress pools, suppressions and the admin token (relay process)', () => {
  const TOKEN = `admin-${randomBytes(12).toString('hex')}`;
  const secrets = { 'acme.password': ACME.pass, 'globex.password': GLOBEX.pass, 'admin.token': TOKEN };
  const POOL_IPS: Record<string, string> = {
    '127.0.3.1': 'mta1.acme.test',
    '127.0.3.2': 'mta2.acme.test',
    '127.0.3.3': 'mta3.globex.test',
  };
  let mx: TestMx;
  let relay: RelayProc;

  const config = (extra: Record<string, unknown> = {}) => ({
    hostname: 'relay.tenancy.test',
    tenants: [
      tenant('acme', ACME, { ipPool: 'acme-pool' }),
      tenant('globex', GLOBEX, { ipPool: 'globex-pool', senderDomains: ['globex.test', '*.globex.test'] }),
    ],
    ipPools: [
      {
        name: 'acme-pool',
        addresses: [
          { ip: '127.0.3.1', ehlo: 'mta1.acme.test' },
          { ip: '127.0.3.2', ehlo: 'mta2.acme.test' },
        ],
      },
      { name: 'globex-pool', addresses: [{ ip: '127.0.3.3', ehlo: 'mta3.globex.test' }] },
    ],
    // deferred mail waits long enough not to be retried during the test
    queue: { retry: { initial: '10m', factor: 2, max: '1h' } },
    routing: routeTo(mx),
    admin: { tokenFile: 'admin.token' },
    ...extra,
  });
  const adm = <T>(urlPath: string, opts: { method?: string; body?: unknown } = {}) =>
    api<T>(relay.adminPort, urlPath, { token: TOKEN, ...opts });

  before(async () => {
    mx = await startTestMx({ address: '127.0.4.40', name: 'mx.dest.test' });
    relay = await startRelay({ config: config(), secrets });
  });

  after(async () => {
    await relay?.cleanup();
    await mx?.close();
  });

  test('each account sends as its tenant, only from its sender domains; the queue and metrics say whose mail it is', async () => {
    const port = relay.ports.smtp;
    queued(await send(port, ACME, 'x@acme.test', ['ok-t1@dest.test'], 'from acme'));
    const got = await waitFor(() => mx.byRecipient('ok-t1@dest.test')[0]);
    assert.equal(got.mailFrom, 'x@acme.test');

    // acme may not send as globex: refused at MAIL, naming the tenant's senderDomains
    const foreign = await send(port, ACME, 'x@globex.test', ['ok-t1b@dest.test']);
    assert.equal(foreign.mail.code, 550);
    assert.match(foreign.mail.text, /^550 5\.7\.1 /);
    assert.match(foreign.mail.text, /globex\.test is not in the senderDomains of tenant acme \(acme\.test\)/);
    assert.notEqual(foreign.dataCmd.code, 354, 'nothing was sent');
    // globex's wildcard covers its subdomains, but not acme's domain
    queued(await send(port, GLOBEX, 'news@mail.globex.test', ['ok-t1c@dest.test']));
    assert.equal((await send(port, GLOBEX, 'x@acme.test', ['ok-t1d@dest.test'])).mail.code, 550);

    // mail that stays queued records its tenant
    const acmeId = queued(await send(port, ACME, 'x@acme.test', ['tempfail+t1@dest.test']));
    const globexId = queued(await send(port, GLOBEX, 'x@globex.test', ['tempfail+t1@dest.test']));
    let last: QueueSummary | undefined;
    const q = await waitFor(
      async () => {
        last = (await adm<QueueSummary>('/queue')).body;
        return last.byState.deferred === 2 && last;
      },
      { what: 'two deferred messages' },
    ).catch((e: Error) => assert.fail(`${e.message}: ${JSON.stringify(last)}`));
    assert.deepEqual(q.byTenant, { acme: 1, globex: 1 });
    assert.deepEqual(
      q.messages.map((m) => [m.id, m.tenant]).sort(),
      [
        [acmeId, 'acme'],
        [globexId, 'globex'],
      ].sort(),
    );
    const onlyGlobex = (await adm<{ messages: QueuedMessage[] }>('/queue/messages?tenant=globex')).body;
    assert.deepEqual(
      onlyGlobex.messages.map((m) => m.id),
      [globexId],
    );
    const acmeView = (await adm<TenantView>('/tenants/acme')).body;
    assert.equal(acmeView.queue.messages, 1);

    const text = await metrics(relay.adminPort);
    assert.equal(metric(text, 'cartero_messages_received_total', { tenant: 'acme' }), 2);
    assert.equal(metric(text, 'cartero_messages_received_total', { tenant: 'globex' }), 2);
    assert.equal(metric(text, 'cartero_queue_depth', { tenant: 'acme' }), 1);

    // clean up for the next tests
    for (const id of [acmeId, globexId])
      assert.equal((await adm(`/queue/messages/${id}`, { method: 'DELETE' })).status, 200);
  });

  test("each tenant's mail leaves from its own pool addresses with their EHLO names, spread over the pool", async () => {
    const port = relay.ports.smtp;
    const acme = await login(port, ACME);
    const globex = await login(port, GLOBEX);
    try {
      for (let i = 0; i < 6; i++) queued(await sendOn(acme, 'x@acme.test', [`ok-pool-a${i}@dest.test`]));
      for (let i = 0; i < 3; i++) queued(await sendOn(globex, 'x@globex.test', [`ok-pool-g${i}@dest.test`]));
    } finally {
      await Promise.all([acme.quit(), globex.quit()]);
    }
    const of = (prefix: string, n: number): ReceivedMessage[] =>
      Array.from({ length: n }, (_, i) => mx.byRecipient(`ok-pool-${prefix}${i}@dest.test`)[0]);
    await waitFor(() => of('a', 6).every(Boolean) && of('g', 3).every(Boolean), {
      what: 'every pool test message at the MX',
    });
    for (const m of of('a', 6)) {
      assert.ok(['127.0.3.1', '127.0.3.2'].includes(m.remoteAddress), `acme mail from ${m.remoteAddress}`);
      assert.equal(m.helo, POOL_IPS[m.remoteAddress], 'EHLO name of the address it left from');
    }
    for (const m of of('g', 3)) {
      assert.equal(m.remoteAddress, '127.0.3.3');
      assert.equal(m.helo, 'mta3.globex.test');
    }
    const a1 = of('a', 6).filter((m) => m.remoteAddress === '127.0.3.1').length;
    assert.ok(Math.abs(a1 - (6 - a1)) <= 1, `acme's six messages are spread evenly (${a1} from 127.0.3.1)`);

    // the per-address counter agrees with what the MX saw from each address
    const text = await metrics(relay.adminPort);
    for (const [ip, pool] of [
      ['127.0.3.1', 'acme-pool'],
      ['127.0.3.2', 'acme-pool'],
      ['127.0.3.3', 'globex-pool'],
    ]) {
      const seen = mx.messages.filter((m) => m.remoteAddress === ip).length;
      assert.equal(metric(text, 'cartero_egress_sent_total', { pool, ip }), seen, `egress counter of ${ip}`);
    }
  });

  test('a hard bounce suppresses the recipient for that tenant only, across a restart, until it is removed', async () => {
    const victim = 'reject@dest.test';
    queued(await send(relay.ports.smtp, ACME, 'x@acme.test', [victim], 'to a bad address'));
    const listed = await waitFor(async () => {
      const l = (await adm<{ items: SuppressionItem[] }>('/suppressions?tenant=acme')).body;
      return l.items.find((s) => s.address === victim);
    });
    assert.equal(listed.tenant, 'acme');
    assert.equal(listed.source, 'bounce');
    assert.match(listed.reason, /5\.1\.1/);

    const check = async (acct: Account, from: string, to = victim) => {
      const s = await login(relay.ports.smtp, acct);
      try {
        return await rcptReply(s, from, to);
      } finally {
        await s.quit();
      }
    };
    const again = await check(ACME, 'x@acme.test');
    assert.equal(again.code, 550);
    assert.match(again.text, /^550 5\.1\.1 .*suppressed for tenant acme/);
    assert.equal((await check(ACME, 'x@acme.test', 'Reject@Dest.TEST')).code, 550, 'whatever the case');
    // globex never bounced on it: it may still send there
    assert.equal((await check(GLOBEX, 'x@globex.test')).code, 250);
    assert.deepEqual((await adm<{ items: SuppressionItem[] }>('/suppressions?tenant=globex')).body.items, []);

    // a restart on the same spool keeps the list
    await relay.stop();
    relay = await startRelay({ config: config(), secrets, dir: relay.root });
    assert.equal((await check(ACME, 'x@acme.test')).code, 550, 'still suppressed after a restart');

    const del = await adm<Change>(`/suppressions/acme/${encodeURIComponent(victim)}`, { method: 'DELETE' });
    assert.equal(del.status, 200);
    assert.equal((await check(ACME, 'x@acme.test')).code, 250, 'accepted again once removed');
    assert.equal(
      (await adm(`/suppressions/acme/${encodeURIComponent(victim)}`, { method: 'DELETE' })).status,
      404,
    );
    const feed = (await adm<{ changes: Change[] }>('/suppressions/changes?since=0')).body.changes.filter(
      (c) => c.tenant === 'acme' && c.address === victim,
    );
    assert.deepEqual(
      feed.map((c) => c.op),
      ['add', 'remove'],
    );
    assert.ok(feed[0].seq < feed[1].seq);
  });

  test('the admin API needs the bearer token (metrics and health stay open); GET /config names the config', async () => {
    const port = relay.adminPort;
    const anon = await api(port, '/queue');
    assert.equal(anon.status, 401);
    assert.equal(anon.headers.get('www-authenticate'), 'Bearer');
    assert.equal((await api(port, '/queue', { token: 'wrong' })).status, 401);
    assert.equal((await api(port, '/tenants/acme/pause', { method: 'POST' })).status, 401);
    assert.equal(
      (await get<TenantView>(port, '/tenants/acme', TOKEN)).state,
      'active',
      'the pause was refused',
    );
    assert.equal((await api(port, '/queue', { token: TOKEN })).status, 200);
    assert.equal((await api(port, '/metrics')).status, 200);
    assert.equal((await api(port, '/healthz')).status, 200);

    const c1 = await get<{ version: number; hash: string }>(port, '/config', TOKEN);
    assert.equal(c1.version, 1);
    assert.match(c1.hash, /^[0-9a-f]{64}$/);
    assert.equal(metric(await metrics(port), 'cartero_config_info', { hash: c1.hash }), 1);

    const restart = async (cfg: Record<string, unknown>, files: Record<string, string>) => {
      await relay.stop();
      relay = await startRelay({ config: cfg, secrets: files, dir: relay.root });
    };
    // the same config again: the same hash
    await restart(config(), secrets);
    assert.equal((await get<{ hash: string }>(relay.adminPort, '/config', TOKEN)).hash, c1.hash);
    // a changed config file: another hash
    await restart(config({ hostname: 'relay2.tenancy.test' }), secrets);
    const c2 = await get<{ hash: string }>(relay.adminPort, '/config', TOKEN);
    assert.notEqual(c2.hash, c1.hash);
    // a new token (same config file): another hash, and only the new token opens the API
    const rotated = `admin-${randomBytes(12).toString('hex')}`;
    await restart(config({ hostname: 'relay2.tenancy.test' }), { ...secrets, 'admin.token': rotated });
    assert.equal((await api(relay.adminPort, '/config', { token: TOKEN })).status, 401);
    const c3 = await get<{ hash: string }>(relay.adminPort, '/config', rotated);
    assert.notEqual(c3.hash, c2.hash);
    assert.notEqual(c3.hash, c1.hash);
  });
});

// =====================================================================================================

describe('warm-up caps of a new address (in process, injected clock)', () => {
  let mx: TestMx;
  let r: LocalRelay;
  const day1 = Date.parse('2026-12-01T09:00:00Z');

  before(async () => {
    mx = await startTestMx({ address: '127.0.4.43' });
    r = await startLocal(
      'warmup',
      {
        tenants: [tenant('initech', ACME, { ipPool: 'warm' })],
        ipPools: [
          {
            name: 'warm',
            addresses: [{ ip: '127.0.3.4', ehlo: 'warm1.initech.test' }],
            warmup: { start: '2026-12-01', dailyCaps: [3, 6] },
          },
        ],
        routing: routeTo(mx),
      },
      day1,
      { 'initech.password': ACME.pass },
    );
  });

  after(async () => {
    await r?.stop();
    await mx?.close();
  });

  test('day 1 lets 3 messages leave the address, day 2 six; the rest waits in the queue without a bounce', async () => {
    const q = () => api<QueueSummary>(r.admin, '/queue').then((x) => x.body);
    /** Waits until no message is new or being delivered, and every message was either sent or is queued. */
    const settled = (what: string) =>
      waitFor(
        async () => {
          const v = await q();
          return v.byState.new === 0 && v.byState.active === 0 && v.depth + mx.messages.length === 10 && v;
        },
        { what },
      );
    const s = await login(r.smtp, ACME);
    try {
      // sent back to back: their deliveries overlap, so each must see the others' picks
      for (let i = 0; i < 10; i++) queued(await sendOn(s, 'x@initech.test', [`ok-warm${i}@dest.test`]));
    } finally {
      await s.quit();
    }

    // day 1: three leave, seven are deferred to the next UTC day by the cap
    const day1Queue = await settled('every message attempted on day 1');
    assert.equal(mx.messages.length, 3, 'day 1 cap: 3');
    for (const m of mx.messages) {
      assert.equal(m.remoteAddress, '127.0.3.4');
      assert.equal(m.helo, 'warm1.initech.test');
    }
    const day2 = Date.parse('2026-12-02T00:00:00Z');
    assert.equal(day1Queue.messages.length, 7);
    for (const m of day1Queue.messages) {
      assert.equal(m.rcpts[0].status, 'pending');
      assert.match(m.rcpts[0].lastReply ?? '', /at the daily cap/);
      assert.equal(m.nextAttemptAt, day2, 'waits for the next UTC day');
    }
    let text = await metrics(r.admin);
    assert.equal(
      metric(text, 'cartero_egress_cap_usage_ratio', { pool: 'warm', ip: '127.0.3.4', window: 'day' }),
      1,
    );
    assert.equal(metric(text, 'cartero_dsn_generated_total', { action: 'failed' }) ?? 0, 0, 'no bounce');
    assert.equal(metric(text, 'cartero_dsn_generated_total', { action: 'delayed' }) ?? 0, 0, 'no warning');

    // day 2 (after UTC midnight): the cap is 6; the seven are due at once
    r.setClock(day2 + 1000);
    await settled('every message attempted on day 2');
    assert.equal(mx.messages.length, 9, 'day 2 cap: 6 more');
    text = await metrics(r.admin);
    assert.equal(metric(text, 'cartero_egress_sent_total', { pool: 'warm', ip: '127.0.3.4' }), 9);

    // day 3: past the schedule, no warm-up cap
    r.setClock(Date.parse('2026-12-03T00:00:01Z'));
    await settled('every message attempted on day 3');
    assert.equal(mx.messages.length, 10);
    assert.equal((await q()).depth, 0);
    assert.equal(mx.messages.filter((m) => m.mailFrom === '').length, 0, 'no DSN ever');
  });
});

// =====================================================================================================

describe('rate limits', () => {
  test('a tenant over its hourly limit gets 451 4.7.1 with the time to wait, and is accepted again the next hour (injected clock)', async () => {
    const mx = await startTestMx({ address: '127.0.4.44' });
    const start = Date.parse('2026-12-01T10:20:00Z');
    const r = await startLocal(
      'ratelimit',
      {
        tenants: [tenant('umbrella', ACME, { rateLimits: ['5/h'] }), tenant('hooli', GLOBEX)],
        routing: routeTo(mx),
      },
      start,
      { 'umbrella.password': ACME.pass, 'hooli.password': GLOBEX.pass },
    );
    try {
      const to = Array.from({ length: 6 }, (_, i) => `ok-rl${i}@dest.test`);
      const tx = await send(r.smtp, ACME, 'x@umbrella.test', to);
      assert.deepEqual(
        tx.rcpts.map((x) => x.code),
        [250, 250, 250, 250, 250, 451],
      );
      // 40 minutes to the next UTC hour
      assert.match(
        tx.rcpts[5].text,
        /^451 4\.7\.1 Rate limit 5\/h reached for tenant umbrella; try again in 2400 s$/,
      );
      assert.equal(tx.data?.code, 250, 'the five accepted recipients are queued');
      await mx.waitForMessages(1);
      assert.deepEqual(mx.messages[0].rcptTo, to.slice(0, 5));
      assert.equal(metric(await metrics(r.admin), 'cartero_rate_limited_total', { tenant: 'umbrella' }), 1);
      // another tenant is not limited
      queued(await send(r.smtp, GLOBEX, 'x@hooli.test', to));

      const s = await login(r.smtp, ACME);
      try {
        r.setClock(Date.parse('2026-12-01T10:50:00Z'));
        const late = await rcptReply(s, 'x@umbrella.test', 'ok-rl6@dest.test');
        assert.equal(late.code, 451);
        assert.match(late.text, /try again in 600 s$/);
        assert.equal(metric(await metrics(r.admin), 'cartero_rate_limited_total', { tenant: 'umbrella' }), 2);
        r.setClock(Date.parse('2026-12-01T11:00:00Z'));
        assert.equal((await rcptReply(s, 'x@umbrella.test', 'ok-rl6@dest.test')).code, 250, 'a new hour');
      } finally {
        await s.quit();
      }
      const usage = (await api<{ tenants: Record<string, WindowUsage[]> }>(r.admin, '/ratelimits')).body;
      assert.deepEqual(
        usage.tenants.umbrella.map((u) => [u.unit, u.limit, u.used]),
        [['h', 5, 1]],
      );
    } finally {
      await r.stop();
      await mx.close();
    }
  });

  test('a daily limit holds across a restart', async () => {
    const mx = await startTestMx({ address: '127.0.4.41' });
    const config = { tenants: [tenant('acme', ACME, { rateLimits: ['3/d'] })], routing: routeTo(mx) };
    const secrets = { 'acme.password': ACME.pass };
    // the restart takes about a second: keep clear of UTC midnight
    await clearOfWindowEnd(DAY, 20_000);
    let relay = await startRelay({ config, secrets });
    try {
      queued(await send(relay.ports.smtp, ACME, 'x@acme.test', ['ok-d1@dest.test', 'ok-d2@dest.test']));
      await relay.stop();
      relay = await startRelay({ config, secrets, dir: relay.root });
      const tx = await send(relay.ports.smtp, ACME, 'x@acme.test', ['ok-d3@dest.test', 'ok-d4@dest.test']);
      assert.deepEqual(
        tx.rcpts.map((x) => x.code),
        [250, 451],
      );
      assert.match(tx.rcpts[1].text, /^451 4\.7\.1 Rate limit 3\/d reached for tenant acme/);
      await mx.waitForMessages(2);
      assert.equal(mx.messages.flatMap((m) => m.rcptTo).length, 3, 'three recipients in the day, in all');
    } finally {
      await relay.cleanup();
      await mx.close();
    }
  });

  test('two relays with half of the limit each accept at most the limit together', async () => {
    const mx = await startTestMx({ address: '127.0.4.42' });
    const config = {
      tenants: [tenant('acme', ACME, { rateLimits: ['10/h'] })],
      fleet: { rateLimitShare: 0.5 },
      routing: routeTo(mx),
    };
    const secrets = { 'acme.password': ACME.pass };
    await clearOfWindowEnd(HOUR, 10_000);
    const relays = await Promise.all([startRelay({ config, secrets }), startRelay({ config, secrets })]);
    try {
      const to = Array.from({ length: 8 }, (_, i) => `ok-fleet${i}@dest.test`);
      const txs = await Promise.all(relays.map((x) => send(x.ports.smtp, ACME, 'x@acme.test', to)));
      const accepted = txs.map((tx) => tx.rcpts.filter((x) => x.code === 250).length);
      for (const [i, tx] of txs.entries()) {
        assert.equal(accepted[i], 5, `relay ${i} accepts its half of 10/h`);
        assert.equal(tx.data?.code, 250);
        for (const refused of tx.rcpts.slice(5)) assert.match(refused.text, /^451 4\.7\.1 Rate limit 10\/h /);
      }
      assert.ok(accepted[0] + accepted[1] <= 10);
      await mx.waitForMessages(2);
      assert.equal(mx.messages.flatMap((m) => m.rcptTo).length, 10);
    } finally {
      await Promise.all(relays.map((x) => x.cleanup()));
      await mx.close();
    }
  });
});

// =====================================================================================================

describe('quota and the bounce-rate guard (in process, injected clock)', () => {
  test('a tenant over its queue quota gets 452 4.3.1 while the MX is down; other tenants are not affected', async () => {
    const mx = await startTestMx({ address: '127.0.4.45' });
    const start = Date.parse('2026-12-01T10:00:00Z');
    const r = await startLocal(
      'quota',
      {
        tenants: [tenant('acme', ACME, { quota: { messages: 2 } }), tenant('globex', GLOBEX)],
        routing: routeTo(mx),
      },
      start,
      { 'acme.password': ACME.pass, 'globex.password': GLOBEX.pass },
    );
    try {
      mx.setMode('down-421');
      const s = await login(r.smtp, ACME);
      try {
        queued(await sendOn(s, 'x@acme.test', ['ok-q1@dest.test']));
        queued(await sendOn(s, 'x@acme.test', ['ok-q2@dest.test']));
        const third = await sendOn(s, 'x@acme.test', ['ok-q3@dest.test']);
        assert.equal(third.mail.code, 452);
        assert.match(third.mail.text, /^452 4\.3\.1 Tenant acme is over its queue quota \(2 messages/);
        assert.notEqual(third.dataCmd.code, 354);
        queued(await send(r.smtp, GLOBEX, 'x@globex.test', ['ok-q4@dest.test']));
        const view = (await api<TenantView>(r.admin, '/tenants/acme')).body;
        assert.equal(view.queue.messages, 2);

        // the MX comes back: once acme's mail has left, it may send again
        await waitFor(async () => {
          const v = (await api<QueueSummary>(r.admin, '/queue')).body;
          return v.byState.deferred === 3;
        });
        mx.setMode('normal');
        r.setClock(start + HOUR);
        await mx.waitForMessages(3);
        await waitFor(
          async () => (await api<TenantView>(r.admin, '/tenants/acme')).body.queue.messages === 0,
        );
        queued(await sendOn(s, 'x@acme.test', ['ok-q3@dest.test']));
      } finally {
        await s.quit();
      }
    } finally {
      await r.stop();
      await mx.close();
    }
  });

  describe('bounce-rate guard', () => {
    let mx: TestMx;
    let r: LocalRelay;
    const start = Date.parse('2026-12-01T10:00:00Z');
    const tenantView = async () => (await api<TenantView>(r.admin, '/tenants/acme')).body;

    before(async () => {
      mx = await startTestMx({ address: '127.0.4.46' });
      r = await startLocal(
        'guard',
        {
          tenants: [
            tenant('acme', ACME, {
              bounceRate: { minVolume: 10, pause: 0.2, warn: 0.1, cooldown: '1h' },
            }),
            tenant('globex', GLOBEX),
          ],
          routing: routeTo(mx),
        },
        start,
        { 'acme.password': ACME.pass, 'globex.password': GLOBEX.pass },
      );
    });

    after(async () => {
      await r?.stop();
      await mx?.close();
    });

    /** Ten recipients, three of them hard bounces (550 5.1.1), plus `extra`. */
    const batch = (tag: string, extra: string[] = []) => [
      ...Array.from({ length: 7 }, (_, i) => `ok-${tag}${i}@dest.test`),
      ...Array.from({ length: 3 }, (_, i) => `reject+${tag}${i}@dest.test`),
      ...extra,
    ];

    test('30% hard bounces pause the tenant: new mail gets 451 4.7.1 with the reason; queued mail stays; resume', async () => {
      const waiting = 'tempfail-once+g@dest.test';
      const id = queued(await send(r.smtp, ACME, 'x@acme.test', batch('a', [waiting])));
      const paused = await waitFor(async () => {
        const v = await tenantView();
        return v.state === 'paused' && v;
      });
      assert.match(paused.reason ?? '', /hard bounce rate 30\.0% \(3 of 10 recipients/);
      assert.match(paused.reason ?? '', /pause threshold 20\.0%/);
      assert.equal(paused.by, 'guard');
      assert.equal(paused.pausedUntil, start + HOUR, 'the cool-down');

      const refused = await send(r.smtp, ACME, 'x@acme.test', ['ok-refused@dest.test']);
      assert.equal(refused.mail.code, 451);
      assert.match(refused.mail.text, /^451 4\.7\.1 Tenant acme is paused: hard bounce rate 30\.0%/);
      const text = await metrics(r.admin);
      assert.equal(metric(text, 'cartero_tenant_paused', { tenant: 'acme' }), 1);
      assert.equal(metric(text, 'cartero_tenant_paused', { tenant: 'globex' }), 0);
      // another tenant is not paused
      queued(await send(r.smtp, GLOBEX, 'x@globex.test', ['ok-other@dest.test']));

      // the recipient that was deferred is still queued, not bounced
      const msg = await waitFor(
        async () => {
          const mine = (await api<{ messages: QueuedMessage[] }>(r.admin, '/queue/messages?tenant=acme'))
            .body;
          const m = mine.messages.find((x) => x.id === id);
          assert.ok(m, 'the message is still queued');
          return m.attempts >= 1 && m;
        },
        { what: 'the first attempt recorded' },
      );
      assert.deepEqual(
        msg.rcpts.filter((x) => x.status === 'pending').map((x) => x.address),
        [waiting],
      );
      assert.match(msg.rcpts.find((x) => x.address === waiting)?.lastReply ?? '', /^451 /);
      // the sender heard about the three hard bounces only
      const dsns = await waitFor(() => {
        const d = mx.messages.filter((m) => m.mailFrom === '');
        return d.length > 0 && d;
      });
      assert.equal(dsns.length, 1);
      assert.deepEqual(
        parseDsn(dsns[0].raw).recipients.map((x) => x['final-recipient']),
        [0, 1, 2].map((i) => `rfc822; reject+a${i}@dest.test`),
      );

      const resumed = await api<TenantView>(r.admin, '/tenants/acme/resume', { method: 'POST' });
      assert.equal(resumed.status, 200);
      assert.equal(resumed.body.state, 'active');
      queued(await send(r.smtp, ACME, 'x@acme.test', ['ok-resumed@dest.test']));
      assert.equal(metric(await metrics(r.admin), 'cartero_tenant_paused', { tenant: 'acme' }), 0);
      // and the queued recipient is delivered at its retry
      r.setClock(start + 30 * 60_000);
      await waitFor(() => mx.byRecipient(waiting).length > 0, { what: 'the deferred recipient delivered' });
    });

    test('a pause by the guard ends by itself after the cool-down', async () => {
      queued(await send(r.smtp, ACME, 'x@acme.test', batch('b')));
      const paused = await waitFor(async () => {
        const v = await tenantView();
        return v.state === 'paused' && v;
      });
      assert.equal((await send(r.smtp, ACME, 'x@acme.test', ['ok-b-refused@dest.test'])).mail.code, 451);
      r.setClock(paused.pausedUntil! - 1);
      assert.equal((await tenantView()).state, 'paused', 'a millisecond before the end of the cool-down');
      r.setClock(paused.pausedUntil!);
      const after1 = await tenantView();
      assert.equal(after1.state, 'active');
      assert.equal(after1.by, 'guard');
      queued(await send(r.smtp, ACME, 'x@acme.test', ['ok-b-after@dest.test']));
    });
  });
});
