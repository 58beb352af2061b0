/** Pool addresses whose PTR record does not name their EHLO hostname are reported (log and metric). */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startDns, type DnsServer } from '../helpers/dnsmasq.js';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { waitFor } from '../helpers/poll.js';

let dns: DnsServer;
let relay: RelayProc;

before(async () => {
  // dnsmasq's host records also answer the reverse (PTR) lookups
  dns = await startDns({
    a: [
      { name: 'mta1.good.test', ip: '127.0.3.50' },
      { name: 'someone-else.test', ip: '127.0.3.51' },
    ],
  });
  relay = await startRelay({
    config: {
      trustedNetworks: ['127.0.0.0/8'],
      dns: { servers: [dns.server], timeout: '2s' },
      ipPools: [
        {
          name: 'p',
          addresses: [
            { ip: '127.0.3.50', ehlo: 'mta1.good.test' },
            { ip: '127.0.3.51', ehlo: 'mta2.good.test' },
          ],
        },
      ],
    },
  });
});

after(async () => {
  await relay?.cleanup();
  await dns?.stop();
});

test('a PTR record that does not name the EHLO hostname is logged and shown as 0', async () => {
  const line = await relay.waitForLog((l) => l.event === 'pool.ptr.mismatch');
  assert.equal(line.ip, '127.0.3.51');
  assert.deepEqual(line.ptr, ['someone-else.test']);
  const metrics = await waitFor(
    async () => {
      const t = await (await fetch(`http://127.0.0.1:${relay.adminPort}/metrics`)).text();
      return /cartero_egress_ptr_match\{pool="p",ip="127.0.3.50"\} 1/.test(t) ? t : undefined;
    },
    { what: 'both addresses checked' },
  );
  assert.match(metrics, /cartero_egress_ptr_match\{pool="p",ip="127.0.3.51"\} 0/);
  assert.equal(
    relay.logs.filter((l) => l.event === 'pool.ptr.mismatch').length,
    1,
    'the matching address is not reported',
  );
});
