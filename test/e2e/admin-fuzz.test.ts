/**
 * The admin port under bad input: malformed escapes in every route with a parameter, bodies that are not
 * JSON objects, over-long targets, over-large bodies, other methods on known paths, NUL bytes. Each gets a
 * 4xx with a JSON `{"error": ...}` (never a 500, never a stack trace), and the relay stays up.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { rawHttp, type RawHttpResponse } from '../helpers/rawhttp.js';
import { DRAIN_MS } from '../../relay/src/admin.js';

const TOKEN = 'fuzz-admin-token-0123456789';
const QID = 'A'.repeat(20); // the shape of a queue id; no such message
const BAD = '%E0%A4%A'; // a truncated UTF-8 escape: decodeURIComponent throws on it

let relay: RelayProc;

before(async () => {
  relay = await startRelay({
    config: { admin: { tokenFile: 'admin.token' }, routing: { default: { type: 'mx' } } },
    secrets: { 'admin.token': TOKEN },
  });
});

after(async () => {
  await relay?.cleanup();
});

/** One request on its own connection, written as is after the request line. */
function request(
  method: string,
  target: string,
  opts: { body?: string | Buffer; headers?: string[]; token?: boolean } = {},
): Buffer {
  const body = opts.body === undefined ? undefined : Buffer.from(opts.body);
  const head = [
    `${method} ${target} HTTP/1.1`,
    'Host: 127.0.0.1',
    ...(opts.token === false ? [] : [`Authorization: Bearer ${TOKEN}`]),
    ...(body ? ['Content-Type: application/json', `Content-Length: ${body.length}`] : []),
    ...(opts.headers ?? []),
    'Connection: close',
  ];
  return Buffer.concat([Buffer.from(head.join('\r\n') + '\r\n\r\n', 'latin1'), body ?? Buffer.alloc(0)]);
}

async function one(data: Buffer, head = false): Promise<RawHttpResponse> {
  const { responses } = await rawHttp(relay.adminPort, data, { head });
  assert.equal(responses.length, 1, `one answer to ${JSON.stringify(data.subarray(0, 80).toString())}`);
  return responses[0];
}

/** A 4xx with `{"error": "<something>"}` and nothing that looks like a stack trace. */
function assertClientError(r: RawHttpResponse, what: string, status?: number): string {
  const text = r.body.toString();
  assert.ok(r.status >= 400 && r.status < 500, `${what}: ${r.status} ${text}`);
  if (status !== undefined) assert.equal(r.status, status, `${what}: ${text}`);
  assert.match(r.headers['content-type'] ?? '', /^application\/json/, `${what}: content-type`);
  const json = JSON.parse(text) as { error?: unknown };
  assert.equal(typeof json.error, 'string', `${what}: ${text}`);
  assert.ok((json.error as string).length > 0);
  assert.doesNotMatch(text, /\n\s+at |\.js:\d+|node:internal/, `${what}: no stack trace`);
  return json.error as string;
}

async function healthy(): Promise<void> {
  const r = await one(request('GET', '/healthz', { token: false }));
  assert.equal(r.status, 200);
  assert.deepEqual(JSON.parse(r.body.toString()), { status: 'ok' });
}

describe('admin API under bad input', () => {
  test('malformed escapes and control characters in every route with a parameter', async () => {
    const cases: [string, string, number][] = [
      ['DELETE', `/queue/messages/${BAD}`, 404],
      ['GET', `/tenants/${BAD}`, 404],
      ['POST', `/tenants/${BAD}/pause`, 404],
      ['POST', `/tenants/${BAD}/resume`, 404],
      ['POST', `/ratelimits/${BAD}`, 404],
      ['DELETE', `/suppressions/${BAD}/a@b.test`, 404],
      ['DELETE', `/suppressions/default/${BAD}`, 400],
      ['DELETE', '/suppressions/default/%', 400],
      ['DELETE', '/suppressions/default/%zz', 400],
      ['DELETE', '/suppressions/default/%C0%AF', 400], // overlong UTF-8
      ['DELETE', '/suppressions/default/%ED%A0%80', 400], // a surrogate
      ['DELETE', '/suppressions/default/a%00b@c.test', 400],
      ['DELETE', '/suppressions/default/a%0D%0Ab@c.test', 400],
      ['GET', `/queue?limit=${BAD}`, 200], // query strings decode leniently: not an error
      ['GET', `/suppressions?after=${BAD}&tenant=${BAD}`, 200],
    ];
    for (const [method, target, status] of cases) {
      const r = await one(request(method, target));
      if (status === 200) assert.equal(r.status, 200, `${method} ${target}: ${r.body.toString()}`);
      else assertClientError(r, `${method} ${target}`, status);
    }
    // a well-formed escape still reaches the handler decoded
    const ok = await one(request('DELETE', '/suppressions/default/nobody%40example.test'));
    assert.equal(
      assertClientError(ok, 'a well-formed escape', 404),
      'nobody@example.test is not suppressed for tenant default',
    );
    await healthy();
  });

  test('bodies that are not JSON objects, and JSON objects with values out of range', async () => {
    const bodyRoutes = [
      '/tenants/default/pause',
      '/tenants/default/resume',
      '/ratelimits/default',
      '/suppressions',
      '/drain',
      '/queue/suspend',
      '/queue/resume',
      '/queue/purge',
    ];
    const bad: (string | Buffer)[] = [
      '{',
      '{"tenant": ',
      '{"a":1}garbage',
      'nul',
      "{'single': 'quotes'}",
      '[]',
      '[{"tenant":"default"}]',
      '"a string"',
      '42',
      'null',
      'true',
      Buffer.from([0xff, 0xfe, 0x7b, 0x7d]),
      Buffer.from('{"a":"\u0000"}\u0000'),
    ];
    for (const route of bodyRoutes)
      for (const body of bad) {
        const what = `POST ${route} ${JSON.stringify(body.toString())}`;
        assert.match(
          assertClientError(await one(request('POST', route, { body })), what, 400),
          /JSON object/,
        );
      }
    const odd: [string, unknown][] = [
      ['/ratelimits/default', { unit: 'h', used: 1e300 }],
      ['/ratelimits/default', { unit: 'h', used: -1 }],
      ['/ratelimits/default', { unit: { h: 1 }, used: 1 }],
      ['/drain', { peers: [null] }],
      ['/drain', { peers: [1, 'x'] }],
      ['/drain', { peers: [{ host: 'h', port: 1e300 }] }],
      ['/drain', { peer: [{ host: 'h', port: 25 }] }],
      ['/drain', { peers: 'h:25' }],
      ['/tenants/default/pause', { until: 'not a time' }],
      ['/tenants/default/pause', { until: {} }],
      ['/suppressions', { tenant: 'default', address: { a: 1 } }],
      ['/suppressions', { tenant: 'default', address: 'a@b.test', ttl: {} }],
      ['/suppressions', { tenant: 'default', address: 'a@b.test', ttl: '-5s' }],
      ['/suppressions', { tenant: 'nobody', address: 'a@b.test' }],
      ['/queue/suspend', { tenant: {} }],
      ['/queue/suspend', { domain: ['x.test'] }],
      ['/queue/suspend', { domain: 'not a domain' }],
      ['/queue/suspend', { tenant: 'default', source: 7 }],
      ['/queue/purge', { tenant: 'default', dsn: 'yes' }],
    ];
    for (const [route, body] of odd)
      assertClientError(
        await one(request('POST', route, { body: JSON.stringify(body) })),
        `POST ${route} ${JSON.stringify(body)}`,
      );
    // none of that paused the tenant or drained the relay
    const tenant = await one(request('GET', '/tenants/default'));
    assert.equal((JSON.parse(tenant.body.toString()) as { state: string }).state, 'active');
    const drain = await one(request('GET', '/drain'));
    assert.equal((JSON.parse(drain.body.toString()) as { draining: boolean }).draining, false);
    await healthy();
  });

  test('other methods on known paths get 405 with Allow; unknown paths 404', async () => {
    const cases: [string, string, string][] = [
      ['HEAD', '/healthz', 'GET'],
      ['POST', '/metrics', 'GET'],
      ['PUT', '/readyz', 'GET'],
      ['HEAD', '/queue', 'GET'],
      ['PUT', '/queue', 'GET'],
      ['PATCH', '/tenants/default', 'GET'],
      ['DELETE', '/tenants/default/pause', 'POST'],
      ['GET', '/queue/purge', 'POST'],
      ['PUT', '/suppressions', 'GET, POST'],
      ['PATCH', `/queue/messages/${QID}`, 'DELETE'],
      ['OPTIONS', '/drain', 'GET, POST'],
      ['GET', '/suppressions/default/a@b.test', 'DELETE'],
    ];
    for (const [method, target, allow] of cases) {
      const r = await one(request(method, target), method === 'HEAD');
      const what = `${method} ${target}`;
      if (method === 'HEAD') {
        assert.equal(r.status, 405, what);
        assert.match(r.headers['content-type'] ?? '', /^application\/json/, what);
      } else assertClientError(r, what, 405);
      assert.deepEqual(r.headers['allow']?.split(', ').sort(), allow.split(', ').sort(), `${what}: Allow`);
    }
    for (const target of ['/', '/nope', '/queue/', '/queue/messages/short', '//queue', '/tenants/UPPER']) {
      const r = await one(request('GET', target));
      assert.match(assertClientError(r, `GET ${target}`, 404), /^no such endpoint/);
      assert.equal(r.headers['allow'], undefined);
    }
    // without the token an unknown path is not told apart from a known one
    assertClientError(await one(request('GET', '/nope', { token: false })), 'GET /nope without token', 401);
    await healthy();
  });

  test('over-large bodies get 413 while the client is still sending, and are not kept', async () => {
    const url = `http://127.0.0.1:${relay.adminPort}/queue/suspend`;
    const auth = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
    // a declared length: answered at once, the body read and dropped (fetch would report EPIPE if the
    // relay closed the connection while it was still sending)
    for (const size of [1024 * 1024 + 1, 12 * 1024 * 1024]) {
      const res = await fetch(url, { method: 'POST', headers: auth, body: Buffer.alloc(size, 0x20) });
      assert.equal(res.status, 413, `${size} bytes`);
      assert.match(((await res.json()) as { error: string }).error, /request body too large/);
    }
    // no length (chunked): refused once past 1 MiB
    const res = await fetch(url, {
      method: 'POST',
      headers: auth,
      body: Readable.toWeb(Readable.from(Array.from({ length: 200 }, () => Buffer.alloc(64 * 1024, 0x20)))),
      duplex: 'half',
    } as RequestInit);
    assert.equal(res.status, 413, 'a 12.5 MiB chunked body');
    await res.body?.cancel();

    // a chunked body read to its end: the same connection then serves the next request
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    const { responses } = await rawHttp(relay.adminPort, [
      Buffer.from(
        `POST /queue/suspend HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\n` +
          'Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n',
      ),
      ...Array.from({ length: 24 }, () =>
        Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]),
      ),
      Buffer.from('0\r\n\r\n'),
      request('GET', '/healthz', { token: false }),
    ]);
    assert.equal(responses.length, 2);
    assertClientError(responses[0], 'a 1.5 MiB chunked body', 413);
    assert.equal(responses[1].status, 200, 'the same connection answers the next request');

    // a client that declares 2 MiB and never sends them hears 413 at once and is cut off after DRAIN_MS
    // (rawHttp waits for the close; without the cut the connection would stay open for minutes)
    const started = Date.now();
    const declared = await rawHttp(
      relay.adminPort,
      `POST /queue/suspend HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${2 * 1024 * 1024}\r\n\r\n{`,
      { timeoutMs: DRAIN_MS + 10_000 },
    );
    assert.equal(declared.responses.length, 1);
    assertClientError(declared.responses[0], 'Content-Length: 2 MiB, never sent', 413);
    assert.ok(Date.now() - started >= DRAIN_MS - 100, 'the relay waited for the body for DRAIN_MS');
    assert.equal(
      (await one(request('GET', '/queue/suspensions'))).body.toString(),
      '{"suspensions":[]}\n',
      'nothing was suspended',
    );
    await healthy();
  });

  test('over-long targets, NUL bytes and garbage on the wire', async () => {
    const long = `/queue/messages?after=${'a'.repeat(3000)}`;
    assertClientError(await one(request('GET', long)), 'a 3 KB target', 414);
    assertClientError(await one(request('GET', `/${'x'.repeat(4096)}`)), 'a 4 KB path', 414);
    // past the HTTP parser's own limit on the request head (16 KiB): refused before any request exists
    assertClientError(await one(request('GET', `/${'x'.repeat(64 * 1024)}`)), 'a 64 KB path', 431);
    assertClientError(
      await one(request('GET', '/queue', { headers: [`X-Big: ${'y'.repeat(32 * 1024)}`] })),
      'a 32 KB header field',
      431,
    );

    const wire: [string, Buffer][] = [
      ['NUL in the path', Buffer.from('GET /heal\0thz HTTP/1.1\r\nHost: x\r\n\r\n')],
      ['NUL in a header value', Buffer.from(`GET /queue HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n`)],
      ['NUL as the method', Buffer.from('\0 /queue HTTP/1.1\r\nHost: x\r\n\r\n')],
      ['a space in the path', Buffer.from('GET /que ue/x HTTP/1.1\r\nHost: x\r\n\r\n')],
      ['an unknown method', Buffer.from('BREW /queue HTTP/1.1\r\nHost: x\r\n\r\n')],
      ['garbage', Buffer.from('\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n', 'latin1')],
      [
        'a bad chunk size',
        Buffer.from('POST /drain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'),
      ],
      [
        'two Content-Lengths',
        Buffer.from('POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n{}'),
      ],
    ];
    for (const [what, data] of wire) assertClientError(await one(data), what, 400);
    for (const [what, target] of [
      ['an asterisk target', '*'],
      ['a relative target', 'queue'],
      ['an authority target', '127.0.0.1:9025'],
    ])
      assertClientError(await one(request('GET', target)), what, 400);
    // the absolute form is a valid target
    assert.equal((await one(request('GET', 'http://127.0.0.1/healthz', { token: false }))).status, 200);
    await healthy();
    assert.equal(
      relay.logs.filter((l) => l.event === 'admin.error').length,
      0,
      'no request above was an internal error',
    );
  });
});
