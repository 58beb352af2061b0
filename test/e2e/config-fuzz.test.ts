/**
 * Config fuzzing against the real binary. Mutations of a valid config (wrong types, huge numbers, .inf
 * and .nan, negative values, 400-digit durations, durations over their bound, bad CIDRs, YAML bombs,
 * unknown keys at several depths, empty files, syntax errors, duplicate keys, several documents):
 *
 * 1. `--check` exits 2 with exactly one line `cartero-relay: config error: <field>: <reason>` on stderr
 *    (no stack trace, nothing on stdout), naming the field and the reason;
 * 2. start (without --check) exits 2 the same way;
 * 3. hot reload refuses them (config.invalid), keeps serving with the old config, and survives new SMTP
 *    connections afterwards (an idle timeout of 400 nines used to be applied, then crash the relay at the
 *    next connection with ERR_OUT_OF_RANGE).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import {
  runRelayCli,
  runRelayExpectFailure,
  startRelay,
  type CliResult,
  type RelayProc,
} from '../helpers/relay.js';
import { SmtpSession } from '../helpers/smtpsession.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

type Json = Record<string, unknown>;

/** A valid config that sets a value in most sections, so that mutations have something to change. */
function baseDoc(): Json {
  return {
    version: 1,
    hostname: 'relay.fuzz.test',
    listeners: [{ name: 'smtp', port: 2525 }],
    trustedNetworks: ['127.0.0.0/8'],
    limits: { maxMessageSize: 1_048_576, maxRecipients: 100, idleTimeout: '5m', greetingDelay: '0ms' },
    queue: { retry: { initial: '1m', factor: 2, max: '1h' }, maxAge: '5d', delayWarningAfter: '4h' },
    delivery: { concurrency: 10, connectTimeout: '30s', commandTimeout: '5m', connectionIdle: '5s' },
    dns: { timeout: '10s', allowPrivateTargets: [] },
    tenants: [
      {
        name: 'acme',
        trustedNetworks: ['127.0.0.2/32'],
        rateLimits: ['10/s'],
        bounceRate: { warn: 0.05, pause: 0.1, window: '1h', cooldown: '1h' },
        suppression: { ttl: '30d' },
      },
    ],
    shaping: { defaults: { maxConnections: 5 }, backoff: { initial: '1m', max: '30m' } },
    fleet: { rateLimitShare: 1 },
    shutdown: { gracePeriod: '30s' },
  };
}

/** The base config with `value` at the slash-separated `at` (numbers index lists). */
function mutate(at: string, value: unknown): string {
  const doc = baseDoc();
  const segs = at.split('/').filter(Boolean);
  let node = doc as Record<string, unknown>;
  for (const seg of segs.slice(0, -1)) {
    node[seg] ??= {};
    node = node[seg] as Record<string, unknown>;
  }
  node[segs[segs.length - 1]] = value;
  return YAML.stringify(doc); // Infinity and NaN come out as .inf and .nan
}

const BASE = YAML.stringify(baseDoc());
const NINES = '9'.repeat(400);

/** A "billion laughs" document: 10^12 nodes if its aliases were expanded. */
function yamlBomb(): string {
  let s = 'a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n';
  for (let i = 1; i <= 12; i++)
    s += `a${i}: &a${i} [${Array(10)
      .fill(`*a${i - 1}`)
      .join(', ')}]\n`;
  return BASE + s;
}

interface Case {
  name: string;
  text: string;
  /** The whole line after `cartero-relay: config error: `, or a pattern of it. */
  want: string | RegExp;
}

const typeCases: Case[] = [
  {
    name: 'size as a word',
    text: mutate('limits/maxMessageSize', 'big'),
    want: '/limits/maxMessageSize: must be integer',
  },
  {
    name: 'size as a fraction',
    text: mutate('limits/maxMessageSize', 2048.5),
    want: '/limits/maxMessageSize: must be integer',
  },
  {
    name: 'duration as a number',
    text: mutate('limits/idleTimeout', 300),
    want: '/limits/idleTimeout: must be a duration such as 250ms, 30s, 5m, 4h or 5d',
  },
  {
    name: 'duration with a space',
    text: mutate('queue/maxAge', '5 d'),
    want: '/queue/maxAge: must be a duration such as 250ms, 30s, 5m, 4h or 5d',
  },
  { name: 'listeners as a string', text: mutate('listeners', 'smtp'), want: '/listeners: must be array' },
  {
    name: 'factor as a word',
    text: mutate('queue/retry/factor', 'two'),
    want: '/queue/retry/factor: must be number',
  },
  {
    name: 'tenants as a mapping',
    text: mutate('tenants', { name: 'acme' }),
    want: '/tenants: must be array',
  },
  { name: 'limits as a number', text: mutate('limits', 5), want: '/limits: must be object' },
  {
    name: 'a CIDR as a number',
    text: mutate('trustedNetworks', [10]),
    want: '/trustedNetworks/0: must be string',
  },
  {
    name: 'a share as a boolean',
    text: mutate('fleet/rateLimitShare', true),
    want: '/fleet/rateLimitShare: must be number',
  },
];

const numberCases: Case[] = [
  {
    name: 'size 1e308',
    text: mutate('limits/maxMessageSize', 1e308),
    want: '/limits/maxMessageSize: must be <= 1073741824',
  },
  {
    name: 'recipients 2^53+1',
    text: BASE.replace('maxRecipients: 100', 'maxRecipients: 9007199254740993'),
    want: '/limits/maxRecipients: must be <= 10000',
  },
  {
    name: 'free bytes 1e20',
    text: mutate('queue/minFreeBytes', 1e20),
    want: `/queue/minFreeBytes: must be <= ${2 ** 50}`,
  },
  {
    name: 'concurrency 2^53+1',
    text: BASE.replace('concurrency: 10', 'concurrency: 9007199254740993'),
    want: '/delivery/concurrency: must be <= 10000',
  },
  {
    name: 'queue of 10^11',
    text: mutate('queue/maxMessages', 99_999_999_999),
    want: '/queue/maxMessages: must be <= 10000000',
  },
  {
    name: 'connections .inf',
    text: mutate('limits/maxConnections', Infinity),
    want: '/limits/maxConnections: must be <= 100000',
  },
  {
    name: 'factor .nan',
    text: mutate('queue/retry/factor', NaN),
    want: '/queue/retry/factor: must be number, not NaN',
  },
  {
    name: 'share .nan',
    text: mutate('fleet/rateLimitShare', NaN),
    want: '/fleet/rateLimitShare: must be number, not NaN',
  },
  {
    name: 'messages per second .inf',
    text: mutate('shaping/defaults/messagesPerSecond', Infinity),
    want: '/shaping/defaults/messagesPerSecond: must be <= 1000000',
  },
  {
    name: 'warn -.inf',
    text: BASE.replace('warn: 0.05', 'warn: -.inf'),
    want: '/tenants/0/bounceRate/warn: must be >= 0',
  },
  {
    name: 'recipients -1',
    text: mutate('limits/maxRecipients', -1),
    want: '/limits/maxRecipients: must be >= 1',
  },
  {
    name: 'free bytes -1',
    text: mutate('queue/minFreeBytes', -1),
    want: '/queue/minFreeBytes: must be >= 0',
  },
  {
    name: 'negative duration',
    text: mutate('limits/idleTimeout', '-5m'),
    want: '/limits/idleTimeout: must be a duration such as 250ms, 30s, 5m, 4h or 5d',
  },
  {
    name: 'rate of 20 digits',
    text: BASE.replace('10/s', '99999999999999999999/s'),
    want: /^\/tenants\/0\/rateLimits\/0: must be a rate such as 10\/s/,
  },
];

const durationCases: Case[] = [
  {
    name: 'idle timeout of 400 nines',
    text: mutate('limits/idleTimeout', `${NINES}s`),
    want: '/limits/idleTimeout: must be at most 1h',
  },
  {
    name: 'grace period of 400 nines',
    text: mutate('shutdown/gracePeriod', `${NINES}ms`),
    want: '/shutdown/gracePeriod: must be at most 1h',
  },
  {
    name: 'max age of 400 nines',
    text: mutate('queue/maxAge', `${NINES}d`),
    want: '/queue/maxAge: must be at most 30d',
  },
  {
    name: 'suppression ttl of 400 nines',
    text: BASE.replace('ttl: 30d', `ttl: ${NINES}d`),
    want: '/tenants/0/suppression/ttl: must be at most 3650d',
  },
  {
    name: 'idle timeout 61m',
    text: mutate('limits/idleTimeout', '61m'),
    want: '/limits/idleTimeout: must be at most 1h',
  },
  {
    name: 'idle timeout 999ms',
    text: mutate('limits/idleTimeout', '999ms'),
    want: '/limits/idleTimeout: must be at least 1s',
  },
  {
    name: 'greeting delay 301s',
    text: mutate('limits/greetingDelay', '301s'),
    want: '/limits/greetingDelay: must be at most 5m',
  },
  {
    name: 'grace period 30d (a timer overflow)',
    text: mutate('shutdown/gracePeriod', '30d'),
    want: '/shutdown/gracePeriod: must be at most 1h',
  },
  {
    name: 'retry initial 25h',
    text: mutate('queue/retry/initial', '25h'),
    want: '/queue/retry/initial: must be at most 1d',
  },
  {
    name: 'retry max 2d',
    text: mutate('queue/retry/max', '2d'),
    want: '/queue/retry/max: must be at most 1d',
  },
  {
    name: 'retry initial 0ms',
    text: mutate('queue/retry/initial', '0ms'),
    want: '/queue/retry/initial: must be at least 1s',
  },
  { name: 'max age 31d', text: mutate('queue/maxAge', '31d'), want: '/queue/maxAge: must be at most 30d' },
  {
    name: 'delay warning 31d',
    text: mutate('queue/delayWarningAfter', '31d'),
    want: '/queue/delayWarningAfter: must be at most 30d',
  },
  {
    name: 'connect timeout 11m',
    text: mutate('delivery/connectTimeout', '11m'),
    want: '/delivery/connectTimeout: must be at most 10m',
  },
  {
    name: 'command timeout 2h',
    text: mutate('delivery/commandTimeout', '2h'),
    want: '/delivery/commandTimeout: must be at most 1h',
  },
  {
    name: 'connection idle 3601s',
    text: mutate('delivery/connectionIdle', '3601s'),
    want: '/delivery/connectionIdle: must be at most 1h',
  },
  { name: 'dns timeout 2m', text: mutate('dns/timeout', '2m'), want: '/dns/timeout: must be at most 1m' },
  {
    name: 'bounce window 31d',
    text: BASE.replace('window: 1h', 'window: 31d'),
    want: '/tenants/0/bounceRate/window: must be at most 30d',
  },
  {
    name: 'bounce cooldown 31d',
    text: BASE.replace('cooldown: 1h', 'cooldown: 31d'),
    want: '/tenants/0/bounceRate/cooldown: must be at most 30d',
  },
  {
    name: 'shaping back-off 25h',
    text: mutate('shaping/backoff/max', '25h'),
    want: '/shaping/backoff/max: must be at most 1d',
  },
];

/** A network field with a value that is no CIDR: the field named, the value quoted. */
const badNetwork = (name: string, path: string, value: string): Case => ({
  name,
  text: mutate(path, [value]),
  want: `/${path}/0: not a CIDR or IP address: "${value}"`,
});

const networkCases: Case[] = [
  badNetwork('IPv4 prefix /33', 'trustedNetworks', '10.0.0.0/33'),
  badNetwork('IPv6 prefix /129', 'trustedNetworks', '::1/129'),
  badNetwork('a banana network', 'trustedNetworks', 'banana'),
  badNetwork('private targets /33', 'dns/allowPrivateTargets', '10.0.0.0/33'),
  {
    name: 'tenant network 300.1.1.1',
    text: BASE.replace('127.0.0.2/32', '300.1.1.1'),
    want: '/tenants/0/trustedNetworks/0: not a CIDR or IP address: "300.1.1.1"',
  },
];

const structureCases: Case[] = [
  { name: 'unknown top-level key', text: `${BASE}listner: 1\n`, want: '/listner: unknown field' },
  {
    name: 'unknown key in limits',
    text: mutate('limits/idleTimout', '5m'),
    want: '/limits/idleTimout: unknown field',
  },
  {
    name: 'unknown key two levels down',
    text: mutate('queue/retry/maxx', '1h'),
    want: '/queue/retry/maxx: unknown field',
  },
  {
    name: 'unknown key in a tenant',
    text: BASE.replace('window: 1h', 'windoww: 1h'),
    want: '/tenants/0/bounceRate/windoww: unknown field',
  },
  {
    name: 'a __proto__ key',
    text: `${BASE}__proto__: { polluted: true }\n`,
    want: '/__proto__: unknown field',
  },
  { name: 'a key with a newline', text: `${BASE}"bad\\nkey": 1\n`, want: '/bad\\u000akey: unknown field' },
  { name: 'an empty file', text: '', want: /^\/: the file is empty/ },
  { name: 'only a comment', text: '# version: 1\n', want: /^\/: the file is empty/ },
  { name: 'only a document marker', text: '---\n', want: /^\/: the file holds no values/ },
  {
    name: 'a top-level list',
    text: '- version: 1\n- listeners: []\n',
    want: '/: must be a mapping (key: value), not a list',
  },
  {
    name: 'a top-level scalar',
    text: 'version 1\n',
    want: '/: must be a mapping (key: value), not a string',
  },
  {
    name: 'an unclosed quote',
    text: `${BASE}hostname2: "relay\n`,
    want: /^\/: not valid YAML at line \d+, column \d+: Missing closing "quote$/,
  },
  {
    name: 'bad indentation',
    text: BASE.replace('  maxRecipients', ' maxRecipients'),
    want: /^\/: not valid YAML at line \d+, column \d+: /,
  },
  {
    name: 'a tab as indentation',
    text: BASE.replace('  maxRecipients', '\tmaxRecipients'),
    want: /^\/: not valid YAML at line \d+, column \d+: Tabs are not allowed as indentation$/,
  },
  {
    name: 'an unclosed flow list',
    text: 'version: 1\nlisteners: [ { name: smtp, port: 25 }\n',
    want: /^\/: not valid YAML at line 3, column 1: /,
  },
  {
    name: 'a duplicate top-level key',
    text: `${BASE}hostname: other.test\n`,
    want: /^\/: not valid YAML at line \d+, column 1: Map keys must be unique$/,
  },
  {
    name: 'a duplicate nested key',
    text: BASE.replace('  maxRecipients: 100\n', '  maxRecipients: 100\n  maxRecipients: 200\n'),
    want: /^\/: not valid YAML at line \d+, column 3: Map keys must be unique$/,
  },
  {
    name: 'two documents',
    text: `${BASE}---\n${BASE}`,
    want: /^\/: not valid YAML: a second document starts at line \d+/,
  },
  {
    name: 'an unknown tag',
    text: BASE.replace('hostname: relay.fuzz.test', 'hostname: !shell relay.fuzz.test'),
    want: /^\/: not valid YAML at line 2, column 11: Unresolved tag: !shell$/,
  },
  {
    name: 'a billion laughs',
    text: yamlBomb(),
    want: /^\/: not valid YAML: aliases \(\*name\) expand too much/,
  },
  {
    name: 'a nesting bomb',
    text: `${BASE}deep: ${'['.repeat(5000)}\n`,
    want: '/: not valid YAML: nested more than 64 levels deep',
  },
  {
    name: 'a file over 1 MiB',
    text: `${BASE}# ${'x'.repeat(1024 * 1024)}\n`,
    want: /^\/: config file \S+ is larger than 1048576 bytes$/,
  },
];

const CASES = [...typeCases, ...numberCases, ...durationCases, ...networkCases, ...structureCases];

/** Runs `fn` over `items`, at most `limit` at a time. */
async function pool<T, R>(items: T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

const LINE = /^cartero-relay: config error: (\/[^\n]*?): ([^\n]+)\n$/;

/** The relay refused the config: exit 2, nothing on stdout, one line on stderr that says `want`. */
function assertRefused(
  r: { code: number | null; stdout: string; stderr: string },
  want: string | RegExp,
): void {
  assert.equal(r.code, 2, `exit code; stderr: ${r.stderr}`);
  assert.equal(r.stdout, '', 'nothing on stdout');
  assert.match(r.stderr, LINE, 'exactly one line in the config error format');
  assert.doesNotMatch(r.stderr, /\n\s+at |Error:|node:internal/, 'no stack trace');
  const line = r.stderr.slice('cartero-relay: config error: '.length, -1);
  if (typeof want === 'string') assert.equal(line, want);
  else assert.match(line, want);
}

describe('config fuzzing through --check', () => {
  let dir: string;
  let results: CliResult[];

  before(async () => {
    dir = await makeTmpDir('cartero-config-fuzz-');
    // a fixed port is fine: --check never binds it
    await writeFile(path.join(dir, 'base.yaml'), BASE);
    results = await pool(CASES, 4, async (c, i) => {
      const file = path.join(dir, `case-${i}.yaml`);
      await writeFile(file, c.text);
      return runRelayCli(['--config', file, '--check']);
    });
  });

  after(async () => {
    if (dir) await removeTmpDir(dir);
  });

  it('the unmutated config passes (so each mutation fails for its own reason)', async () => {
    const ok = await runRelayCli(['--config', path.join(dir, 'base.yaml'), '--check']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, 'config ok\n');
  });

  it(`covers at least 40 mutations (${CASES.length})`, () => {
    assert.ok(CASES.length >= 40);
    assert.equal(new Set(CASES.map((c) => c.name)).size, CASES.length, 'distinct names');
  });

  for (const [i, c] of CASES.entries()) {
    it(`${c.name}: exit 2, one line`, () => assertRefused(results[i], c.want));
  }
});

describe('config fuzzing through start', () => {
  const START_CASES = [
    durationCases[0], // idle timeout of 400 nines
    durationCases[7], // grace period 30d
    numberCases[5], // connections .inf
    structureCases.find((c) => c.name === 'a tab as indentation')!,
    structureCases.find((c) => c.name === 'a billion laughs')!,
    structureCases.find((c) => c.name === 'two documents')!,
    structureCases.find((c) => c.name === 'an empty file')!,
  ];

  for (const c of START_CASES) {
    it(`${c.name}: the relay does not start, exit 2, one line`, async () => {
      assertRefused(await runRelayExpectFailure(c.text), c.want);
    });
  }
});

describe('config fuzzing through hot reload', () => {
  let relay: RelayProc;

  before(async () => {
    relay = await startRelay({
      config: {
        hostname: 'relay.fuzz.test',
        trustedNetworks: ['127.0.0.0/8'],
        limits: { maxMessageSize: 4096, idleTimeout: '5m' },
      },
    });
  });

  after(async () => {
    await relay?.cleanup();
  });

  /** Writes `text` next to the config file and renames it over (as Kubernetes swaps a ConfigMap). */
  const swapConfig = async (text: string) => {
    const tmp = path.join(path.dirname(relay.configFile), '.relay.yaml.tmp');
    await writeFile(tmp, text);
    await rename(tmp, relay.configFile);
  };

  const configHash = async () => {
    const res = await fetch(`http://127.0.0.1:${relay.adminPort}/config`);
    assert.equal(res.status, 200);
    return ((await res.json()) as { hash: string }).hash;
  };

  /** A new SMTP connection gets the old config (SIZE 4096) and a transaction goes as far as RCPT. */
  const stillServes = async (what: string) => {
    const s = await SmtpSession.open(relay.ports.smtp);
    try {
      assert.match(s.ehloReply!.text, /^250[ -]SIZE 4096$/m, `${what}: the old config serves`);
      const [mail, rcpt] = await s.command('MAIL FROM:<app@fuzz.test>', 'RCPT TO:<someone@example.test>');
      assert.equal(mail.code, 250, `${what}: MAIL ${mail.text}`);
      assert.equal(rcpt.code, 250, `${what}: RCPT ${rcpt.text}`);
      assert.equal((await s.command('RSET'))[0].code, 250);
    } finally {
      await s.quit();
    }
  };

  it('refuses each bad config, keeps the old one, and survives new connections', async () => {
    const good = await readFile(relay.configFile, 'utf8');
    const doc = YAML.parse(good) as Json;
    const withValue = (section: string, key: string, value: unknown) =>
      YAML.stringify({ ...doc, [section]: { ...(doc[section] as Json), [key]: value } });
    const hash0 = await configHash();
    const bad: { name: string; text: string; err: string | RegExp }[] = [
      {
        name: 'idle timeout of 400 nines',
        text: withValue('limits', 'idleTimeout', `${NINES}s`),
        err: '/limits/idleTimeout: must be at most 1h',
      },
      {
        name: 'grace period 30d',
        text: withValue('shutdown', 'gracePeriod', '30d'),
        err: '/shutdown/gracePeriod: must be at most 1h',
      },
      {
        name: 'connections .inf',
        text: withValue('limits', 'maxConnections', Infinity),
        err: '/limits/maxConnections: must be <= 100000',
      },
      {
        name: 'a tab',
        text: good.replace(/^ {2}maxMessageSize/m, '\tmaxMessageSize'),
        err: /^\/: not valid YAML at line \d+, column 1: Tabs/,
      },
      { name: 'a billion laughs', text: yamlBomb(), err: /^\/: not valid YAML: aliases/ },
      {
        name: 'a nesting bomb',
        text: `${good}deep: ${'['.repeat(1000)}${']'.repeat(1000)}\n`,
        err: /^\/: not valid YAML: nested more than/,
      },
      { name: 'two documents', text: `${good}---\n${good}`, err: /^\/: not valid YAML: a second document/ },
    ];
    for (const b of bad) {
      const since = relay.logs.length;
      await swapConfig(b.text);
      const line = await relay.waitForLog((l) => l.event === 'config.invalid', 5_000, since);
      const err = String(line.err);
      assert.doesNotMatch(err, /\n/, `${b.name}: one line`);
      if (typeof b.err === 'string') assert.equal(err, b.err, b.name);
      else assert.match(err, b.err, b.name);
      assert.equal(line.keeping, hash0, `${b.name}: the running config stays`);
      // read the same file again (as the periodic poll does): reported once, and no harm done
      relay.kill('SIGHUP');
      await stillServes(b.name);
      assert.equal(await configHash(), hash0, `${b.name}: GET /config reports the running config`);
    }
    assert.equal(
      relay.logs.filter((l) => l.event === 'config.invalid').length,
      bad.length,
      'each reported once',
    );
    assert.equal(relay.logs.filter((l) => l.event === 'config.reloaded').length, 0, 'nothing applied');

    // a good config still applies after all that
    const since = relay.logs.length;
    await swapConfig(withValue('limits', 'maxMessageSize', 8192));
    await relay.waitForLog((l) => l.event === 'config.reloaded', 5_000, since);
    const s = await SmtpSession.open(relay.ports.smtp);
    assert.match(s.ehloReply!.text, /^250[ -]SIZE 8192$/m);
    await s.quit();
    const exit = await relay.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, `a clean exit; stderr: ${relay.stderr}`);
  });
});
