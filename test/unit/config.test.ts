import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { MAX_SECRET_BYTES, loadConfigFile, resolveConfig } from '../../relay/src/config.js';
import { ConfigError } from '../../relay/src/errors.js';
import { Shaper } from '../../relay/src/shaping.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

let base: string;

before(async () => {
  base = await makeTmpDir('cartero-config-test-');
  await mkdir(path.join(base, 'etc/secrets'), { recursive: true });
  await mkdir(path.join(base, 'etc/tls'), { recursive: true });
  await writeFile(path.join(base, 'etc/secrets/alice'), 'hunter2\n');
  await writeFile(path.join(base, 'etc/secrets/upstream'), 'up-pass\r\n');
  // one byte over the cap: a file this size is refused before it is held
  await writeFile(path.join(base, 'etc/secrets/huge'), Buffer.alloc(MAX_SECRET_BYTES + 1, 0x61));
  await writeFile(path.join(base, 'etc/tls/cert.pem'), 'CERT\n');
  await writeFile(path.join(base, 'etc/tls/key.pem'), 'KEY\n');
});

after(async () => {
  await removeTmpDir(base);
});

/** A minimal valid document; `extra` is merged on top. */
const doc = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  version: 1,
  listeners: [{ name: 'smtp', port: 2525 }],
  paths: { root: 'etc' },
  ...extra,
});

/** Runs `fn`, expecting a ConfigError for `field` whose reason matches `reason`. */
function expectConfigError(fn: () => unknown, field: string, reason: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${String(e)}`);
    assert.equal(e.field, field, e.message);
    assert.match(e.message, reason);
    assert.ok(e.message.startsWith(`${field}: `), e.message);
    return true;
  });
}

describe('resolveConfig with a good config', () => {
  it("merges a listener's own client limits over the top-level ones", () => {
    const cfg = resolveConfig(
      {
        version: 1,
        limits: {
          maxConnectionsPerClient: 10,
          commandTimeout: '1m',
          maxConnections: 40,
          reservedForTrusted: 5,
        },
        listeners: [
          { name: 'smtp', port: 25 },
          {
            name: 'submission',
            port: 587,
            limits: { maxConnectionsPerClient: 3, connectionRatePerClient: 'off', minDataRate: 0 },
          },
        ],
      },
      base,
      {},
    );
    assert.deepEqual(cfg.listeners[0].limits, {
      maxConnectionsPerClient: 10,
      connectionRatePerClient: { count: 1200, perMs: 60_000 },
      commandTimeoutMs: 60_000,
      idleTimeoutMs: 300_000,
      minDataRate: 500,
    });
    assert.deepEqual(cfg.listeners[1].limits, {
      maxConnectionsPerClient: 3,
      commandTimeoutMs: 60_000,
      idleTimeoutMs: 300_000,
      minDataRate: 0,
    });
    assert.equal(cfg.limits.reservedForTrusted, 5);
    assert.throws(
      () =>
        resolveConfig(
          {
            version: 1,
            limits: { maxConnections: 10, reservedForTrusted: 10 },
            listeners: [{ name: 's', port: 25 }],
          },
          base,
          {},
        ),
      /\/limits\/reservedForTrusted: must be below/,
    );
  });

  it('applies the defaults and parses durations', () => {
    const cfg = resolveConfig({ version: 1, listeners: [{ name: 'smtp', port: 2525 }] }, base, {});
    assert.equal(cfg.hostname, 'localhost');
    assert.deepEqual(cfg.listeners, [
      {
        name: 'smtp',
        port: 2525,
        address: '127.0.0.1',
        tls: 'none',
        auth: 'optional',
        limits: {
          maxConnectionsPerClient: 50,
          connectionRatePerClient: { count: 1200, perMs: 60_000 },
          commandTimeoutMs: 300_000,
          idleTimeoutMs: 300_000,
          minDataRate: 500,
        },
      },
    ]);
    assert.equal(cfg.spoolDir, path.join(base, 'spool'));
    assert.deepEqual(cfg.trustedNetworks, []);
    assert.equal(cfg.accounts.size, 0);
    assert.equal(cfg.tls, undefined);
    assert.deepEqual(cfg.limits, {
      maxMessageSize: 26_214_400,
      maxRecipients: 1000,
      maxConnections: 1000,
      idleTimeoutMs: 5 * 60_000,
      maxReceivedHeaders: 30,
      maxHeaderLine: 998,
      maxHeaderSize: 1_048_576,
      greetingDelayMs: 0,
      reservedForTrusted: 100,
      stress: { threshold: 0.8, commandTimeoutMs: 10_000, idleTimeoutMs: 10_000 },
      auth: {
        failuresPerConnection: 3,
        failureDelayMs: 1000,
        maxFailureDelayMs: 8000,
        clientFailures: 10,
        accountFailures: 30,
        windowMs: 600_000,
        lockoutMs: 900_000,
      },
    });
    assert.deepEqual(cfg.queue, {
      maxMessages: 200_000,
      minFreeBytes: 104_857_600,
      retry: { initialMs: 60_000, factor: 2, maxMs: 3_600_000 },
      maxAgeMs: 5 * 86_400_000,
    });
    assert.equal(cfg.delivery.connectTimeoutMs, 30_000);
    assert.equal(cfg.delivery.commandTimeoutMs, 300_000);
    assert.equal(cfg.delivery.connectionIdleMs, 5_000);
    assert.deepEqual(cfg.routing, { default: { type: 'mx' }, domains: [], backups: [] });
    assert.deepEqual(cfg.dns, {
      servers: [],
      timeoutMs: 10_000,
      allowPrivateTargets: [],
      mxPort: 25,
      identityCheckIntervalMs: 3_600_000,
    });
    assert.deepEqual(cfg.admin, { address: '127.0.0.1', port: 9025 });
    assert.equal(cfg.gracePeriodMs, 30_000);
    assert.equal(cfg.logLevel, 'info');
  });

  it('delivery.perDestinationConcurrency sets the shaping default: 50 means 50, not the former 20', () => {
    const limits = (extra: Record<string, unknown>, domain: string) =>
      new Shaper(resolveConfig(doc(extra), base).shaping, Date.now).limitsFor(domain).maxConnections;
    for (const n of [50, 10_000, 1, 5, 20]) {
      const delivery = { perDestinationConcurrency: n };
      assert.equal(limits({ delivery }, 'example.org'), n, `perDestinationConcurrency ${n}`);
      // built-in provider figures still only tighten it
      assert.equal(limits({ delivery }, 'gmail.com'), Math.min(20, n), `gmail.com at ${n}`);
    }
    assert.equal(limits({}, 'example.org'), 20, 'both defaults: 20');
    // an explicit shaping default stays as given (the lower of the two applies per destination)
    const both = {
      delivery: { perDestinationConcurrency: 50 },
      shaping: { defaults: { maxConnections: 30 } },
    };
    assert.equal(limits(both, 'example.org'), 30);
  });

  it('parses every duration unit', () => {
    const cfg = resolveConfig(
      doc({
        limits: { idleTimeout: '2s', greetingDelay: '250ms' },
        queue: { retry: { initial: '30s', max: '4h' }, maxAge: '2d', delayWarningAfter: '90m' },
        shutdown: { gracePeriod: '45s' },
      }),
      base,
      {},
    );
    assert.equal(cfg.limits.idleTimeoutMs, 2000);
    assert.equal(cfg.limits.greetingDelayMs, 250);
    assert.deepEqual(cfg.queue.retry, { initialMs: 30_000, factor: 2, maxMs: 4 * 3_600_000 });
    assert.equal(cfg.queue.maxAgeMs, 2 * 86_400_000);
    assert.equal(cfg.queue.delayWarningAfterMs, 90 * 60_000);
    assert.equal(cfg.gracePeriodMs, 45_000);
  });

  it('resolves spool, secrets and TLS paths under the root, itself relative to the config directory', () => {
    const cfg = resolveConfig(
      doc({
        paths: { root: 'etc', spool: '/var/spool/cartero' },
        listeners: [{ name: 'submission', port: 587, tls: 'starttls', auth: 'required' }],
        tls: { certFile: 'cert.pem', keyFile: 'key.pem' },
        accounts: [{ username: 'alice', passwordFile: 'alice', tenant: 'shop' }],
        routing: {
          default: {
            type: 'smarthost',
            smarthost: {
              host: 'relay.example.test',
              credentials: { username: 'u', passwordFile: 'upstream' },
            },
          },
        },
      }),
      base,
      {},
    );
    assert.equal(cfg.spoolDir, '/var/spool/cartero');
    assert.equal(cfg.tls?.cert.toString(), 'CERT');
    assert.equal(cfg.tls?.key.toString(), 'KEY');
    // a trailing newline in a secret file is not part of the secret
    assert.deepEqual(cfg.accounts.get('alice'), { password: Buffer.from('hunter2'), tenant: 'shop' });
    assert.deepEqual(cfg.routing.default, {
      type: 'smarthost',
      smarthost: {
        host: 'relay.example.test',
        port: 25,
        tls: 'opportunistic',
        credentials: { username: 'u', password: 'up-pass' },
      },
    });

    const rel = resolveConfig(doc({ paths: { root: 'etc', spool: 'q' } }), base, {});
    assert.equal(rel.spoolDir, path.join(base, 'etc', 'q'));
  });

  it('expands ${ENV} references in listener and admin addresses', () => {
    const cfg = resolveConfig(
      doc({
        listeners: [{ name: 'smtp', port: 25, address: '${POD_IP}' }],
        admin: { address: '${POD_IP}', port: 0 },
      }),
      base,
      { POD_IP: '10.42.0.7' },
    );
    assert.equal(cfg.listeners[0].address, '10.42.0.7');
    assert.equal(cfg.admin.address, '10.42.0.7');
  });

  it('resolves fleet.rateLimitStore: host and port, the password file, defaults; refuses a bad address', () => {
    const store = (r: Record<string, unknown>) =>
      resolveConfig(doc({ fleet: { rateLimitShare: 0.5, rateLimitStore: { type: 'redis', ...r } } }), base, {
        REDIS: 'redis.cartero.svc',
      }).fleet;
    assert.deepEqual(store({ address: '${REDIS}:6380', passwordFile: 'alice' }), {
      rateLimitShare: 0.5,
      rateLimitStore: {
        type: 'redis',
        host: 'redis.cartero.svc',
        port: 6380,
        password: 'hunter2',
        keyPrefix: 'cartero:',
        timeoutMs: 250,
        maxInFlight: 1000,
      },
    });
    const v6 = store({ address: '[fd00::1]', timeout: '2s', keyPrefix: 'ns/a:' }).rateLimitStore!;
    assert.deepEqual([v6.host, v6.port, v6.timeoutMs, v6.keyPrefix], ['fd00::1', 6379, 2000, 'ns/a:']);
    assert.equal(resolveConfig(doc({}), base, {}).fleet.rateLimitStore, undefined, 'standalone by default');
    expectConfigError(() => store({ address: 'redis:99999' }), '/fleet/rateLimitStore/address', /host:port/);
    expectConfigError(() => store({ address: 'a b:1' }), '/fleet/rateLimitStore/address', /host:port/);
  });

  it('parses trusted networks given as CIDRs or single addresses', () => {
    const cfg = resolveConfig(doc({ trustedNetworks: ['10.0.0.0/8', '192.0.2.1', 'fd00::/8'] }), base, {});
    assert.deepEqual(
      cfg.trustedNetworks.map(([a, bits]) => `${a.toString()}/${bits}`),
      ['10.0.0.0/8', '192.0.2.1/32', 'fd00::/8'],
    );
  });

  it('loads the same config from a YAML file', async () => {
    const file = path.join(base, 'relay.yaml');
    await writeFile(
      file,
      [
        'version: 1',
        'hostname: relay.example.test',
        'paths: { root: etc }',
        'listeners:',
        '  - { name: smtp, port: 2525, address: "${POD_IP}" }',
        'accounts:',
        '  - { username: alice, passwordFile: alice }',
        'limits: { idleTimeout: 90s }',
        '',
      ].join('\n'),
    );
    const cfg = loadConfigFile(file, { POD_IP: '127.0.0.2' });
    assert.equal(cfg.hostname, 'relay.example.test');
    assert.equal(cfg.listeners[0].address, '127.0.0.2');
    assert.equal(cfg.limits.idleTimeoutMs, 90_000);
    assert.equal(cfg.accounts.get('alice')?.tenant, 'default');
    assert.equal(cfg.spoolDir, path.join(base, 'etc', 'spool'));
  });
});

describe('resolveConfig with a bad config names the field and the reason', () => {
  const bad: { name: string; doc: () => unknown; env?: NodeJS.ProcessEnv; field: string; reason: RegExp }[] =
    [
      {
        name: 'unknown top-level field',
        doc: () => doc({ bogus: 1 }),
        field: '/bogus',
        reason: /unknown field/,
      },
      {
        name: 'unknown nested field',
        doc: () => doc({ listeners: [{ name: 'smtp', port: 25, sizeLimit: 5 }] }),
        field: '/listeners/0/sizeLimit',
        reason: /unknown field/,
      },
      {
        name: 'wrong enum value',
        doc: () => doc({ listeners: [{ name: 'smtp', port: 25, tls: 'yes' }] }),
        field: '/listeners/0/tls',
        reason: /must be one of "none", "starttls", "implicit"/,
      },
      {
        name: 'bad duration',
        doc: () => doc({ queue: { maxAge: '5 days' } }),
        field: '/queue/maxAge',
        reason: /must be a duration such as 250ms, 30s, 5m, 4h or 5d/,
      },
      {
        name: 'missing version',
        doc: () => ({ listeners: [{ name: 'smtp', port: 25 }] }),
        field: '/version',
        reason: /is required/,
      },
      { name: 'version 2', doc: () => doc({ version: 2 }), field: '/version', reason: /must be 1/ },
      { name: 'missing listeners', doc: () => ({ version: 1 }), field: '/listeners', reason: /is required/ },
      {
        name: 'port out of range',
        doc: () => doc({ listeners: [{ name: 'smtp', port: 70000 }] }),
        field: '/listeners/0/port',
        reason: /must be <= 65535/,
      },
      {
        name: 'duplicate listener name',
        doc: () =>
          doc({
            listeners: [
              { name: 'smtp', port: 25 },
              { name: 'smtp', port: 587 },
            ],
          }),
        field: '/listeners/1/name',
        reason: /duplicate listener name smtp/,
      },
      {
        name: 'tls listener without a tls section',
        doc: () => doc({ listeners: [{ name: 'smtps', port: 465, tls: 'implicit' }] }),
        field: '/listeners/0/tls',
        reason: /needs the top-level tls section/,
      },
      {
        name: 'bad CIDR',
        doc: () => doc({ trustedNetworks: ['10.0.0.0/8', '10.0.0.0/33'] }),
        field: '/trustedNetworks/1',
        reason: /not a CIDR or IP address: "10\.0\.0\.0\/33"/,
      },
      {
        name: 'not an address at all in trusted networks',
        doc: () => doc({ trustedNetworks: ['office'] }),
        field: '/trustedNetworks/0',
        reason: /not a CIDR or IP address/,
      },
      {
        name: 'missing password file',
        doc: () => doc({ accounts: [{ username: 'bob', passwordFile: 'no-such-file' }] }),
        field: '/accounts/0/passwordFile',
        reason: /cannot read .*no-such-file/,
      },
      {
        name: 'secret file over the cap',
        doc: () => doc({ accounts: [{ username: 'bob', passwordFile: 'huge' }] }),
        field: '/accounts/0/passwordFile',
        reason: /secret file .*huge is larger than 1048576 bytes/,
      },
      {
        name: 'missing TLS key file',
        doc: () => doc({ tls: { certFile: 'cert.pem', keyFile: 'nope.pem' } }),
        field: '/tls/keyFile',
        reason: /cannot read .*nope\.pem/,
      },
      {
        name: 'smarthost type without smarthost settings',
        doc: () => doc({ routing: { default: { type: 'smarthost' } } }),
        field: '/routing/default/smarthost',
        reason: /is required/,
      },
      {
        name: 'smarthost settings with type mx',
        doc: () => doc({ routing: { default: { type: 'mx', smarthost: { host: 'relay.example.test' } } } }),
        field: '/routing/default',
        reason: /smarthost settings only go with type: smarthost/,
      },
      {
        name: 'unset environment variable',
        doc: () => doc({ listeners: [{ name: 'smtp', port: 25, address: '${POD_IP}' }] }),
        env: {},
        field: '/listeners/0/address',
        reason: /environment variable POD_IP, which is not set/,
      },
      {
        name: 'listener address that is not an IP',
        doc: () => doc({ listeners: [{ name: 'smtp', port: 25, address: 'localhost' }] }),
        field: '/listeners/0/address',
        reason: /not an IP address/,
      },
      {
        name: 'retry max shorter than initial',
        doc: () => doc({ queue: { retry: { initial: '10m', max: '5m' } } }),
        field: '/queue/retry/max',
        reason: /must not be shorter than/,
      },
      { name: 'not a mapping', doc: () => ['version', 1], field: '/', reason: /must be a mapping/ },
    ];
  for (const c of bad) {
    it(c.name, () => expectConfigError(() => resolveConfig(c.doc(), base, c.env ?? {}), c.field, c.reason));
  }

  it('loadConfigFile reports a missing file and broken YAML at the root', async () => {
    expectConfigError(() => loadConfigFile(path.join(base, 'missing.yaml')), '/', /cannot read config file/);
    const file = path.join(base, 'broken.yaml');
    await writeFile(file, 'version: 1\nlisteners: [ { name: smtp\n');
    expectConfigError(() => loadConfigFile(file), '/', /not valid YAML/);
  });
});

describe('ipPools shared by a fleet', () => {
  const pools = {
    ipPools: [
      {
        name: 'bulk',
        addresses: [
          { ip: '192.0.2.1', ehlo: 'a.example.com', pod: 'relay-0' },
          { ip: '192.0.2.2', ehlo: 'b.example.com', pod: 'relay-1', bind: false },
        ],
      },
    ],
  };
  it('each relay keeps the addresses allocated to its POD_NAME', () => {
    const one = resolveConfig(doc(pools), base, { POD_NAME: 'relay-1' });
    assert.deepEqual(one.ipPools[0].addresses, [{ ip: '192.0.2.2', ehlo: 'b.example.com', bind: false }]);
    const zero = resolveConfig(doc(pools), base, { POD_NAME: 'relay-0' });
    assert.deepEqual(zero.ipPools[0].addresses, [{ ip: '192.0.2.1', ehlo: 'a.example.com', bind: true }]);
  });
  it('host-network fleets: each relay keeps the addresses of its NODE_NAME', () => {
    const byNode = {
      ipPools: [
        {
          name: 'edge',
          addresses: [
            { ip: '192.0.2.1', ehlo: 'a.example.com', node: 'n1' },
            { ip: '192.0.2.2', ehlo: 'b.example.com', node: 'n2' },
          ],
        },
      ],
    };
    const cfg = resolveConfig(doc(byNode), base, { POD_NAME: 'relay-0', NODE_NAME: 'n2' });
    assert.deepEqual(cfg.ipPools[0].addresses, [{ ip: '192.0.2.2', ehlo: 'b.example.com', bind: true }]);
  });
  it('a pod with no address in a pool is a config error naming the pod', () => {
    expectConfigError(
      () => resolveConfig(doc(pools), base, { POD_NAME: 'relay-2' }),
      '/ipPools/0/addresses',
      /no address of pool bulk is allocated to pod relay-2 on node \(unset\)/,
    );
    expectConfigError(
      () => resolveConfig(doc(pools), base, {}),
      '/ipPools/0/addresses',
      /POD_NAME and NODE_NAME are not set/,
    );
  });
});

describe('limits.maxHeaderLine and limits.maxHeaderSize', () => {
  it('take values within their bounds and refuse the rest', () => {
    const limits = (l: Record<string, unknown>) => resolveConfig(doc({ limits: l }), base, {}).limits;
    const low = limits({ maxHeaderLine: 78, maxHeaderSize: 1024 });
    assert.equal(low.maxHeaderLine, 78);
    assert.equal(low.maxHeaderSize, 1024);
    const high = limits({ maxHeaderLine: 65_536, maxHeaderSize: 16_777_216 });
    assert.equal(high.maxHeaderLine, 65_536);
    assert.equal(high.maxHeaderSize, 16_777_216);
    for (const [l, field, reason] of [
      [{ maxHeaderLine: 77 }, '/limits/maxHeaderLine', /must be >= 78/],
      [{ maxHeaderLine: 65_537 }, '/limits/maxHeaderLine', /must be <= 65536/],
      [{ maxHeaderLine: 998.5 }, '/limits/maxHeaderLine', /must be integer/],
      [{ maxHeaderSize: 1023 }, '/limits/maxHeaderSize', /must be >= 1024/],
      [{ maxHeaderSize: 16_777_217 }, '/limits/maxHeaderSize', /must be <= 16777216/],
    ] as const)
      expectConfigError(() => limits(l), field, reason);
  });
});
