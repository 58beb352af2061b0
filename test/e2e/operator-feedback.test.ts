/**
 * The feedback loop through the operator (ADR 016): an SmtpRelay with spec.feedback and a tenant with a
 * return path; the operator generates the token key, exposes the listener through the Service
 * fleet-feedback, shows the MX record in status.feedback.mx; mail leaves the relay pod from a tagged
 * return path, and a DSN sent to one pod's feedback listener suppresses the recipient there and, through
 * the operator's suppression sync, on the other pod.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { SmtpRelay } from '../../operator/src/api/types.js';
import { waitFor } from '../helpers/poll.js';
import { operatorE2e } from '../helpers/operator-e2e.js';
import { sendMail } from '../helpers/swaks.js';
import { SmtpSession } from '../helpers/smtpsession.js';

const NS = 'feedback';
const t = operatorE2e({ name: 'operator-feedback', namespace: NS, mxAddress: '127.0.4.96' });
const TENANT = `    - {name: news, trustedNetworks: ['127.0.0.0/8'], returnPath: {domain: bounces.news.example}, feedbackAddress: fbl@news.example}`;

describe('feedback loop through the operator', { timeout: 180_000 }, () => {
  it('refuses a return path without spec.feedback at admission', async () => {
    await assert.rejects(
      t.apply(
        t.relayManifest({
          replicas: 1,
          tenants: TENANT,
          extra: '  listeners: [{name: smtp, port: 25, auth: optional}]',
        }),
      ),
      /need spec.feedback/,
    );
  });

  it('renders the listener, shows the MX record, and a DSN to the pod suppresses the recipient', async () => {
    await t.apply(
      t.relayManifest({
        replicas: 2,
        tenants: TENANT,
        extra: [
          '  listeners: [{name: smtp, port: 25, auth: optional}]',
          '  feedback: {mxHost: mx.fleet.example, serviceType: ClusterIP}',
        ].join('\n'),
      }),
    );
    await t.waitForCurrentConfig().catch(async (e) => {
      throw new Error(`not Ready: ${JSON.stringify((await t.getRelay())?.status?.conditions)}`, { cause: e });
    });
    const relay = await waitFor(
      async () => {
        const r = await t.getRelay();
        return r?.status?.feedback?.mx?.length ? r : undefined;
      },
      { what: 'status.feedback.mx', timeoutMs: 30_000, intervalMs: 250 },
    );
    assert.deepEqual((relay as SmtpRelay).status!.feedback!.mx, [
      {
        tenant: 'news',
        domain: 'bounces.news.example',
        record: 'bounces.news.example. IN MX 10 mx.fleet.example.',
      },
    ]);
    const svc = await t.getJson<{ spec: { type: string; ports: { port: number; targetPort: string }[] } }>(
      'service',
      'fleet-feedback',
    );
    assert.equal(svc?.spec.type, 'ClusterIP');
    assert.deepEqual(
      svc?.spec.ports.map((p) => [p.port, p.targetPort]),
      [[25, 'feedback']],
    );
    const secret = await t.getJson<{ data: Record<string, string> }>('secret', 'fleet-secrets');
    assert.ok(Buffer.from(secret!.data['feedback.key'], 'base64').length >= 32, 'a generated token key');

    const ip = await t.podIp('fleet-0');
    const info = await sendMail(2525, { host: ip, from: 'app@news.example', to: ['ok-bob@example.test'] });
    assert.match(info.response, /^250 /);
    const [m] = await waitFor(
      () => {
        const x = t.mx.byRecipient('ok-bob@example.test');
        return x.length ? x : undefined;
      },
      { what: 'the message at the test MX', timeoutMs: 30_000 },
    );
    assert.match(m.mailFrom, /^bounce\+[a-z2-7]{48}@bounces\.news\.example$/);

    const dsn = [
      'From: MAILER-DAEMON@example.test',
      `To: <${m.mailFrom}>`,
      'Subject: Undelivered Mail Returned to Sender',
      'MIME-Version: 1.0',
      'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"',
      '',
      '--b1',
      'Content-Type: message/delivery-status',
      '',
      'Reporting-MTA: dns; mx.example.test',
      '',
      'Final-Recipient: rfc822; ok-bob@example.test',
      'Action: failed',
      'Status: 5.1.1',
      '',
      '--b1--',
      '',
    ].join('\r\n');
    const s = await SmtpSession.open(2526, { host: ip });
    try {
      const r = await s.send('', [m.mailFrom, 'someone@elsewhere.example'], dsn);
      assert.equal(r.rcpts[0].code, 250, r.rcpts[0].text);
      assert.equal(r.rcpts[1].code, 550, 'not a relay path');
      assert.equal(r.data?.code, 250, r.data?.text);
    } finally {
      await s.quit();
    }
    const list = await t.admin<{ items: { address: string; source: string }[] }>(
      'fleet-0',
      'GET',
      '/suppressions?tenant=news&limit=100',
    );
    assert.deepEqual(
      list.items.map((x) => [x.address, x.source]),
      [['ok-bob@example.test', 'bounce']],
    );
    // the other pod of the fleet gets it through the operator's suppression sync
    await waitFor(
      async () =>
        (
          await t.admin<{ items: { address: string; source: string }[] }>(
            'fleet-1',
            'GET',
            '/suppressions?tenant=news&limit=100',
          )
        ).items.some((x) => x.address === 'ok-bob@example.test'),
      { what: 'the suppression on fleet-1', timeoutMs: 30_000, intervalMs: 250 },
    );

    // without spec.feedback the Service goes away and the status shows no MX
    await t.apply(
      t.relayManifest({
        replicas: 2,
        tenants: "    - {name: news, trustedNetworks: ['127.0.0.0/8']}",
        extra: '  listeners: [{name: smtp, port: 25, auth: optional}]',
      }),
    );
    await waitFor(async () => !(await t.getJson('service', 'fleet-feedback')), {
      what: 'the feedback Service to be deleted',
      timeoutMs: 30_000,
      intervalMs: 250,
    });
    await waitFor(async () => !(await t.getRelay())?.status?.feedback, {
      what: 'status.feedback to be cleared',
      timeoutMs: 30_000,
      intervalMs: 250,
    });
  });
});
