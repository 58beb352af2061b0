/**
 * Drain: a relay with a queue for a destination that is down hands every message to a peer relay
 * (authenticated as the fleet's peer account), keeping tenant, attempts, arrival time and DSN parameters;
 * once the destination is up, every message arrives exactly once and the drained relay's queue is empty.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestMx, type TestMx } from '../helpers/testmx.js';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { sendMail } from '../helpers/swaks.js';
import { waitFor } from '../helpers/poll.js';
import { unusedPort } from '../helpers/ports.js';

const TOKEN = 'drain-test-admin-token';

async function admin(
  relay: RelayProc,
  method: string,
  p: string,
  body?: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${relay.adminPort}${p}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

function relayConfig(mxPort: number, name: string): Record<string, unknown> {
  return {
    hostname: `${name}.cartero.test`,
    tenants: [
      { name: 'acme', trustedNetworks: ['127.0.0.1/32'], rateLimits: ['1000/h'] },
      { name: 'globex', accounts: [{ username: 'globex', passwordFile: 'globex.pass' }] },
    ],
    peer: { username: 'fleet-peer', passwordFile: 'peer.pass' },
    admin: { tokenFile: 'admin.token' },
    queue: { retry: { initial: '1s', factor: 1, max: '1s' } },
    routing: { default: { type: 'smarthost', smarthost: { host: '127.0.4.30', port: mxPort, tls: 'none' } } },
  };
}
const secrets = { 'peer.pass': 'peer secret', 'admin.token': TOKEN, 'globex.pass': 'globex secret' };

describe('drain', () => {
  let mxPort: number;
  let mx: TestMx | undefined;
  let a: RelayProc;
  let b: RelayProc;

  before(async () => {
    mxPort = await unusedPort('127.0.4.30'); // the destination is down until the test starts it
    a = await startRelay({ config: relayConfig(mxPort, 'relay-a'), secrets });
    b = await startRelay({ config: relayConfig(mxPort, 'relay-b'), secrets });
  });

  after(async () => {
    await a?.cleanup();
    await b?.cleanup();
    await mx?.close();
  });

  test('hands every queued message to the peer; each arrives exactly once when the destination is up', async () => {
    const N = 30;
    for (let i = 0; i < N; i++) {
      await sendMail(a.ports.smtp, {
        from: 'app@acme.test',
        to: [`ok-${i}@dest.test`],
        subject: `drain ${i}`,
        dsn: { envid: `ENV-${i}` },
      });
    }
    await sendMail(a.ports.smtp, {
      from: 'app@globex.test',
      to: ['ok-globex@dest.test'],
      auth: { user: 'globex', pass: 'globex secret' },
      // a tenant trying to forge hand-off metadata: stripped, since it is not the peer account
      headers: {
        'X-Cartero-Handoff': Buffer.from(
          JSON.stringify({ v: 1, tenant: 'acme', arrivedAt: 0, rcpts: [] }),
        ).toString('base64url'),
      },
    });
    await a.waitForLog((l) => l.event === 'deferred', 15_000);
    assert.equal((await admin(a, 'GET', '/queue')).json.depth, N + 1);

    const started = await admin(a, 'POST', '/drain', { peers: [{ host: '127.0.0.1', port: b.ports.smtp }] });
    assert.equal(started.status, 202);
    assert.equal(started.json.draining, true);
    // idempotent: asking again changes nothing
    assert.equal(
      (await admin(a, 'POST', '/drain', { peers: [{ host: '127.0.0.1', port: b.ports.smtp }] })).status,
      202,
    );

    await waitFor(async () => (await admin(a, 'GET', '/drain')).json.done === true, {
      timeoutMs: 20_000,
      what: 'relay A empty',
    });
    const status = (await admin(a, 'GET', '/drain')).json;
    assert.equal(status.handedOff, N + 1);
    assert.equal((await admin(a, 'GET', '/readyz')).status, 503, 'a draining relay is not ready');
    // A accepts nothing any more
    await assert.rejects(sendMail(a.ports.smtp, { from: 'app@acme.test', to: ['ok-late@dest.test'] }), /421/);

    // B holds them with their tenant, attempts and arrival time
    const q = (await admin(b, 'GET', '/queue?limit=100')).json as {
      depth: number;
      byTenant: Record<string, number>;
      messages: { attempts: number; tenant: string }[];
    };
    assert.equal(q.depth, N + 1);
    assert.deepEqual(
      q.byTenant,
      { acme: N, globex: 1 },
      'tenants kept; the forged header did not move globex mail to acme',
    );
    assert.ok(
      q.messages.every((m) => m.attempts >= 1),
      'attempts carried over',
    );

    mx = await startTestMx({ address: '127.0.4.30', port: mxPort, dsn: true });
    await (
      await fetch(`http://127.0.0.1:${b.adminPort}/flush`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}` },
      })
    ).json();
    await mx.waitForMessages(N + 1, 20_000);
    await waitFor(async () => (await admin(b, 'GET', '/queue')).json.depth === 0, { what: 'relay B empty' });
    const seen = mx.messages.flatMap((m) => m.rcptTo);
    assert.equal(seen.length, N + 1, 'exactly once each');
    assert.equal(new Set(seen).size, N + 1);
    for (const m of mx.messages)
      assert.doesNotMatch(m.raw.toString('latin1'), /X-Cartero-Handoff/i, 'metadata never leaves the fleet');
    const withEnvid = mx.messages.filter((m) => /^ENV-\d+$/.test(String(m.mailParams.ENVID)));
    assert.equal(withEnvid.length, N, 'DSN parameters kept');
  });

  test('a relay restarted while draining stays draining', async () => {
    const dir = a.root;
    await a.stop();
    a = await startRelay({ config: relayConfig(mxPort, 'relay-a'), secrets, dir });
    const s = (await admin(a, 'GET', '/drain')).json;
    assert.equal(s.draining, true);
    await assert.rejects(
      sendMail(a.ports.smtp, { from: 'app@acme.test', to: ['ok-after-restart@dest.test'] }),
      /421/,
    );
  });
});
