// The complaint-rate guard (ADR 018) in a relay process: mail delivered to a test MX makes the
// denominator, complaints entered through the admin API (a suppression with source "complaint", and
// POST /tenants/<name>/complaints) make the tenant warn, then pause: new mail is refused like a
// bounce-rate pause, the metrics and the suppression list say so.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestMx, type TestMx } from '../helpers/testmx.js';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { SmtpSession } from '../helpers/smtpsession.js';
import { waitFor } from '../helpers/poll.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';
import { resolveConfig } from '../../relay/src/config.js';
import { createLogger } from '../../relay/src/log.js';
import { TenantRuntime } from '../../relay/src/tenant-runtime.js';

interface TenantView {
  name: string;
  state: 'active' | 'warning' | 'paused';
  reason?: string;
  by?: string;
  pausedUntil?: number;
  complaintRate: number;
  delivered: number;
  complaints: number;
}

async function api<T>(port: number, urlPath: string, body?: unknown): Promise<{ status: number; body: T }> {
  const res = await fetch(`http://127.0.0.1:${port}${urlPath}`, {
    method: body === undefined ? 'GET' : 'POST',
    ...(body !== undefined
      ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }
      : {}),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* /metrics is text */
  }
  return { status: res.status, body: parsed as T };
}

/** The value of one sample of a Prometheus text exposition (labels must match exactly), or undefined. */
function metric(text: string, name: string, labels: Record<string, string>): number | undefined {
  const want = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(',');
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${want}} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

const message = (from: string, to: string[]) =>
  `From: <${from}>\r\nTo: ${to.map((t) => `<${t}>`).join(', ')}\r\nSubject: complaints\r\n\r\nhello\r\n`;

describe('complaint-rate guard (relay process)', () => {
  let mx: TestMx;
  let relay: RelayProc;
  const view = async (t = 'acme') => (await api<TenantView>(relay.adminPort, `/tenants/${t}`)).body;

  before(async () => {
    mx = await startTestMx({ address: '127.0.4.150' });
    relay = await startRelay({
      config: {
        tenants: [
          {
            name: 'acme',
            trustedNetworks: ['127.0.0.1/32'],
            complaintRate: { warn: 0.05, pause: 0.1, minVolume: 20, window: '1h', cooldown: '0ms' },
          },
          { name: 'globex', trustedNetworks: ['127.0.0.2/32'] },
        ],
        routing: {
          default: { type: 'smarthost', smarthost: { host: mx.address, port: mx.port, tls: 'none' } },
        },
      },
    });
  });

  after(async () => {
    await relay?.cleanup();
    await mx?.close();
  });

  test('20 delivered, one complaint warns at 5 %, the second pauses at 10 %: new mail 451 4.7.1', async () => {
    const to = Array.from({ length: 20 }, (_, i) => `ok-${i}@dest.test`);
    const s = await SmtpSession.open(relay.ports.smtp);
    try {
      const r = await s.send('news@acme.test', to, message('news@acme.test', to));
      assert.equal(r.data?.code, 250, r.data?.text);
    } finally {
      await s.quit();
    }
    await mx.waitForMessages(1);
    const delivered = await waitFor(async () => {
      const v = await view();
      return v.delivered === 20 && v;
    });
    assert.equal(delivered.state, 'active');
    assert.equal(delivered.complaintRate, 0);

    // bad requests are refused
    assert.equal(
      (await api(relay.adminPort, '/tenants/acme/complaints', { recipient: 'nobody' })).status,
      400,
    );
    assert.equal(
      (await api(relay.adminPort, '/tenants/nosuch/complaints', { recipient: 'a@b.test' })).status,
      404,
    );
    assert.equal((await view()).complaints, 0, 'a refused request counts nothing');

    // a suppression added by hand with source "complaint" counts
    const sup = await api(relay.adminPort, '/suppressions', {
      tenant: 'acme',
      address: 'ok-3@dest.test',
      reason: 'FBL report from a mailbox provider',
      source: 'complaint',
    });
    assert.equal(sup.status, 201);
    const warned = await view();
    assert.equal(warned.state, 'warning');
    assert.equal(warned.complaints, 1);
    assert.match(
      warned.reason ?? '',
      /^complaint rate 5\.00% \(1 complaints over 20 delivered recipients in the last 1h\) reached the warning threshold 5\.00%$/,
    );
    // a suppression with another source does not
    await api(relay.adminPort, '/suppressions', {
      tenant: 'acme',
      address: 'ok-4@dest.test',
      source: 'admin',
    });
    assert.equal((await view()).complaints, 1);

    // the complaint endpoint counts and suppresses
    const c = await api<TenantView>(relay.adminPort, '/tenants/acme/complaints', {
      recipient: 'ok-7@dest.test',
      reason: 'ARF report',
    });
    assert.equal(c.status, 201);
    assert.equal(c.body.state, 'paused');
    assert.equal(c.body.by, 'guard');
    assert.equal(c.body.pausedUntil, undefined, 'cooldown 0ms: until resumed');
    assert.match(
      c.body.reason ?? '',
      /^complaint rate 10\.00% \(2 complaints over 20 .*pause threshold 10\.00%$/,
    );

    const list = (
      await api<{ items: { address: string; source: string }[] }>(
        relay.adminPort,
        '/suppressions?tenant=acme',
      )
    ).body.items;
    assert.deepEqual(
      list
        .filter((x) => x.source === 'complaint')
        .map((x) => x.address)
        .sort(),
      ['ok-3@dest.test', 'ok-7@dest.test'],
    );

    // new mail of the paused tenant is refused as a bounce-rate pause would be
    const s2 = await SmtpSession.open(relay.ports.smtp);
    try {
      const [mail] = await s2.command('MAIL FROM:<news@acme.test>');
      assert.equal(mail.code, 451);
      assert.match(mail.text, /^451 4\.7\.1 Tenant acme is paused: complaint rate 10\.00%/);
    } finally {
      await s2.quit();
    }
    const text = (await api<string>(relay.adminPort, '/metrics')).body;
    assert.equal(metric(text, 'cartero_complaints_total', { tenant: 'acme', source: 'admin' }), 2);
    assert.equal(metric(text, 'cartero_tenant_complaint_rate', { tenant: 'acme' }), 0.1);
    assert.equal(metric(text, 'cartero_tenant_paused', { tenant: 'acme' }), 1);
    assert.equal(metric(text, 'cartero_tenant_paused', { tenant: 'globex' }), 0);

    // resumed by hand: active, with an empty complaint window
    const resumed = await api<TenantView>(relay.adminPort, '/tenants/acme/resume', {});
    assert.equal(resumed.body.state, 'active');
    assert.equal(resumed.body.complaints, 0);
    assert.equal(resumed.body.delivered, 0);
  });
});

describe('complaint(tenant, recipient): the ComplaintSink of the feedback listener (in process)', () => {
  test('counts against the tenant, suppresses the recipient (source complaint); an unknown tenant is ignored', async () => {
    const dir = await makeTmpDir('cartero-complaint-sink-');
    const cfg = resolveConfig(
      {
        version: 1,
        listeners: [{ name: 'smtp', port: 0 }],
        tenants: [{ name: 'acme', complaintRate: { minVolume: 1, warn: 0.5, pause: 1 } }],
      },
      dir,
    );
    const rt = await TenantRuntime.open(cfg, Date.now, createLogger('silent'));
    try {
      const counted: string[] = [];
      rt.onComplaint = (tenant, source) => counted.push(`${tenant}/${source}`);
      await rt.onOutcome('acme', 'ok-1@dest.test', 'delivered', '2.0.0', '250 ok');
      rt.complaint('acme', 'ok-1@dest.test');
      rt.complaint('nosuch', 'x@dest.test');
      await waitFor(() => rt.suppressions.isSuppressed('acme', 'ok-1@dest.test'), {
        what: 'the suppression',
      });
      assert.equal(rt.suppressions.isSuppressed('acme', 'ok-1@dest.test')?.source, 'complaint');
      assert.deepEqual(counted, ['acme/report']);
      const st = rt.guard.state('acme');
      assert.deepEqual([st.state, st.complaints, st.delivered], ['paused', 1, 1]);
      assert.equal(rt.guard.state('nosuch').complaints, 0);
    } finally {
      await rt.close();
      await removeTmpDir(dir);
    }
  });
});
