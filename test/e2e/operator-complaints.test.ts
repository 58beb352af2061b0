/**
 * The complaint-rate guard through the operator (ADR 018): spec.tenants[].complaintRate reaches the relays,
 * a complaint pause on one pod of a 2-pod fleet is copied to the other with its reason, and the status
 * shows the tenant Paused with the fleet's complaint figures.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor } from '../helpers/poll.js';
import { credentialsSecret, operatorE2e } from '../helpers/operator-e2e.js';
import { sendMail } from '../helpers/swaks.js';

const NS = 'complaints';
const t = operatorE2e({ name: 'operator-complaints', namespace: NS, mxAddress: '127.0.4.151' });

interface TenantView {
  state: string;
  by?: string;
  reason?: string;
  delivered?: number;
  complaints?: number;
}

describe('complaint-rate guard through the operator', { timeout: 180_000 }, () => {
  it('the schema refuses complaintRate.pause below warn', async () => {
    await assert.rejects(
      t.apply(
        t.relayManifest({
          replicas: 1,
          tenants:
            "    - {name: bad, trustedNetworks: ['127.0.0.0/8'], complaintRate: {warn: 0.01, pause: 0.005}}",
        }),
      ),
      /complaintRate\.pause must not be below complaintRate\.warn/,
    );
  });

  it('a complaint pause on one pod reaches the other pod, and status shows it', async () => {
    await t.apply(
      credentialsSecret({ name: 'digest-smtp', namespace: NS, username: 'digest', password: 'pw-digest' }),
    );
    await t.apply(
      t.relayManifest({
        replicas: 2,
        tenants:
          "    - {name: news, trustedNetworks: ['127.0.0.0/8'], complaintRate: {warn: 0.2, pause: 0.5, minVolume: 2, window: 1h, cooldown: 0ms}}\n" +
          '    - {name: digest, credentialsSecret: digest-smtp, complaintRate: {warn: 0.2, pause: 0.5, minVolume: 4, window: 1h, cooldown: 0ms}}',
        extra: '  listeners: [{name: smtp, port: 25, auth: optional}]',
      }),
    );
    await t.waitForCurrentConfig().catch(async (e) => {
      throw new Error(`not Ready: ${JSON.stringify((await t.getRelay())?.status?.conditions)}`, { cause: e });
    });
    const ip = await t.podIp('fleet-0');
    for (const to of ['ok-c1@example.test', 'ok-c2@example.test']) {
      const info = await sendMail(2525, { host: ip, from: 'app@news.example', to: [to] });
      assert.match(info.response, /^250 /);
    }
    await waitFor(
      async () => (await t.admin<TenantView>('fleet-0', 'GET', '/tenants/news')).delivered === 2,
      {
        timeoutMs: 30_000,
        intervalMs: 250,
        what: 'two recipients delivered from fleet-0',
      },
    );

    const paused = await t.admin<TenantView>('fleet-0', 'POST', '/tenants/news/complaints', {
      recipient: 'ok-c1@example.test',
    });
    assert.equal(paused.state, 'paused');
    assert.equal(paused.by, 'guard');
    assert.match(paused.reason ?? '', /^complaint rate 50\.00% \(1 complaints over 2 delivered/);

    const copy = await waitFor(
      async () => {
        const s = await t.admin<TenantView>('fleet-1', 'GET', '/tenants/news');
        return s.state === 'paused' ? s : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 250, what: 'news paused on fleet-1' },
    );
    assert.equal(copy.by, 'fleet');
    assert.match(copy.reason ?? '', /^paused on fleet-0: complaint rate 50\.00%/);
    assert.equal(copy.complaints, 0, 'the copy does not count the complaint twice');

    const st = await waitFor(
      async () => {
        const n = (await t.getRelay())?.status?.tenants?.find((x) => x.name === 'news');
        return n?.state === 'Paused' && n.complaints === 1 ? n : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 250, what: 'status shows news Paused with its complaint' },
    );
    assert.match(st.reason ?? '', /^complaint rate 50\.00%/);
    assert.equal(st.complaintRate, 0.5);

    // the copied suppression (source complaint on fleet-0) reaches fleet-1 too
    await waitFor(
      async () =>
        (
          await t.admin<{ items: { address: string }[] }>('fleet-1', 'GET', '/suppressions?tenant=news')
        ).items.some((i) => i.address === 'ok-c1@example.test'),
      { timeoutMs: 30_000, intervalMs: 250, what: 'suppression copied to fleet-1' },
    );

    await t.admin('fleet-0', 'POST', '/tenants/news/resume', {});
    await waitFor(
      async () => (await t.admin<TenantView>('fleet-1', 'GET', '/tenants/news')).state === 'active',
      {
        timeoutMs: 30_000,
        intervalMs: 250,
        what: 'news resumed on fleet-1',
      },
    );
  });

  it('complaints spread over the pods count fleet-wide: the operator pauses the tenant on the summed rate', async () => {
    // digest: minVolume 4; two recipients delivered and one complaint on each pod: no pod judges its own
    // window (2 < 4), the fleet's is 2 of 4 = 50 %, the pause threshold
    for (const pod of ['fleet-0', 'fleet-1']) {
      const ip = await t.podIp(pod);
      for (const n of [1, 2]) {
        const info = await sendMail(2525, {
          host: ip,
          from: 'app@digest.example',
          to: [`ok-${pod}-${n}@example.test`],
          auth: { user: 'digest', pass: 'pw-digest' },
        });
        assert.match(info.response, /^250 /);
      }
      await waitFor(async () => (await t.admin<TenantView>(pod, 'GET', '/tenants/digest')).delivered === 2, {
        timeoutMs: 30_000,
        intervalMs: 250,
        what: `two digest recipients delivered from ${pod}`,
      });
    }
    const own = await t.admin<TenantView>('fleet-0', 'POST', '/tenants/digest/complaints', {
      recipient: 'ok-fleet-0-1@example.test',
    });
    assert.equal(own.state, 'active', 'one pod alone does not judge below minVolume');
    await t.admin('fleet-1', 'POST', '/tenants/digest/complaints', {
      recipient: 'ok-fleet-1-1@example.test',
    });
    for (const pod of ['fleet-0', 'fleet-1']) {
      const s = await waitFor(
        async () => {
          const v = await t.admin<TenantView>(pod, 'GET', '/tenants/digest');
          return v.state === 'paused' ? v : undefined;
        },
        { timeoutMs: 30_000, intervalMs: 250, what: `digest paused on ${pod}` },
      );
      assert.match(
        s.reason ?? '',
        /fleet complaint rate 50\.00% \(2 complaints over 4 delivered recipients on 2 relays in the last 1h\)/,
      );
    }
  });
});
