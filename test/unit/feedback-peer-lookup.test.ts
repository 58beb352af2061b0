/**
 * The fleet's sent-message lookup (relay/src/feedback/peer-lookup.ts, ADR 020) against a real HTTP peer on
 * 127.0.0.1 that holds every request: lookups past the running and waiting bounds are answered at once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import type { RelayConfig } from '../../relay/src/config.js';
import type { IdentityResolver } from '../../relay/src/identity/resolver.js';
import {
  MAX_FLEET_LOOKUPS,
  MAX_FLEET_WAITING,
  PeerLookup,
  peerLookupMetrics,
  type FleetLookup,
} from '../../relay/src/feedback/peer-lookup.js';
import { createLogger } from '../../relay/src/log.js';

test('lookups beyond the running and waiting bounds end at once (a cut listener connection does not end its lookup)', async () => {
  const held: http.ServerResponse[] = [];
  const server = http.createServer((_req, res) => void held.push(res));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  try {
    const cfg = {
      feedback: { peerLookup: { host: '127.0.0.1', port, timeoutMs: 60_000, maxPeers: 1 } },
      admin: {},
    } as unknown as RelayConfig;
    const peers = new PeerLookup({
      cfg: () => cfg,
      resolver: () => ({}) as IdentityResolver,
      metrics: peerLookupMetrics(new Registry()),
      log: createLogger('silent'),
    });
    const pending = Array.from({ length: MAX_FLEET_LOOKUPS + MAX_FLEET_WAITING }, (_, i) =>
      peers.find(`m${i}@acme.test`, 'acme'),
    );
    let extra: FleetLookup | undefined;
    void peers.find('one-more@acme.test', 'acme').then((r) => (extra = r));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(extra, { result: 'error', error: 'too many fleet lookups waiting' });
    // the peer answers: those running and waiting complete
    for (const res of held.splice(0)) res.destroy();
    server.on('request', (_req, res: http.ServerResponse) => res.destroy());
    const done = await Promise.all(pending);
    assert.ok(done.every((r) => r.result === 'miss' && r.failed === 1));
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});
