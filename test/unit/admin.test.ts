/**
 * AdminServer's dispatch in process: a handler failing on its own answers 500 with a generic message (the
 * error is logged, never sent), an HttpError keeps its status and text, and path parameters arrive decoded.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Logger } from 'pino';
import { AdminServer, HttpError } from '../../relay/src/admin.js';
import type { RelayMetrics } from '../../relay/src/metrics.js';
import type { DeliveryEngine } from '../../relay/src/delivery/engine.js';

const logged: Record<string, unknown>[] = [];
const log = { error: (o: Record<string, unknown>) => logged.push(o) } as unknown as Logger;
const admin = new AdminServer({
  metrics: {} as RelayMetrics,
  engine: {} as DeliveryEngine,
  ready: () => true,
  token: () => undefined,
  config: () => ({ version: 1, hash: 'x', revision: null }),
  log,
});
let base: string;

before(async () => {
  admin.route('GET', '/boom', () => {
    throw new Error('ENOENT: /var/lib/cartero/secret/path');
  });
  admin.route('POST', '/boom-later', async (r) => {
    await r.body();
    return (undefined as unknown as { x: () => [number, unknown] }).x();
  });
  admin.route('GET', '/conflict', () => {
    throw new HttpError(409, 'busy, try again');
  });
  admin.route('GET', '/echo/([^/]+)', (r) => [200, { param: r.params[0] }]);
  base = `http://127.0.0.1:${await admin.start('127.0.0.1', 0)}`;
});

after(async () => {
  await admin.stop();
});

test('a handler that throws something other than an HttpError: 500, generic message, logged', async () => {
  for (const [method, p] of [
    ['GET', '/boom'],
    ['POST', '/boom-later'],
  ]) {
    logged.length = 0;
    const res = await fetch(base + p, { method, body: method === 'POST' ? '{}' : undefined });
    assert.equal(res.status, 500);
    assert.equal(res.headers.get('content-type'), 'application/json');
    const text = await res.text();
    assert.deepEqual(JSON.parse(text), { error: 'internal error' });
    assert.doesNotMatch(text, /secret|TypeError|undefined/);
    assert.equal(logged.length, 1);
    assert.equal(logged[0].event, 'admin.error');
    assert.equal(logged[0].path, p);
    assert.match(String(logged[0].err), method === 'GET' ? /secret\/path/ : /undefined/);
  }
});

test('an HttpError keeps its status and message and is not logged', async () => {
  logged.length = 0;
  const res = await fetch(`${base}/conflict`);
  assert.equal(res.status, 409);
  assert.deepEqual(await res.json(), { error: 'busy, try again' });
  assert.equal(logged.length, 0);
});

test('path parameters arrive percent-decoded; a malformed escape is a 400', async () => {
  const ok = await fetch(`${base}/echo/a%40b%2Fc%20d`);
  assert.deepEqual(await ok.json(), { param: 'a@b/c d' });
  for (const bad of ['%E0%A4%A', '%', '%G1', 'x%00', 'x%7F']) {
    const res = await fetch(`${base}/echo/${bad}`);
    assert.equal(res.status, 400, bad);
    assert.match(((await res.json()) as { error: string }).error, /percent-escape|control character/);
  }
  assert.equal(logged.length, 0);
});
