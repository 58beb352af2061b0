/**
 * Bounded configuration: every duration, size and count of CONFIG_SCHEMA has an upper bound the runtime
 * can honour, NaN and Infinity are refused, and the YAML loader turns every problem (syntax, duplicate
 * keys, several documents, alias bombs, deep nesting) into one line naming the place.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MAX_YAML_ALIASES, MAX_YAML_DEPTH, parseConfigText } from '../../relay/src/config.js';
import { CONFIG_SCHEMA, checkConfigSchema } from '../../relay/src/contract/config-schema.js';
import {
  DURATION_PATTERN,
  MAX_TIMER_MS,
  formatDuration,
  parseDuration,
} from '../../relay/src/contract/duration.js';
import { ConfigError } from '../../relay/src/errors.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

type Json = Record<string, unknown>;
type Segment = string | number;

interface Leaf {
  path: Segment[];
  schema: Json;
}

/** Every property of the schema (array items as index 0), depth first. */
function leaves(schema: Json, at: Segment[] = []): Leaf[] {
  const out: Leaf[] = [];
  const props = schema.properties as Record<string, Json> | undefined;
  if (props) for (const [k, s] of Object.entries(props)) out.push(...leaves(s, [...at, k]));
  if (schema.items) out.push(...leaves(schema.items as Json, [...at, 0]));
  if (!props && !schema.items) out.push({ path: at, schema });
  return out;
}

const ALL = leaves(CONFIG_SCHEMA as unknown as Json);
const numbers = ALL.filter((l) => l.schema.type === 'integer' || l.schema.type === 'number');
const durations = ALL.filter((l) => l.schema.pattern === DURATION_PATTERN);
const pointer = (p: Segment[]) => `/${p.join('/')}`;

/** Durations that are never a timer delay (only added to a timestamp), so they may exceed MAX_TIMER_MS. */
const NOT_TIMERS = new Set([
  '/queue/maxAge',
  '/queue/delayWarningAfter',
  '/tenants/0/maxAge',
  '/tenants/0/bounceRate/window',
  '/tenants/0/bounceRate/cooldown',
  '/tenants/0/complaintRate/window',
  '/tenants/0/complaintRate/cooldown',
  '/tenants/0/suppression/ttl',
  '/tenants/0/dkim/expiry',
  '/feedback/tokenTtl', // compared with a token's day, never waited for
]);

/** A document with one of each array item, so that every field of the schema has a place. */
function base(): Json {
  return {
    version: 1,
    listeners: [{ name: 'smtp', port: 25 }],
    routing: {
      default: { type: 'smarthost', smarthost: { host: 'smarthost.example' } },
      domains: [{ domain: 'a.example', host: 'mx.a.example' }],
      backups: [{ host: 'backup.example' }],
    },
    tenants: [
      {
        name: 't',
        dkim: { keys: [{ domain: 'example.com', selector: 's', privateKeyFile: 'k.pem' }] },
        webhooks: [{ url: 'https://hooks.example/cartero', secretFile: 'hook.key' }],
      },
    ],
    ipPools: [
      {
        name: 'p',
        addresses: [{ ip: '192.0.2.1', ehlo: 'a.example.com' }],
        warmup: { start: '2026-01-01', dailyCaps: [1] },
      },
    ],
    shaping: { rules: [{ domain: 'a.example' }] },
    fleet: { rateLimitStore: { type: 'redis', address: 'redis.example:6379' } },
    feedback: { peerLookup: { host: 'relay-pods.mail.svc.cluster.local', port: 8080 } },
  };
}

/** `base()` with `value` at `p` (missing objects created on the way). */
function withValue(p: Segment[], value: unknown): Json {
  const doc = base();
  let node = doc as Record<Segment, unknown>;
  for (const [i, seg] of p.entries()) {
    if (i === p.length - 1) {
      node[seg] = value;
      break;
    }
    node[seg] ??= typeof p[i + 1] === 'number' ? [] : {};
    node = node[seg] as Record<Segment, unknown>;
  }
  return doc;
}

/** The schema's verdict on `value` at `p`: undefined when accepted, else the one-line message. */
function verdict(p: Segment[], value: unknown): string | undefined {
  const err = checkConfigSchema(withValue(p, value));
  if (err) assert.doesNotMatch(err.message, /\n/, 'one line');
  return err?.message;
}

describe('parseDuration', () => {
  it('parses every unit', () => {
    assert.deepEqual(
      ['250ms', '30s', '5m', '4h', '5d', '0ms', '007s'].map(parseDuration),
      [250, 30_000, 300_000, 14_400_000, 432_000_000, 0, 7000],
    );
  });

  it('refuses what cannot be counted in whole milliseconds exactly, instead of Infinity', () => {
    assert.equal(parseDuration(`${Number.MAX_SAFE_INTEGER}ms`), Number.MAX_SAFE_INTEGER);
    assert.throws(() => parseDuration(`${Number.MAX_SAFE_INTEGER + 1}ms`), /duration too long/);
    assert.equal(parseDuration('104249991d'), 104_249_991 * 86_400_000);
    assert.throws(() => parseDuration('104249992d'), RangeError);
    const huge = `${'9'.repeat(400)}s`;
    assert.throws(
      () => parseDuration(huge),
      (e: unknown) => {
        assert.ok(e instanceof RangeError);
        assert.ok(e.message.length < 80, `the message does not repeat 400 digits: ${e.message}`);
        return true;
      },
    );
  });

  it('refuses what is not a duration', () => {
    for (const bad of ['', '5', '1.5h', '1h30m', '-1s', '5 m', ' 5m', '5M'])
      assert.throws(() => parseDuration(bad), /not a duration/, JSON.stringify(bad));
  });

  it('MAX_TIMER_MS is the longest delay a Node timer honours', () => {
    assert.equal(MAX_TIMER_MS, 2_147_483_647);
    assert.equal(formatDuration(24 * 86_400_000), '24d');
    assert.ok(parseDuration('24d') <= MAX_TIMER_MS && parseDuration('25d') > MAX_TIMER_MS);
  });
});

describe('every duration, size and count of CONFIG_SCHEMA is bounded', () => {
  it('finds the fields (the walk itself works)', () => {
    assert.ok(numbers.length >= 30, `${numbers.length} numeric fields`);
    assert.ok(durations.length >= 15, `${durations.length} duration fields`);
    assert.ok(durations.some((l) => pointer(l.path) === '/limits/idleTimeout'));
    assert.ok(numbers.some((l) => pointer(l.path) === '/ipPools/0/warmup/dailyCaps/0'));
  });

  it('each number has a maximum and a minimum; each duration a maxDuration', () => {
    const unbounded = [
      ...numbers.filter(
        (l) =>
          typeof l.schema.maximum !== 'number' ||
          (typeof l.schema.minimum !== 'number' && typeof l.schema.exclusiveMinimum !== 'number'),
      ),
      ...durations.filter((l) => typeof l.schema.maxDuration !== 'string'),
    ].map((l) => pointer(l.path));
    assert.deepEqual(
      unbounded,
      [],
      'give these a bound (see "Bounds" at the top of relay/src/contract/config-schema.ts)',
    );
  });

  it('a duration used as a timer delay is bounded at or below MAX_TIMER_MS (2^31-1 ms)', () => {
    for (const l of durations) {
      const max = parseDuration(String(l.schema.maxDuration));
      if (!NOT_TIMERS.has(pointer(l.path)))
        assert.ok(max <= MAX_TIMER_MS, `${pointer(l.path)}: ${String(l.schema.maxDuration)}`);
    }
  });

  it('the base document of these tests passes', () => {
    assert.equal(checkConfigSchema(base()), undefined);
  });

  for (const l of numbers) {
    const f = pointer(l.path);
    const max = l.schema.maximum as number;
    const min = (l.schema.minimum ?? l.schema.exclusiveMinimum) as number;
    it(`${f}: up to ${max}; not above, not NaN, not ±Infinity, not below ${min}`, () => {
      assert.equal(verdict(l.path, max), undefined, `${max} is allowed`);
      assert.equal(verdict(l.path, max + 1), `${f}: must be <= ${max}`);
      assert.equal(verdict(l.path, 1e308), `${f}: must be <= ${max}`);
      assert.equal(verdict(l.path, Infinity), `${f}: must be <= ${max}`, 'YAML .inf');
      assert.match(verdict(l.path, NaN) ?? '', new RegExp(`^${f}: must be (integer|number), not NaN$`));
      assert.match(verdict(l.path, -Infinity) ?? '', new RegExp(`^${f}: must be `));
      assert.match(verdict(l.path, min - 1) ?? '', new RegExp(`^${f}: must be >=? ${min}$`));
      if (l.schema.type === 'integer') assert.equal(verdict(l.path, 1.5), `${f}: must be integer`);
      assert.equal(verdict(l.path, String(max)), `${f}: must be ${String(l.schema.type)}`);
    });
  }

  for (const l of durations) {
    const f = pointer(l.path);
    const max = String(l.schema.maxDuration);
    const min = l.schema.minDuration as string | undefined;
    it(`${f}: up to ${max}${min ? `, at least ${min}` : ''}; a 400-digit one is refused cleanly`, () => {
      const maxMs = parseDuration(max);
      assert.equal(verdict(l.path, max), undefined);
      assert.equal(verdict(l.path, `${maxMs}ms`), undefined);
      assert.equal(verdict(l.path, `${maxMs + 1}ms`), `${f}: must be at most ${max}`);
      assert.equal(verdict(l.path, `${'9'.repeat(400)}s`), `${f}: must be at most ${max}`);
      assert.equal(verdict(l.path, `${Number.MAX_SAFE_INTEGER}d`), `${f}: must be at most ${max}`);
      if (min !== undefined && parseDuration(min) > 0) {
        assert.equal(verdict(l.path, min), undefined);
        assert.equal(verdict(l.path, `${parseDuration(min) - 1}ms`), `${f}: must be at least ${min}`);
      } else {
        assert.equal(verdict(l.path, '0ms'), undefined);
      }
      assert.equal(
        verdict(l.path, '90 s'),
        `${f}: must be a duration such as 250ms, 30s, 5m, 4h or 5d`,
        'the pattern reports a bad string, not the bound',
      );
      assert.equal(verdict(l.path, 300), `${f}: must be a duration such as 250ms, 30s, 5m, 4h or 5d`);
    });
  }

  it('rate limits count from 1 to one billion per unit', () => {
    const p = ['tenants', 0, 'rateLimits', 0];
    assert.equal(verdict(p, '1000000000/s'), undefined);
    assert.equal(verdict(p, '999999999/d'), undefined);
    for (const bad of ['1000000001/s', '9999999999/h', `${'9'.repeat(400)}/d`, '0/s', '10/w'])
      assert.match(verdict(p, bad) ?? '', /^\/tenants\/0\/rateLimits\/0: must be a rate such as 10\/s/, bad);
  });

  it('checkConfigSchema (the operator) refuses an out-of-range duration and keeps the document as it was', () => {
    const doc = { version: 1, listeners: [{ name: 'smtp', port: 25 }], queue: { maxAge: '31d' } };
    const err = checkConfigSchema(doc);
    assert.ok(err instanceof ConfigError);
    assert.equal(err.field, '/queue/maxAge');
    assert.equal(err.message, '/queue/maxAge: must be at most 30d');
    assert.deepEqual(doc.queue, { maxAge: '31d' }, 'no defaults filled in');
    assert.equal(
      checkConfigSchema({ ...doc, queue: {}, shutdown: { gracePeriod: '30d' } })?.message,
      '/shutdown/gracePeriod: must be at most 1h',
    );
  });

  it('the defaults and the documented examples are inside the bounds', async () => {
    assert.equal(checkConfigSchema({ version: 1, listeners: [{ name: 'smtp', port: 25 }] }), undefined);
    const md = await readFile(path.join(ROOT, 'docs', 'config.md'), 'utf8');
    const example = /## Complete example\s+```yaml\n([\s\S]*?)```/.exec(md)?.[1];
    assert.ok(example, 'docs/config.md has a complete example');
    assert.equal(checkConfigSchema(parseConfigText(example)), undefined);
    const standalone = await readFile(path.join(ROOT, 'examples', 'standalone', 'relay.yaml'), 'utf8');
    assert.equal(checkConfigSchema(parseConfigText(standalone)), undefined);
  });
});

describe('parseConfigText: one line for every problem of the file itself', () => {
  /** Expects a ConfigError for `/` whose message matches `reason`, on one line. */
  const refused = (text: string, reason: RegExp) =>
    assert.throws(
      () => parseConfigText(text),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError, `a ConfigError, not ${String(e)}`);
        assert.equal(e.field, '/');
        assert.doesNotMatch(e.message, /\n/);
        assert.match(e.message, reason);
        return true;
      },
    );

  it('an empty file, a comment only, an empty document', () => {
    refused('', /^\/: the file is empty/);
    refused('# nothing here\n\n', /^\/: the file is empty/);
    refused('---\n', /^\/: the file holds no values/);
    refused('~\n', /^\/: the file holds no values/);
  });

  it('syntax errors name the line and column, without the code frame', () => {
    refused(
      'version: 1\nhostname: "relay\n',
      /^\/: not valid YAML at line 3, column 1: Missing closing "quote$/,
    );
    refused('version: 1\nlimits:\n\tidleTimeout: 5m\n', /^\/: not valid YAML at line 3, column 1: Tabs/);
    refused(
      'version: 1\nlimits:\n  idleTimeout: 5m\n maxConnections: 10\n',
      /^\/: not valid YAML at line 4, column 1: /,
    );
    refused('{"version": 1, "listeners": [}\n', /^\/: not valid YAML at line 1, column \d+: /);
  });

  it('a duplicate key, a second document, an unknown tag', () => {
    refused(
      'version: 1\nhostname: a\nhostname: b\n',
      /^\/: not valid YAML at line 3, column 1: Map keys must be unique$/,
    );
    refused('version: 1\n---\nversion: 1\n', /^\/: not valid YAML: a second document starts at line 2/);
    refused('version: !!js/function 1\n', /^\/: not valid YAML at line 1, column 10: /);
  });

  it(`a "billion laughs" document (aliases beyond ${MAX_YAML_ALIASES} expansions) is refused before it is expanded`, () => {
    let bomb = 'a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n';
    for (let i = 1; i < 12; i++)
      bomb += `a${i}: &a${i} [${Array(10)
        .fill(`*a${i - 1}`)
        .join(', ')}]\n`;
    // refused by the alias count, before expanding (10^12 nodes would never finish)
    refused(bomb, /^\/: not valid YAML: aliases \(\*name\) expand too much/);
    // a few aliases are fine
    assert.deepEqual(parseConfigText('a: &x [1, 2]\nb: *x\n'), { a: [1, 2], b: [1, 2] });
  });

  it(`nesting beyond ${MAX_YAML_DEPTH} levels is refused before the parser recurses, also again and again`, () => {
    const flow = '['.repeat(1000) + ']'.repeat(1000);
    const block = Array.from({ length: 1000 }, (_, i) => `${' '.repeat(i)}- `).join('\n') + 'x\n';
    // parsing such a document twice in one process killed it (V8 out of memory compiling a regexp at the
    // bottom of the yaml parser's recursion); hot reload parses the same file again at every poll
    for (let i = 0; i < 3; i++) {
      refused(flow, new RegExp(`^/: not valid YAML: nested more than ${MAX_YAML_DEPTH} levels deep$`));
      refused(block, /nested more than/);
      refused('- '.repeat(5000) + 'x\n', /nested more than/);
      refused('{a: '.repeat(5000), /nested more than/);
    }
    const fine = `a: ${'['.repeat(20)}1${']'.repeat(20)}\n`;
    assert.deepEqual(
      (parseConfigText(fine) as { a: unknown }).a,
      JSON.parse(`${'['.repeat(20)}1${']'.repeat(20)}`),
    );
  });

  it('a mapping, a list and a scalar come back as they are (resolveConfig judges them)', () => {
    assert.deepEqual(parseConfigText('version: 1\n'), { version: 1 });
    assert.deepEqual(parseConfigText('- a\n'), ['a']);
    assert.equal(parseConfigText('42\n'), 42);
    assert.equal((parseConfigText('x: .inf\n') as { x: number }).x, Infinity);
    assert.ok(Number.isNaN((parseConfigText('x: .nan\n') as { x: number }).x));
  });
});
