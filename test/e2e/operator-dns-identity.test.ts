/**
 * End to end, DNS identity through the operator: an IpPool's addresses checked through a relay pod's
 * resolver (a real dnsmasq serving a matching, a mismatching and a missing PTR record), each case in the
 * IpPool status read with kubectl; requireFcrdns leaving unverified addresses unallocated (the fleet's
 * first pod gets the first address so that it can check, the second pod waits until its address is
 * verified); and status.dkim[].published flipping once DNS serves the record.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import type { IpPool, SmtpRelay } from '../../operator/src/api/types.js';
import { Registry } from 'prom-client';
import { cond, operatorE2e } from '../helpers/operator-e2e.js';
import { startDns, type DnsServer, type DnsZone } from '../helpers/dnsmasq.js';
import { waitFor } from '../helpers/poll.js';

const NS = 'ids';
const [GOOD, FORWARD, MISSING] = ['127.0.3.141', '127.0.3.142', '127.0.3.143'];
const metrics = new Registry();
const e2e = operatorE2e({
  name: 'operator-dns-identity-e2e',
  namespace: NS,
  mxAddress: '127.0.4.93',
  metrics,
  dnsCheckIntervalMs: 2000,
});
const { kubectl, apply, getJson } = e2e;

/** `fixed`: MISSING gets its PTR and A records, and the DKIM record `txt` is served. */
const zone = (fixed?: { txt: string }): DnsZone => ({
  localDomains: ['test', '3.0.127.in-addr.arpa'],
  a: [
    { name: 'mta1.ids.test', ip: GOOD },
    { name: 'mta2.ids.test', ip: '127.0.4.142' }, // not the address its PTR comes from
    ...(fixed ? [{ name: 'mta3.ids.test', ip: MISSING }] : []),
  ],
  ptr: [{ ip: FORWARD, name: 'mta2.ids.test' }],
  txt: fixed ? [{ name: 's1._domainkey.shop.test', value: fixed.txt }] : [],
});

let dns: DnsServer;
before(async () => {
  dns = await startDns(zone());
});
after(async () => {
  await dns?.stop();
});

const pool = () => getJson<IpPool>('ipp', 'ids');
const entry = (p: IpPool | undefined, ip: string) => p?.status?.addresses?.find((a) => a.ip === ip);

describe('DNS identity through the operator', { timeout: 240_000 }, () => {
  it('checks each pool address through a relay pod; requireFcrdns allocates only verified ones', async () => {
    const key = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    await apply(`
apiVersion: v1
kind: Secret
metadata: {name: shop-dkim, namespace: ${NS}}
stringData:
  private.key: |
    ${key.trim().replace(/\n/g, '\n    ')}
---
apiVersion: cartero.io/v1alpha1
kind: IpPool
metadata: {name: ids, namespace: ${NS}}
spec:
  requireFcrdns: true
  addresses:
    - {ip: ${GOOD}, ehlo: mta1.ids.test}
    - {ip: ${FORWARD}, ehlo: mta2.ids.test}
    - {ip: ${MISSING}, ehlo: mta3.ids.test}
`);
    await apply(
      e2e.relayManifest({
        replicas: 2,
        tenants: `    - name: shop
      trustedNetworks: ['127.0.0.0/8']
      ipPool: ids
      dkim:
        keys:
          - {domain: shop.test, selector: s1, algorithm: ed25519-sha256, secretRef: {name: shop-dkim}}`,
        extra: `  listeners: [{name: smtp, port: 25, auth: optional}]\n  dns: {servers: ['${dns.server}']}`,
      }),
    );

    // the first pod gets the first address (nothing could be checked yet), then checks the pool
    const checked = await waitFor(
      async () => {
        const p = await pool();
        return p?.status?.addresses?.length === 3 ? p : undefined;
      },
      { what: 'the pool checked through fleet-0', timeoutMs: 90_000, intervalMs: 500 },
    ).catch(async (e: Error) => {
      const smr = await getJson<SmtpRelay>('smr', 'fleet');
      throw new Error(
        `${e.message}: ${JSON.stringify((await pool())?.status)} ${JSON.stringify(smr?.status)}`,
        {
          cause: e,
        },
      );
    });
    assert.deepEqual(
      checked.status!.addresses!.map((a) => [a.ip, a.result, a.ptr]),
      [
        [GOOD, 'Verified', ['mta1.ids.test']],
        [FORWARD, 'ForwardMismatch', ['mta2.ids.test']],
        [MISSING, 'PtrMissing', []],
      ],
    );
    const verified = cond(checked, 'ReverseDNSVerified')!;
    assert.equal(verified.status, 'False');
    assert.equal(verified.reason, 'PtrMissing');
    assert.match(verified.message!, /PtrMissing: 127\.0\.3\.143; ForwardMismatch: 127\.0\.3\.142/);
    assert.match(await kubectl(['get', 'ipp', 'ids', '-n', NS]), /ids\s+3\s+1\s+1\/3\s/);
    // fleet-1 waits: the free addresses are not verified
    const held = await waitFor(
      async () => {
        const p = await pool();
        return cond(p, 'Ready')?.reason === 'PoolExhausted' ? p : undefined;
      },
      { what: 'fleet-1 held back' },
    );
    assert.deepEqual(
      held.status!.allocations!.map((a) => [a.pod, a.ip]),
      [['fleet-0', GOOD]],
    );
    assert.match(cond(held, 'Ready')!.message!, /requireFcrdns\): 127\.0\.3\.142, 127\.0\.3\.143/);
    assert.match(
      await metrics.metrics(),
      /cartero_ippool_address_verified\{namespace="ids",pool="ids",ip="127\.0\.3\.142"\} 0/,
    );

    // the DKIM record is not served yet
    const relay = await waitFor(
      async () => {
        const r = await getJson<SmtpRelay>('smr', 'fleet');
        return r?.status?.dkim?.[0]?.dnsResult ? r : undefined;
      },
      { what: 'status.dkim checked', timeoutMs: 30_000 },
    );
    const record = relay.status!.dkim![0];
    assert.deepEqual([record.published, record.dnsResult], [false, 'Missing']);

    // publish MISSING's records and the DKIM record: a later check verifies the address, fleet-1 gets
    // it, and the record reads published
    const port = dns.port;
    await dns.stop();
    dns = await startDns(zone({ txt: record.value! }), { port });
    const fixed = await waitFor(
      async () => {
        const p = await pool();
        return entry(p, MISSING)?.result === 'Verified' && p?.status?.allocations?.length === 2
          ? p
          : undefined;
      },
      { what: `${MISSING} verified and allocated`, timeoutMs: 60_000, intervalMs: 500 },
    );
    assert.deepEqual(
      fixed.status!.allocations!.map((a) => [a.pod, a.ip]),
      [
        ['fleet-0', GOOD],
        ['fleet-1', MISSING],
      ],
    );
    assert.equal(cond(fixed, 'ReverseDNSVerified')?.reason, 'ForwardMismatch');
    await waitFor(
      async () => {
        const r = await getJson<SmtpRelay>('smr', 'fleet');
        const d = r?.status?.dkim?.[0];
        return d?.published === true && d.dnsResult === 'Published';
      },
      { what: 'status.dkim[0].published', timeoutMs: 60_000, intervalMs: 500 },
    );
    assert.match(
      await kubectl(['get', 'smr', 'fleet', '-n', NS, '-o', 'jsonpath={.status.dkim[0].published}']),
      /^true$/,
    );
  });
});
