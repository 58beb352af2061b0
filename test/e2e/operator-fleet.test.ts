/**
 * End to end, the operator's fleet features: a spec the schema refuses, a missing Secret reported as
 * Degraded until it appears, IpPool addresses allocated to pods and used for their mail, an exhausted
 * pool, and tenant pauses and suppressions copied from one relay to the others.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { IpPool } from '../../operator/src/api/types.js';
import { cond, credentialsSecret, operatorE2e } from '../helpers/operator-e2e.js';
import { waitFor } from '../helpers/poll.js';
import { sendMail } from '../helpers/swaks.js';

const MX_ADDRESS = '127.0.4.91';
// egress addresses that stand in for public ones (DESIGN §5: 127.0.3.0/24)
const EGRESS = ['127.0.3.111', '127.0.3.112'];

const e2e = operatorE2e({ name: 'operator-fleet-e2e', namespace: 'team', mxAddress: MX_ADDRESS });
const { kubectl, apply, getJson, getRelay, podIp, admin } = e2e;

const relayYaml = (o: { tenants: string; replicas?: number }) =>
  e2e.relayManifest({ replicas: o.replicas ?? 2, tenants: o.tenants });
const poolYaml = (ips: string[]) => `
apiVersion: cartero.io/v1alpha1
kind: IpPool
metadata: {name: bulk, namespace: team}
spec:
  addresses:
${ips.map((ip, i) => `    - {ip: ${ip}, ehlo: o${i + 1}.bulk.example.com}`).join('\n')}
`;
const SECRET = credentialsSecret({
  name: 'news-smtp',
  namespace: 'team',
  username: 'news',
  password: 'pw-news',
});

describe('operator fleet features', { timeout: 240_000 }, () => {
  it('the schema refuses a bad SmtpRelay with the field path', async () => {
    const bad = relayYaml({ tenants: '    - {name: news}' }).replace(
      'terminationGracePeriodSeconds: 15',
      'terminationGracePeriodSeconds: 15\n  listeners: [{name: smtp, port: 25, tls: sometimes}]',
    );
    await assert.rejects(apply(bad), /spec\.listeners\[0\]\.tls.*Unsupported value: "sometimes"/s);
  });

  it('the schema and its CEL rules refuse client limits out of bounds, naming the field', async () => {
    const withLimits = (limits: string, listener: string) =>
      relayYaml({ tenants: '    - {name: news}' }).replace(
        'terminationGracePeriodSeconds: 15',
        `terminationGracePeriodSeconds: 15\n  listeners: [{name: smtp, port: 25, limits: ${listener}}]\n  limits: ${limits}`,
      );
    const refused = (yaml: string, want: RegExp[]) =>
      assert.rejects(apply(yaml), (e: Error) => {
        for (const re of want) assert.match(e.message, re);
        return true;
      });
    await refused(
      withLimits(
        '{maxConnectionsPerClient: 0, auth: {failuresPerConnection: 1000}}',
        '{connectionRatePerClient: fast}',
      ),
      [
        /spec\.limits\.maxConnectionsPerClient: Invalid value: 0: .*greater than or equal to 1/,
        /spec\.limits\.auth\.failuresPerConnection: Invalid value: 1000: .*less than or equal to 100/,
        /spec\.listeners\[0\]\.limits\.connectionRatePerClient: Invalid value: "fast"/,
      ],
    );
    await refused(
      withLimits(
        '{reservedForTrusted: 1000, stress: {idleTimeout: 61m}, auth: {lockout: 2d, maxFailureDelay: 61s}}',
        '{commandTimeout: 3600001ms, idleTimeout: 500ms}',
      ),
      [
        /spec\.limits\.reservedForTrusted: Invalid value: .*must be below maxConnections/,
        /spec\.limits\.stress\.idleTimeout: Invalid value: .*must be at most 1h/,
        /spec\.limits\.auth\.lockout: Invalid value: .*must be at most 1d/,
        /spec\.limits\.auth\.maxFailureDelay: Invalid value: .*must be at most 1m/,
        /spec\.listeners\[0\]\.limits\.commandTimeout: Invalid value: .*must be at most 1h/,
        /spec\.listeners\[0\]\.limits\.idleTimeout: Invalid value: .*must be at least 1s/,
      ],
    );
    // every knob at its largest is accepted (server-side dry run: nothing is stored)
    await kubectl(
      ['apply', '--dry-run=server', '-f', '-'],
      withLimits(
        '{maxConnections: 2000, reservedForTrusted: 1999, commandTimeout: 60m, idleTimeout: 3600000ms, maxHeaderLine: 65536, maxHeaderSize: 16777216, stress: {threshold: 1, commandTimeout: 1h, idleTimeout: 3600s}, auth: {failuresPerConnection: 100, failureDelay: 60s, maxFailureDelay: 1m, clientFailures: 1000000, accountFailures: 1000000, window: 1d, lockout: 24h}}',
        '{maxConnectionsPerClient: 1000000, connectionRatePerClient: 999999999/d, commandTimeout: 1h, idleTimeout: 1s, minDataRate: 1000000000}',
      ),
    );
  });

  it('a missing credentials Secret is Degraded with a reason; the tenant works once it exists', async () => {
    await apply(poolYaml(EGRESS));
    await apply(relayYaml({ tenants: '    - {name: news, credentialsSecret: news-smtp, ipPool: bulk}' }));
    const degraded = await waitFor(
      async () => {
        const d = cond(await getRelay(), 'Degraded');
        return d?.status === 'True' && d.reason === 'SecretMissing' ? d : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 250, what: 'Degraded=True SecretMissing' },
    );
    assert.match(degraded.message ?? '', /tenant news: Secret news-smtp .* not found/);
    const events = await kubectl(['get', 'events', '-n', 'team', '-o', 'jsonpath={.items[*].reason}']);
    assert.match(events, /SecretMissing/);
    await apply(SECRET);
    await waitFor(
      async () => {
        const r = await getRelay();
        return cond(r, 'Degraded')?.status === 'False' && cond(r, 'Ready')?.status === 'True';
      },
      { timeoutMs: 60_000, intervalMs: 250, what: 'Ready, not Degraded' },
    );
  });

  it('each pod sends from the IpPool address allocated to it', async () => {
    const pool = await getJson<IpPool>('ipp', 'bulk');
    const allocated: Record<string, string> = Object.fromEntries(
      (pool!.status!.allocations ?? []).map((a) => [a.pod, a.ip]),
    );
    assert.deepEqual(allocated, { 'fleet-0': EGRESS[0], 'fleet-1': EGRESS[1] });
    const table = await kubectl(['get', 'ipp', '-n', 'team']);
    assert.match(table, /bulk\s+2\s+2/);
    for (const pod of ['fleet-0', 'fleet-1']) {
      const to = `ok-pool-${pod}@example.test`;
      await sendMail(2525, {
        host: await podIp(pod),
        from: 'digest@news.example',
        to: [to],
        auth: { user: 'news', pass: 'pw-news' },
      });
      const [m] = await waitFor(() => (e2e.mx.byRecipient(to).length ? e2e.mx.byRecipient(to) : undefined), {
        timeoutMs: 30_000,
        what: to,
      });
      assert.equal(m.remoteAddress, pod === 'fleet-0' ? EGRESS[0] : EGRESS[1]);
      assert.equal(m.helo, pod === 'fleet-0' ? 'o1.bulk.example.com' : 'o2.bulk.example.com');
    }
  });

  it('a pool with too few addresses reports PoolExhausted; a new address resolves it', async () => {
    await apply(
      relayYaml({ tenants: '    - {name: news, credentialsSecret: news-smtp, ipPool: bulk}', replicas: 3 }),
    );
    const exhausted = await waitFor(
      async () => {
        const c = cond(await getJson<IpPool>('ipp', 'bulk'), 'Degraded');
        return c?.reason === 'PoolExhausted' ? c : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 250, what: 'PoolExhausted' },
    );
    assert.match(exhausted.message ?? '', /no free address for fleet-2/);
    const held = await waitFor(
      async () => {
        const c = cond(await getRelay(), 'Ready');
        return c?.reason === 'WaitingForAddresses' ? c : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 250, what: 'Ready=False WaitingForAddresses' },
    );
    assert.match(held.message ?? '', /waiting for IpPool bulk to allocate an address to fleet-2/);
    const pods = await kubectl(['get', 'pods', '-n', 'team', '-o', 'name']);
    assert.doesNotMatch(pods, /fleet-2/, 'no pod starts without its address');
    await apply(poolYaml([...EGRESS, '127.0.3.113']));
    await waitFor(
      async () => {
        const r = await getRelay();
        return (
          cond(await getJson<IpPool>('ipp', 'bulk'), 'Degraded')?.status === 'False' &&
          cond(r, 'Ready')?.status === 'True'
        );
      },
      { timeoutMs: 60_000, intervalMs: 250, what: 'three pods with an address, Ready' },
    );
  });

  it('a pause and a suppression on one relay reach every relay of the fleet', async () => {
    await admin('fleet-0', 'POST', '/tenants/news/pause', { reason: 'complaint spike' });
    for (const pod of ['fleet-1', 'fleet-2']) {
      const t = await waitFor(
        async () => {
          const s = await admin<{ state: string; by?: string; reason?: string }>(pod, 'GET', '/tenants/news');
          return s.state === 'paused' ? s : undefined;
        },
        { timeoutMs: 30_000, intervalMs: 250, what: `news paused on ${pod}` },
      );
      assert.equal(t.by, 'fleet');
      assert.match(t.reason ?? '', /paused on fleet-0: complaint spike/);
    }
    await waitFor(
      async () => (await getRelay())?.status?.tenants?.find((t) => t.name === 'news')?.state === 'Paused',
      { timeoutMs: 30_000, intervalMs: 250, what: 'status shows the tenant Paused' },
    );
    await admin('fleet-0', 'POST', '/tenants/news/resume', {});
    for (const pod of ['fleet-1', 'fleet-2'])
      await waitFor(
        async () => (await admin<{ state: string }>(pod, 'GET', '/tenants/news')).state === 'active',
        { timeoutMs: 30_000, intervalMs: 250, what: `news resumed on ${pod}` },
      );

    await admin('fleet-1', 'POST', '/suppressions', {
      tenant: 'news',
      address: 'gone@example.test',
      reason: 'test',
    });
    for (const pod of ['fleet-0', 'fleet-2'])
      await waitFor(
        async () =>
          (await admin<{ items: { address: string }[] }>(pod, 'GET', '/suppressions?tenant=news')).items.some(
            (i) => i.address === 'gone@example.test',
          ),
        { timeoutMs: 30_000, intervalMs: 250, what: `suppression copied to ${pod}` },
      );
    await assert.rejects(
      sendMail(2525, {
        host: await podIp('fleet-2'),
        from: 'digest@news.example',
        to: ['gone@example.test'],
        auth: { user: 'news', pass: 'pw-news' },
      }),
      /550 5\.1\.1/,
    );
  });
});
