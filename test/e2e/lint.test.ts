/**
 * The bulk-sender lint end to end (ADR 014): a real relay, a real dnsmasq serving SPF TXT records (and
 * SERVFAIL for one domain), a test MX. Two bulk tenants sending from a pool address (127.0.3.61): one
 * under `report` (accepted, counted in cartero_lint_violations_total, shown by GET /lint with a sample)
 * and one under `enforce` (550 naming the rules; SPF pass, fail and temperror).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { startDns, type DnsServer } from '../helpers/dnsmasq.js';
import { startTestMx, type TestMx } from '../helpers/testmx.js';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { sendMail } from '../helpers/swaks.js';
import { waitFor } from '../helpers/poll.js';
import type { LintSummaryResponse } from '../../relay/src/contract/index.js';

const TOKEN = 'lint-test-admin-token';
const POOL_IP = '127.0.3.61';
const KEYED = ['spf-ok.test', 'spf-bad.test', 'spf-err.test'];
const ONE_CLICK = {
  'List-Unsubscribe': '<mailto:u@spf-ok.test>, <https://spf-ok.test/u/1>',
  'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click',
};
const pem = () =>
  generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

describe('bulk-sender lint', () => {
  let dns: DnsServer;
  let mx: TestMx;
  let relay: RelayProc;

  const auth = (user: string) => ({ user, pass: `${user} secret` });
  const admin = async <T>(p: string): Promise<T> =>
    (await fetch(`http://127.0.0.1:${relay.adminPort}${p}`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    }).then((r) => (p === '/metrics' ? r.text() : r.json()))) as T;
  const metric = async (re: RegExp) => {
    const m = re.exec(await admin<string>('/metrics'));
    return m ? Number(m[1]) : 0;
  };

  before(async () => {
    mx = await startTestMx({ address: '127.0.4.50', name: 'mx.dest.test' });
    dns = await startDns({
      mx: [{ domain: 'dest.test', host: 'mx.dest.test', pref: 10 }],
      a: [{ name: 'mx.dest.test', ip: '127.0.4.50' }],
      txt: [
        { name: 'spf-ok.test', value: 'v=spf1 ip4:127.0.3.0/24 -all' },
        { name: 'spf-bad.test', value: 'v=spf1 ip4:192.0.2.0/24 -all' },
        { name: 'nokey.test', value: 'v=spf1 ip4:127.0.3.0/24 -all' },
      ],
      servfail: ['spf-err.test'],
    });
    const tenant = (name: string, policy: string) => ({
      name,
      accounts: [{ username: name, passwordFile: `${name}.pass` }],
      ipPool: 'out',
      bulk: true,
      lint: { policy },
      dkim: {
        keys: KEYED.map((domain) => ({
          domain,
          selector: 's1',
          algorithm: 'ed25519-sha256',
          privateKeyFile: `${domain}.pem`,
        })),
      },
    });
    relay = await startRelay({
      config: {
        hostname: 'lint.cartero.test',
        tenants: [tenant('rep', 'report'), tenant('enf', 'enforce')],
        ipPools: [{ name: 'out', addresses: [{ ip: POOL_IP, ehlo: 'out.cartero.test', bind: false }] }],
        admin: { tokenFile: 'admin.token' },
        routing: { default: { type: 'mx' } },
        dns: { servers: [dns.server], allowPrivateTargets: ['127.0.0.0/8'], mxPort: mx.port, timeout: '2s' },
      },
      secrets: {
        'admin.token': TOKEN,
        'rep.pass': 'rep secret',
        'enf.pass': 'enf secret',
        ...Object.fromEntries(KEYED.map((d) => [`${d}.pem`, pem()])),
      },
    });
  });

  after(async () => {
    await relay?.cleanup();
    await Promise.all([mx?.close(), dns?.stop()]);
  });

  test('report: accepted and delivered, counted per rule, GET /lint shows the rules with a sample', async () => {
    // From a domain no key signs, no one-click headers, SPF of spf-bad.test does not name the pool address
    const messageId = '<report-1@unsigned.test>';
    const raw = [
      'From: News <news@unsigned.test>',
      'To: r1@dest.test',
      `Date: ${new Date().toUTCString()}`,
      `Message-ID: ${messageId}`,
      'Subject: report',
      '',
      'body',
      '',
    ].join('\r\n');
    const info = await sendMail(relay.ports.smtp, {
      from: 'app@spf-bad.test',
      to: ['r1@dest.test'],
      auth: auth('rep'),
      raw,
    });
    assert.match(info.response, /^250 /);
    await waitFor(() => (mx.byRecipient('r1@dest.test').length ? true : undefined), { what: 'delivery' });
    const view = await waitFor(
      async () => {
        const v = await admin<LintSummaryResponse>('/lint');
        return v.tenants.rep?.length === 3 ? v : undefined;
      },
      { what: 'the SPF violation in GET /lint' },
    );
    assert.equal(view.windowSeconds, 3600);
    assert.deepEqual(
      view.tenants.rep.map((r) => [r.rule, r.count, r.sample.messageId]),
      [
        ['dkim-alignment', 1, messageId],
        ['spf', 1, messageId],
        ['one-click-unsubscribe', 1, messageId],
      ],
    );
    assert.match(view.tenants.rep[0].sample.queueId, /^[0-9A-Z]{20}$/);
    assert.equal(view.tenants.enf, undefined);
    for (const rule of ['dkim-alignment', 'spf', 'one-click-unsubscribe'])
      assert.equal(
        await metric(new RegExp(`cartero_lint_violations_total\\{tenant="rep",rule="${rule}"\\} (\\d+)`)),
        1,
      );
    assert.equal(await metric(/cartero_lint_spf_checks_total\{result="fail"\} (\d+)/), 1);
    // a message that breaks nothing adds nothing
    const ok = await sendMail(relay.ports.smtp, {
      from: 'app@spf-ok.test',
      to: ['r2@dest.test'],
      auth: auth('rep'),
      headers: ONE_CLICK,
    });
    assert.match(ok.response, /^250 /);
    await waitFor(
      async () => ((await metric(/cartero_lint_spf_checks_total\{result="pass"\} (\d+)/)) ? true : undefined),
      {
        what: 'the SPF pass counted',
      },
    );
    assert.deepEqual(
      (await admin<LintSummaryResponse>('/lint')).tenants.rep.map((r) => r.count),
      [1, 1, 1],
    );
  });

  test('enforce: 550 naming the rules; aligned, one-click and SPF pass is accepted', async () => {
    const send = (from: string, o: { headers?: Record<string, string>; raw?: string } = {}) =>
      sendMail(relay.ports.smtp, { from, to: ['e@dest.test'], auth: auth('enf'), ...o });
    await assert.rejects(
      send('app@spf-ok.test'),
      /550 5\.7\.1 Refused by the bulk-sender lint \[one-click-unsubscribe\]/,
    );
    await assert.rejects(
      send('app@spf-ok.test', {
        headers: { ...ONE_CLICK, 'List-Unsubscribe': '<mailto:u@spf-ok.test>, <http://spf-ok.test/u>' },
      }),
      /550 5\.7\.1 .*\[one-click-unsubscribe\]: List-Unsubscribe has no https URI/,
    );
    assert.match((await send('app@spf-ok.test', { headers: ONE_CLICK })).response, /^250 /);
    await assert.rejects(
      send('app@spf-bad.test', { headers: ONE_CLICK }),
      /550 5\.7\.23 .*\[spf\]: SPF of spf-bad\.test does not authorise 127\.0\.3\.61 \(fail\)/,
    );
    await assert.rejects(
      send('app@nokey.test', { headers: ONE_CLICK }),
      /550 5\.7\.22 .*\[dkim-alignment\]: no DKIM key signs for the From domain nokey\.test/,
    );
    const raw = ['From: app@spf-ok.test', 'To: e@dest.test', 'Subject: no ids', '', 'body', ''].join('\r\n');
    await assert.rejects(
      send('app@spf-ok.test', { raw }),
      /550 5\.7\.1 .*\[one-click-unsubscribe, message-id, date\]/,
    );
    // SPF answers SERVFAIL: a temperror is no violation, the message is accepted
    assert.match((await send('app@spf-err.test', { headers: ONE_CLICK })).response, /^250 /);
    assert.ok((await metric(/cartero_lint_spf_checks_total\{result="temperror"\} (\d+)/)) >= 1);
    assert.equal(await metric(/cartero_lint_refused_total\{tenant="enf"\} (\d+)/), 5);
    const log = await relay.waitForLog(
      (l) => l.event === 'lint.refused' && (l.rules as string[]).includes('spf'),
    );
    assert.equal(log.tenant, 'enf');
    const view = await admin<LintSummaryResponse>('/lint');
    assert.deepEqual(
      view.tenants.enf.map((r) => [r.rule, r.count]),
      [
        ['dkim-alignment', 1],
        ['spf', 1],
        ['one-click-unsubscribe', 3],
        ['message-id', 1],
        ['date', 1],
      ],
    );
    // the two accepted messages arrive; the refused ones were never queued
    await waitFor(() => (mx.byRecipient('e@dest.test').length === 2 ? true : undefined), {
      what: 'the two accepted messages',
    });
    await waitFor(async () => ((await admin<{ depth: number }>('/queue')).depth === 0 ? true : undefined), {
      what: 'an empty queue',
    });
  });
});
