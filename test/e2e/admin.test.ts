/** Admin API queue operations: paged listing, summary by state and domain, delete with and without a bounce. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestMx, type TestMx } from '../helpers/testmx.js';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { sendMail } from '../helpers/swaks.js';
import { waitFor } from '../helpers/poll.js';
import { unusedPort } from '../helpers/ports.js';
import { parseDsn } from '../helpers/dsn.js';

let mx: TestMx;
let relay: RelayProc;

async function api(method: string, p: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${relay.adminPort}${p}`, { method });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

before(async () => {
  mx = await startTestMx({ address: '127.0.4.80' });
  const down = await unusedPort('127.0.4.81');
  relay = await startRelay({
    config: {
      trustedNetworks: ['127.0.0.0/8'],
      queue: { retry: { initial: '1h', max: '1h' } },
      routing: {
        default: { type: 'smarthost', smarthost: { host: '127.0.4.81', port: down, tls: 'none' } },
        domains: [{ domain: 'sender.test', host: '127.0.4.80', port: mx.port, tls: 'none' }],
      },
    },
  });
});

after(async () => {
  await relay?.cleanup();
  await mx?.close();
});

test('lists, summarises and deletes queued mail; a delete with bounce tells the sender', async () => {
  for (let i = 0; i < 3; i++)
    await sendMail(relay.ports.smtp, {
      from: 'owner@sender.test',
      to: [`user${i}@far.test`],
      subject: `held ${i}`,
    });
  await waitFor(
    async () => ((await api('GET', '/queue')).json.byState as { deferred: number }).deferred === 3,
    { what: 'three deferred' },
  );
  const summary = (await api('GET', '/queue')).json;
  assert.deepEqual(summary.byDomain, { 'far.test': 3 });

  const page1 = (await api('GET', '/queue/messages?limit=2')).json as {
    messages: { id: string }[];
    next?: string;
  };
  assert.equal(page1.messages.length, 2);
  assert.ok(page1.next);
  const page2 = (await api('GET', `/queue/messages?limit=2&after=${page1.next}`)).json as {
    messages: { id: string }[];
    next?: string;
  };
  assert.equal(page2.messages.length, 1);
  assert.equal(page2.next, undefined);
  const [a, b] = page1.messages.map((m) => m.id);

  assert.equal((await api('DELETE', `/queue/messages/${a}?bounce=true`)).status, 200);
  assert.equal((await api('DELETE', `/queue/messages/${b}`)).status, 200);
  assert.equal((await api('DELETE', `/queue/messages/${b}`)).status, 404);

  const dsn = await waitFor(() => mx.byRecipient('owner@sender.test')[0], {
    what: 'the bounce for the deleted message',
  });
  const parsed = parseDsn(dsn.raw);
  assert.equal(parsed.recipients.length, 1);
  assert.equal(parsed.recipients[0]['action'], 'failed');
  assert.match(parsed.recipients[0]['diagnostic-code'] ?? '', /deleted from the queue by an administrator/);
  await waitFor(async () => (await api('GET', '/queue')).json.depth === 1, { what: 'one message left' });
  assert.equal(mx.byRecipient('owner@sender.test').length, 1, 'no bounce for the delete without one');
});
