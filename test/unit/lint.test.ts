/**
 * The bulk-sender lint's pure parts (ADR 014): header parsing (folded List-Unsubscribe, several URIs,
 * mailto only, http, names in any case, duplicate or missing From, Message-ID and Date forms), the rules
 * and their reply codes, the SPF checker's cache, sharing, limits and time limit (with a fake evaluator),
 * and the last-hour summary.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseHeaderFields } from '../../relay/src/dkim/sign.js';
import { lintHeaders, unsubscribeUris, signatureDomain } from '../../relay/src/lint/headers.js';
import {
  aligned,
  lintEnhancedCode,
  lintMessage,
  lintRefusalText,
  type LintInput,
  type SpfOutcome,
} from '../../relay/src/lint/rules.js';
import { addressesToCheck, MAX_INFLIGHT, SpfChecker, type SpfEvaluator } from '../../relay/src/lint/spf.js';
import { LintSummary, WINDOW_MS } from '../../relay/src/lint/summary.js';
import { resolveConfig } from '../../relay/src/config.js';
import { tmpdir } from 'node:os';
import { waitFor } from '../helpers/poll.js';
import { Registry } from 'prom-client';
import { pino } from 'pino';
import { LintMetrics } from '../../relay/src/lint/metrics.js';
import { LintRuntime } from '../../relay/src/lint/runtime.js';

const GOOD = [
  'From: News <news@example.com>',
  'To: a@b.test',
  'Date: Sat, 05 Dec 2026 10:00:00 +0000',
  'Message-ID: <1@example.com>',
  'List-Unsubscribe: <mailto:u@example.com>, <https://example.com/u?x=1>',
  'List-Unsubscribe-Post: List-Unsubscribe=One-Click',
];
const head = (lines: string[]) => Buffer.from(lines.join('\r\n') + '\r\n\r\n');
const headers = (lines: string[]) => lintHeaders(parseHeaderFields(head(lines)));
const rules = (lines: string[], o: Partial<Omit<LintInput, 'headers'>> = {}) =>
  lintMessage({ bulk: true, signingDomains: ['example.com'], headers: headers(lines), ...o }).map(
    (v) => v.rule,
  );
const without = (name: string) => GOOD.filter((l) => !l.toLowerCase().startsWith(name.toLowerCase() + ':'));

describe('lint headers', () => {
  it('reads a well-formed bulk message', () => {
    const h = headers(GOOD);
    assert.equal(h.fromDomain, 'example.com');
    assert.equal(h.messageId, '<1@example.com>');
    assert.deepEqual(h.unsubscribeUris, ['mailto:u@example.com', 'https://example.com/u?x=1']);
    assert.equal(h.oneClickPost, true);
    assert.equal(h.dateProblem, undefined);
    assert.deepEqual(rules(GOOD), []);
  });

  it('reads a folded List-Unsubscribe, URIs folded inside their brackets too', () => {
    const h = headers([
      ...without('List-Unsubscribe'),
      'List-Unsubscribe: <mailto:u@example.com>,',
      '\t<https://example.com/very/long/',
      ' path?id=42>',
      'List-Unsubscribe-Post: List-Unsubscribe=One-Click',
    ]);
    assert.deepEqual(h.unsubscribeUris, ['mailto:u@example.com', 'https://example.com/very/long/path?id=42']);
    assert.deepEqual(unsubscribeUris('<a>,<b>, <c>'), ['a', 'b', 'c']);
  });

  it('header names in any case', () => {
    const lines = [
      'FROM: news@Example.COM',
      'date: Sat, 05 Dec 2026 10:00:00 +0000',
      'MESSAGE-id: <1@example.com>',
      'list-UNSUBSCRIBE: <https://example.com/u>',
      'List-unsubscribe-POST: List-Unsubscribe=One-Click',
    ];
    assert.deepEqual(rules(lines), []);
    assert.equal(headers(lines).fromDomain, 'example.com');
  });

  it('one-click: mailto only, http only, no Post, a wrong Post value, no header; only for bulk tenants', () => {
    const base = without('List-Unsubscribe').filter((l) => !l.startsWith('List-Unsubscribe-Post'));
    const post = 'List-Unsubscribe-Post: List-Unsubscribe=One-Click';
    assert.deepEqual(rules([...base, 'List-Unsubscribe: <mailto:u@example.com>', post]), [
      'one-click-unsubscribe',
    ]);
    assert.deepEqual(rules([...base, 'List-Unsubscribe: <http://example.com/u>', post]), [
      'one-click-unsubscribe',
    ]);
    assert.deepEqual(rules([...base, 'List-Unsubscribe: <https://example.com/u>']), [
      'one-click-unsubscribe',
    ]);
    assert.deepEqual(
      rules([...base, 'List-Unsubscribe: <https://example.com/u>', 'List-Unsubscribe-Post: One-Click']),
      ['one-click-unsubscribe'],
    );
    assert.deepEqual(rules(base), ['one-click-unsubscribe']);
    assert.deepEqual(rules(base, { bulk: false }), []);
    // HTTPS in capitals is https; an https URI without a host is not
    assert.deepEqual(rules([...base, 'List-Unsubscribe: <HTTPS://example.com/u>', post]), []);
    assert.deepEqual(rules([...base, 'List-Unsubscribe: <https:///u>', post]), ['one-click-unsubscribe']);
    const text = lintMessage({ bulk: true, signingDomains: ['example.com'], headers: headers(base) })[0]
      .detail;
    assert.match(text, /no List-Unsubscribe/);
  });

  it('From: missing, duplicate, several domains, a display name with @', () => {
    assert.equal(headers(without('From')).fromProblem, 'missing');
    assert.deepEqual(rules(without('From')), ['dkim-alignment']);
    const dup = [...GOOD, 'From: other@example.com'];
    assert.equal(headers(dup).fromProblem, 'several');
    assert.deepEqual(rules(dup), ['dkim-alignment']);
    const two = [...without('From'), 'From: a@example.com, b@other.test'];
    assert.equal(headers(two).fromProblem, 'no-single-domain');
    const display = [...without('From'), 'From: "x@evil.test" <news@example.com>'];
    assert.equal(headers(display).fromDomain, 'example.com');
  });

  it('Message-ID and Date: missing, several, malformed', () => {
    assert.deepEqual(rules(without('Message-ID')), ['message-id']);
    assert.deepEqual(rules([...GOOD, 'Message-ID: <2@example.com>']), ['message-id']);
    assert.deepEqual(rules([...without('Message-ID'), 'Message-ID: 1@example.com']), ['message-id']);
    assert.deepEqual(rules([...without('Message-ID'), 'Message-ID:', ' <folded@example.com>']), []);
    assert.deepEqual(rules(without('Date')), ['date']);
    assert.deepEqual(rules([...GOOD, 'Date: Sat, 05 Dec 2026 11:00:00 +0000']), ['date']);
    assert.deepEqual(rules([...without('Date'), 'Date: yesterday-ish']), ['date']);
    assert.deepEqual(rules([...without('Date'), 'Date: Sat, 5 Dec 2026 10:00:00 +0100 (CET)']), []);
    assert.ok(headers(['Message-ID: <' + 'x'.repeat(500) + '@example.com>']).messageId!.length <= 200);
  });

  it('reads d= of DKIM signatures already present', () => {
    assert.equal(signatureDomain('v=1; a=rsa-sha256; d=Example.COM.; s=s1; b=abc'), 'example.com');
    assert.equal(signatureDomain('v=1; a=rsa-sha256; s=s1'), undefined);
    const signed = [
      ...GOOD,
      'DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;',
      '\td=example.com; s=s1; b=x',
    ];
    assert.deepEqual(headers(signed).signedDomains, ['example.com']);
    assert.deepEqual(rules(signed, { signingDomains: [] }), []);
  });
});

describe('lint rules', () => {
  it('DKIM alignment: relaxed (the From domain or a parent, never a bare TLD)', () => {
    assert.ok(aligned('example.com', 'example.com'));
    assert.ok(aligned('example.com', 'news.example.com'));
    assert.ok(!aligned('news.example.com', 'example.com'));
    assert.ok(!aligned('com', 'example.com'));
    assert.ok(!aligned('ample.com', 'example.com'));
    assert.deepEqual(rules(GOOD, { signingDomains: [] }), ['dkim-alignment']);
    assert.deepEqual(rules(GOOD, { signingDomains: ['other.test'] }), ['dkim-alignment']);
  });

  const spf = (results: [string, string][]): SpfOutcome => ({
    checked: true,
    domain: 'example.com',
    results: results.map(([ip, result]) => ({ ip, result: result as 'pass' })),
  });

  it('SPF: any definite answer that does not authorise breaks it; temperror and skipped never do', () => {
    for (const r of ['fail', 'softfail', 'neutral', 'none', 'permerror'])
      assert.deepEqual(rules(GOOD, { spf: spf([['192.0.2.1', r]]) }), ['spf'], r);
    assert.deepEqual(rules(GOOD, { spf: spf([['192.0.2.1', 'pass']]) }), []);
    assert.deepEqual(rules(GOOD, { spf: spf([['192.0.2.1', 'temperror']]) }), []);
    assert.deepEqual(rules(GOOD, { spf: { checked: false, reason: 'no-pool' } }), []);
    const two = lintMessage({
      bulk: false,
      signingDomains: ['example.com'],
      headers: headers(GOOD),
      spf: spf([
        ['192.0.2.1', 'pass'],
        ['192.0.2.2', 'fail'],
      ]),
    });
    assert.equal(two[0].detail, 'SPF of example.com does not authorise 192.0.2.2 (fail)');
  });

  it('rules come in a fixed order; the reply names them with a fitting enhanced code', () => {
    const v = lintMessage({
      bulk: true,
      signingDomains: [],
      headers: headers(['Subject: x']),
      spf: spf([['192.0.2.1', 'fail']]),
    });
    assert.deepEqual(
      v.map((x) => x.rule),
      ['dkim-alignment', 'spf', 'one-click-unsubscribe', 'message-id', 'date'],
    );
    assert.equal(lintEnhancedCode(v), '5.7.26');
    assert.equal(lintEnhancedCode(v.filter((x) => x.rule !== 'spf')), '5.7.22');
    assert.equal(lintEnhancedCode(v.filter((x) => x.rule !== 'dkim-alignment')), '5.7.23');
    assert.equal(lintEnhancedCode(v.filter((x) => x.rule === 'date')), '5.7.1');
    const text = lintRefusalText(v);
    assert.match(
      text,
      /^Refused by the bulk-sender lint \[dkim-alignment, spf, one-click-unsubscribe, message-id, date\]/,
    );
    assert.ok(lintRefusalText([{ rule: 'spf', detail: 'x'.repeat(1000) }]).length <= 400);
  });
});

describe('lint SPF checker', () => {
  const make = (
    evaluate: SpfEvaluator,
    o: { timeoutMs?: number; maxEntries?: number; now?: () => number } = {},
  ) => {
    const seen: string[] = [];
    const c = new SpfChecker({
      evaluate,
      servers: ['127.0.0.1:1'],
      timeoutMs: o.timeoutMs ?? 1000,
      ...(o.maxEntries ? { maxEntries: o.maxEntries } : {}),
      ...(o.now ? { now: o.now } : {}),
      onEvaluated: (r) => seen.push(r),
    });
    return { c, seen };
  };

  it('caches per (domain, address), shares one evaluation between concurrent checks', async () => {
    let calls = 0;
    const { c, seen } = make(async ({ ip, sender }) => {
      calls++;
      assert.equal(sender, 'postmaster@example.com');
      return { status: { result: ip === '192.0.2.1' ? 'pass' : 'fail' } };
    });
    const [a, b] = await Promise.all([
      c.check('example.com', '192.0.2.1'),
      c.check('EXAMPLE.com', '192.0.2.1'),
    ]);
    assert.deepEqual([a, b], ['pass', 'pass']);
    assert.equal(calls, 1);
    assert.equal(await c.check('example.com', '192.0.2.1'), 'pass');
    assert.equal(await c.check('example.com', '192.0.2.2'), 'fail');
    assert.equal(calls, 2);
    assert.equal(c.cacheSize, 2);
    assert.deepEqual(seen, ['pass', 'fail']);
  });

  it('the cache is capped; answers expire after 10 minutes, temperrors after 30 s', async () => {
    let t = 0;
    let calls = 0;
    let answer = 'temperror';
    const { c } = make(async () => (calls++, { status: { result: answer } }), {
      maxEntries: 2,
      now: () => t,
    });
    for (const d of ['a.test', 'b.test', 'c.test']) await c.check(d, '192.0.2.1');
    assert.equal(c.cacheSize, 2);
    calls = 0;
    await c.check('c.test', '192.0.2.1');
    assert.equal(calls, 0);
    t += 31_000;
    answer = 'pass';
    assert.equal(await c.check('c.test', '192.0.2.1'), 'pass');
    assert.equal(calls, 1);
    t += 9 * 60_000;
    await c.check('c.test', '192.0.2.1');
    assert.equal(calls, 1);
    t += 2 * 60_000;
    await c.check('c.test', '192.0.2.1');
    assert.equal(calls, 2);
  });

  it('gives up after its time limit (temperror, counted as timeout); the late answer fills the cache', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const { c, seen } = make(async () => (await gate, { status: { result: 'fail' } }), { timeoutMs: 50 });
    assert.equal(await c.check('slow.test', '192.0.2.1'), 'temperror');
    assert.deepEqual(seen, ['timeout']);
    release();
    await new Promise<void>((r) => setImmediate(r));
    assert.equal(await c.check('slow.test', '192.0.2.1'), 'fail');
  });

  it('a throwing evaluator or an unknown result is a temperror; too many evaluations at once: not checked', async () => {
    const { c } = make(async () => {
      throw new Error('boom');
    });
    assert.equal(await c.check('x.test', '192.0.2.1'), 'temperror');
    const { c: odd } = make(async () => ({ status: { result: 'weird' } }));
    assert.equal(await odd.check('x.test', '192.0.2.1'), 'temperror');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const { c: busy } = make(async () => (await gate, { status: { result: 'pass' } }), { timeoutMs: 5000 });
    const pending = Array.from({ length: MAX_INFLIGHT }, (_, i) => busy.check(`d${i}.test`, '192.0.2.1'));
    assert.equal(busy.running, MAX_INFLIGHT);
    assert.equal(await busy.check('one-more.test', '192.0.2.1'), undefined);
    release();
    await Promise.all(pending);
  });

  it('checks the literal addresses of a pool, at most 8', () => {
    assert.deepEqual(addressesToCheck(undefined), []);
    const ips = Array.from({ length: 10 }, (_, i) => ({ ip: `192.0.2.${i + 1}` }));
    assert.equal(addressesToCheck({ addresses: ips }).length, 8);
    assert.deepEqual(addressesToCheck({ addresses: [{ ip: 'not-an-ip' }, { ip: '2001:db8::1' }] }), [
      '2001:db8::1',
    ]);
  });
});

describe('lint summary', () => {
  it('counts per tenant and rule over the last hour, keeps the latest sample, forgets idle entries', () => {
    let t = Date.UTC(2026, 11, 5, 10, 0, 0);
    const s = new LintSummary(() => t);
    s.record('a', 'date', { queueId: 'Q1', messageId: '<1@x>' });
    s.record('a', 'date', { queueId: 'Q2' });
    s.record('a', 'dkim-alignment', { queueId: 'Q3', messageId: '<3@x>' });
    s.record('b', 'spf', { queueId: 'Q4' });
    let v = s.view();
    assert.equal(v.windowSeconds, 3600);
    assert.deepEqual(
      v.tenants.a.map((r) => [r.rule, r.count, r.sample.queueId]),
      [
        ['dkim-alignment', 1, 'Q3'],
        ['date', 2, 'Q2'],
      ],
    );
    assert.equal(v.tenants.a[1].sample.messageId, undefined);
    t += WINDOW_MS / 2;
    s.record('a', 'date', { queueId: 'Q5' });
    t += WINDOW_MS / 2 + 1;
    v = s.view();
    assert.deepEqual(
      v.tenants.a.map((r) => [r.rule, r.count]),
      [['date', 1]],
    );
    assert.equal(v.tenants.b, undefined);
    // the same view while nothing happens: stable
    assert.deepEqual(s.view(), v);
    s.retain((x) => x !== 'a');
    assert.deepEqual(s.view().tenants, {});
  });
});

describe('lint config', () => {
  const doc = (tenant: Record<string, unknown>) => ({
    version: 1,
    listeners: [{ name: 'smtp', port: 2525 }],
    tenants: [{ name: 'news', trustedNetworks: ['10.0.0.0/8'], ...tenant }],
  });
  it('bulk defaults to false and lint.policy to report (the implicit default tenant too)', () => {
    const cfg = resolveConfig(doc({}), tmpdir(), {});
    assert.equal(cfg.tenants.get('news')!.bulk, false);
    assert.deepEqual(cfg.tenants.get('news')!.lint, { policy: 'report' });
    assert.deepEqual(cfg.tenants.get('default')!.lint, { policy: 'report' });
    const set = resolveConfig(doc({ bulk: true, lint: { policy: 'enforce' } }), tmpdir(), {});
    assert.equal(set.tenants.get('news')!.bulk, true);
    assert.deepEqual(set.tenants.get('news')!.lint, { policy: 'enforce' });
  });
  it('refuses an unknown policy or field, naming it', () => {
    assert.throws(
      () => resolveConfig(doc({ lint: { policy: 'block' } }), tmpdir(), {}),
      /\/tenants\/0\/lint\/policy/,
    );
    assert.throws(() => resolveConfig(doc({ lint: { mode: 'x' } }), tmpdir(), {}), /\/tenants\/0\/lint/);
    assert.throws(() => resolveConfig(doc({ bulk: 'yes' }), tmpdir(), {}), /\/tenants\/0\/bulk/);
  });
});

describe('lint runtime (a fake SPF evaluator)', () => {
  const cfg = resolveConfig(
    {
      version: 1,
      listeners: [{ name: 'smtp', port: 2525 }],
      ipPools: [{ name: 'out', addresses: [{ ip: '192.0.2.7', ehlo: 'out.example.com' }] }],
      tenants: [
        { name: 'rep', trustedNetworks: ['10.1.0.0/16'], ipPool: 'out', bulk: true },
        { name: 'enf', trustedNetworks: ['10.2.0.0/16'], ipPool: 'out', lint: { policy: 'enforce' } },
        { name: 'nopool', trustedNetworks: ['10.3.0.0/16'] },
      ],
    },
    tmpdir(),
    {},
  );
  const setup = (evaluate?: SpfEvaluator) => {
    const registry = new Registry();
    const rt = new LintRuntime(new LintMetrics(registry), pino({ level: 'silent' }), Date.now);
    rt.configure(cfg, evaluate);
    const value = async (name: string, labels: Record<string, string>) =>
      (await registry.getSingleMetric(name)!.get()).values.find((v) =>
        Object.entries(labels).every(([k, x]) => v.labels[k] === x),
      )?.value ?? 0;
    return { rt, value };
  };
  const good = head(GOOD);

  it('report: header rules counted at acceptance, the SPF rule when its answer comes', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const { rt, value } = setup(async () => (await gate, { status: { result: 'softfail' } }));
    const m = rt.begin(cfg, 'rep', 'app@example.com');
    m.head(head(without('List-Unsubscribe-Post')), ['example.com']);
    assert.deepEqual(m.headerRules, ['one-click-unsubscribe']);
    await m.enforce('Q1'); // report: never throws, never waits
    m.accepted('Q1');
    assert.equal(
      await value('cartero_lint_violations_total', { tenant: 'rep', rule: 'one-click-unsubscribe' }),
      1,
    );
    assert.equal(await value('cartero_lint_violations_total', { tenant: 'rep', rule: 'spf' }), 0);
    release();
    await waitFor(
      async () => (await value('cartero_lint_violations_total', { tenant: 'rep', rule: 'spf' })) === 1,
    );
    assert.deepEqual(
      rt.summary.view().tenants.rep.map((r) => [r.rule, r.sample]),
      [
        ['spf', { queueId: 'Q1', messageId: '<1@example.com>' }],
        ['one-click-unsubscribe', { queueId: 'Q1', messageId: '<1@example.com>' }],
      ],
    );
  });

  it('enforce: waits for SPF and throws the 550; a pass or a temperror is accepted', async () => {
    let answer = 'fail';
    const { rt, value } = setup(async () => ({ status: { result: answer } }));
    const m = rt.begin(cfg, 'enf', 'app@example.com');
    m.head(good, ['example.com']);
    await assert.rejects(m.enforce('Q2'), (e: Error & { responseCode?: number }) => {
      assert.equal(e.responseCode, 550);
      assert.match(e.message, /^5\.7\.23 Refused by the bulk-sender lint \[spf\]/);
      return true;
    });
    assert.equal(await value('cartero_lint_refused_total', { tenant: 'enf' }), 1);
    for (const [domain, result] of [
      ['pass.example', 'pass'],
      ['err.example', 'temperror'],
    ]) {
      answer = result;
      const ok = rt.begin(cfg, 'enf', `app@${domain}`);
      ok.head(good, ['example.com']);
      await ok.enforce('Q3');
    }
  });

  it('SPF not checked: no pool, the null sender, no evaluator', async () => {
    const { rt, value } = setup(async () => ({ status: { result: 'fail' } }));
    for (const [tenant, from] of [
      ['nopool', 'app@example.com'],
      ['enf', ''],
    ]) {
      const m = rt.begin(cfg, tenant, from);
      m.head(good, ['example.com']);
      await m.enforce('Q');
      m.accepted('Q');
    }
    const bare = setup(undefined);
    const m = bare.rt.begin(cfg, 'enf', 'app@example.com');
    m.head(good, ['example.com']);
    await m.enforce('Q');
    await waitFor(async () => (await value('cartero_lint_spf_skipped_total', { reason: 'no-pool' })) === 1);
    assert.equal(await value('cartero_lint_spf_skipped_total', { reason: 'null-sender' }), 1);
    assert.equal(await bare.value('cartero_lint_spf_skipped_total', { reason: 'unavailable' }), 1);
  });
});
