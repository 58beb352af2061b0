/**
 * The delivery engine against an in-memory SpoolStore and a real test MX: no disk spool, a real SMTP
 * conversation. Covers delivery, a damaged stored copy, the loaded-messages cap and the background index.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveConfig, type RelayConfig } from '../../relay/src/config.js';
import { DeliveryEngine } from '../../relay/src/delivery/engine.js';
import type { EngineDeps } from '../../relay/src/delivery/types.js';
import { RelayMetrics } from '../../relay/src/metrics.js';
import { MxResolver } from '../../relay/src/dns.js';
import { TenantRuntime } from '../../relay/src/tenant-runtime.js';
import { createLogger } from '../../relay/src/log.js';
import { newQueueId, type Envelope } from '../../relay/src/spool/types.js';
import { MemSpool } from '../helpers/memspool.js';
import { startTestMx, type TestMx } from '../helpers/testmx.js';
import { waitFor } from '../helpers/poll.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';
import { parseDsn } from '../helpers/dsn.js';

let mx: TestMx;
let dir: string;
let cfg: RelayConfig;
const baseCfg = () => cfg;
const engines: DeliveryEngine[] = [];

before(async () => {
  mx = await startTestMx({ address: '127.0.4.21', slowMs: 150 });
  dir = await makeTmpDir('cartero-engine-');
  cfg = resolveConfig(
    {
      version: 1,
      hostname: 'relay.engine.test',
      listeners: [{ name: 'smtp', port: 0 }],
      trustedNetworks: ['127.0.0.0/8'],
      routing: {
        default: { type: 'smarthost', smarthost: { host: '127.0.4.21', port: mx.port, tls: 'none' } },
      },
      admin: { port: 0 },
    },
    dir,
  );
});

after(async () => {
  for (const e of engines) await e.stop(1000);
  await mx?.close();
  if (dir) await removeTmpDir(dir);
});

async function engine(
  spool: MemSpool,
  activeLimit?: number,
  cfg: RelayConfig = baseCfg(),
): Promise<{ e: DeliveryEngine; m: RelayMetrics }> {
  const log = createLogger('silent');
  const ref: { e?: DeliveryEngine } = {};
  const metrics = new RelayMetrics({
    queue: () => ref.e!.stats(),
    bounceRates: () => new Map(),
    now: Date.now,
  });
  const deps: EngineDeps = {
    cfg,
    spool,
    resolver: new MxResolver({
      servers: cfg.dns.servers,
      timeoutMs: 1000,
      allowPrivateTargets: cfg.dns.allowPrivateTargets,
    }),
    metrics,
    tenancy: await TenantRuntime.open(cfg, Date.now, log),
    log,
    now: Date.now,
  };
  const e = (ref.e = new DeliveryEngine(deps, activeLimit));
  engines.push(e);
  return { e, m: metrics };
}

/** A config like `cfg` whose smarthost is `to`. */
function smarthostCfg(to: TestMx): RelayConfig {
  return resolveConfig(
    {
      version: 1,
      hostname: 'relay.engine.test',
      listeners: [{ name: 'smtp', port: 0 }],
      trustedNetworks: ['127.0.0.0/8'],
      routing: {
        default: { type: 'smarthost', smarthost: { host: to.address, port: to.port, tls: 'none' } },
      },
      admin: { port: 0 },
    },
    dir,
  );
}

function message(
  to: string[],
  body = `Subject: t\r\n\r\nhello ${to.join(',')}\r\n`,
): { env: Envelope; raw: Buffer } {
  const raw = Buffer.from(body);
  const env: Envelope = {
    v: 1,
    id: newQueueId(),
    tenant: 'default',
    pool: null,
    arrivedAt: Date.now(),
    from: 'owner@sender.test',
    rcpts: to.map((address) => ({ address })),
    dsn: {},
    size: raw.length,
    eightBit: false,
    smtpUtf8: false,
    origin: 'smtp',
    client: { address: '127.0.0.1', helo: 'client.test', listener: 'smtp' },
  };
  return { env, raw };
}

test('a message added with its body is delivered and removed from the spool', async () => {
  const spool = new MemSpool();
  const { e } = await engine(spool);
  e.start();
  const { env, raw } = message(['ok1@far.test']);
  e.add(spool.put(env, raw), raw);
  const got = await waitFor(() => mx.byRecipient('ok1@far.test')[0], { what: 'delivered' });
  assert.deepEqual(got.raw, raw);
  await waitFor(() => e.stats().depth === 0, { what: 'queue empty' });
  assert.equal(spool.size, 0);
  assert.ok(spool.ops.includes(`remove ${env.id}`));
});

test('a damaged stored copy is not sent: moved aside, counted, and the sender gets a DSN', async () => {
  const spool = new MemSpool();
  const { e, m } = await engine(spool);
  e.start();
  const { env, raw } = message(['ok-damaged@far.test']);
  spool.put(env, raw);
  spool.damage(env.id, raw.subarray(0, raw.length - 3)); // the disk lost the last bytes
  await e.recover(spool.scan());
  const dsn = await waitFor(() => mx.byRecipient('owner@sender.test').find((x) => x.raw.includes(env.id)), {
    what: 'DSN to the sender',
  });
  const parsed = parseDsn(dsn.raw);
  assert.equal(parsed.recipients[0]['action'], 'failed');
  assert.equal(parsed.recipients[0]['status'], '5.3.0');
  assert.match(parsed.recipients[0]['diagnostic-code'] ?? '', /damaged/);
  assert.equal(mx.byRecipient('ok-damaged@far.test').length, 0, 'the damaged copy was never sent');
  assert.ok(spool.aside.has(env.id), 'moved aside');
  await waitFor(() => e.stats().depth === 0, { what: 'queue empty' });
  const corrupt = (await m.spoolCorrupt.get()).values.find((v) => v.labels.stage === 'delivery');
  assert.equal(corrupt?.value, 1);
});

test('at most activeLimit messages are attempted at once; every one is delivered; the index never adds one twice', async () => {
  const spool = new MemSpool();
  const { e } = await engine(spool, 3);
  const ids: string[] = [];
  for (let i = 0; i < 12; i++) {
    const { env, raw } = message([`slow+cap${i}@far.test`]);
    spool.put(env, raw);
    ids.push(env.id);
  }
  // one of them was also accepted "during recovery": known before the scan reaches it
  e.add(await spool.load(ids[5]));
  e.start();
  const recovered = e.recover(spool.scan());
  assert.equal(e.recovering, true);
  let max = 0;
  await waitFor(
    () => {
      max = Math.max(max, e.active.attempting);
      return ids.every((_, i) => mx.byRecipient(`slow+cap${i}@far.test`).length > 0);
    },
    { intervalMs: 5, what: 'all twelve delivered' },
  );
  await recovered;
  assert.equal(e.recovering, false);
  assert.ok(max >= 1 && max <= 3, `attempted at once: ${max}`);
  for (let i = 0; i < 12; i++) assert.equal(mx.byRecipient(`slow+cap${i}@far.test`).length, 1, `once: ${i}`);
  await waitFor(() => e.stats().depth === 0, { what: 'queue empty' });
  assert.equal(e.active.loaded, 0, 'nothing stays loaded');
});

test('a 1 MiB body is streamed byte-exact; its bounce returns only the header section, even with RET=FULL', async () => {
  const spool = new MemSpool();
  const { e } = await engine(spool);
  e.start();
  const big = `Subject: big\r\nX-Marker: big-one\r\n\r\n${'0123456789abcdef'.repeat(65536)}\r\n`;
  const ok = message(['ok-big@far.test'], big);
  const bad = message(['reject@far.test'], big);
  bad.env.dsn = { ret: 'FULL' };
  // recovered from the spool, not handed over in memory: the engine must read (stream) it
  spool.put(ok.env, ok.raw);
  spool.put(bad.env, bad.raw);
  await e.recover(spool.scan());
  const got = await waitFor(() => mx.byRecipient('ok-big@far.test')[0], { what: 'big message delivered' });
  assert.equal(got.raw.length, ok.raw.length);
  assert.ok(got.raw.equals(ok.raw), 'byte-exact');
  const dsn = await waitFor(
    () => mx.byRecipient('owner@sender.test').find((x) => x.raw.includes(bad.env.id)),
    { what: 'bounce for the big message' },
  );
  assert.ok(dsn.raw.length < 64 * 1024, `DSN is ${dsn.raw.length} bytes`);
  assert.match(dsn.raw.toString(), /text\/rfc822-headers/);
  assert.match(dsn.raw.toString(), /X-Marker: big-one/);
  await waitFor(() => e.stats().depth === 0, { what: 'queue empty' });
});

test('a drain hands a big message to the peer as the hand-off header followed by the streamed body', async () => {
  const spool = new MemSpool();
  const { e } = await engine(spool);
  const body = `Subject: handoff\r\n\r\n${'x'.repeat(600 * 1024)}\r\n`;
  const m = message(['ok-handoff@far.test'], body);
  spool.put(m.env, m.raw);
  e.startDrain([{ host: '127.0.4.21', port: mx.port, name: 'peer', tls: 'none', kind: 'backup' }]);
  e.start();
  await e.recover(spool.scan());
  const got = await waitFor(() => mx.byRecipient('ok-handoff@far.test')[0], { what: 'handed off' });
  const text = got.raw.toString('latin1');
  assert.match(text, /^X-Cartero-Handoff: [A-Za-z0-9_-]+\r\n/);
  assert.ok(got.raw.subarray(got.raw.length - m.raw.length).equals(m.raw), 'the body follows, byte-exact');
  await waitFor(() => e.stats().depth === 0, { what: 'queue empty' });
  assert.equal(e.handedOff, 1);
});

test("a smarthost's connection limit does not come from the first recipient domain it carried", async () => {
  // outlook.com has a built-in limit of 10 connections; the smarthost is not outlook.com
  const held = await startTestMx({ address: '127.0.4.21', slowMs: 8000 });
  try {
    const spool = new MemSpool();
    const { e } = await engine(spool, undefined, smarthostCfg(held));
    e.start();
    const first = message(['ok-first@outlook.com']);
    e.add(spool.put(first.env, first.raw), first.raw);
    await waitFor(() => held.byRecipient('ok-first@outlook.com')[0], { what: 'the outlook.com message' });
    const n = 14;
    for (let i = 0; i < n; i++) {
      const { env, raw } = message([`slow+sh${i}@d${i}.test`]);
      e.add(spool.put(env, raw), raw);
    }
    // the test MX holds each DATA reply 8 s: transactions in flight are RCPTs seen but not yet accepted
    const inFlight = () =>
      held.rcptAttempts.filter((r) => r.address.startsWith('slow+sh')).length -
      held.messages.filter((m) => m.rcptTo[0]?.startsWith('slow+sh')).length;
    let max = 0;
    await waitFor(() => (max = Math.max(max, inFlight())) >= n, {
      timeoutMs: 7000,
      what: `${n} transactions at once through the smarthost (default limit 20)`,
    }).catch((err: Error) => {
      throw new Error(`${err.message}; at most ${max} at once`, { cause: err });
    });
  } finally {
    await held.close();
  }
});
