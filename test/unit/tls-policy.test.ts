import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decideTls, matchDomainPolicy, stronger } from '../../relay/src/delivery/tls-policy.js';
import { StsCache, type FetchResult, type TxtAnswer } from '../../relay/src/mta-sts/cache.js';
import {
  MAX_AGE_CAP_S,
  MAX_POLICY_BYTES,
  matchMx,
  mxAllowed,
  parseStsPolicy,
  parseStsTxt,
} from '../../relay/src/mta-sts/policy.js';

const policyText = (lines: string[]) => lines.join('\r\n') + '\r\n';

describe('parseStsTxt', () => {
  it('takes the id of the one v=STSv1 record, joining its strings', () => {
    assert.deepEqual(parseStsTxt([['v=spf1 -all'], ['v=STSv1; id=2024', '0101T1']]), {
      ok: true,
      value: { id: '20240101T1' },
    });
    assert.deepEqual(parseStsTxt([['v=STSv1;id=abc;']]), { ok: true, value: { id: 'abc' } });
  });

  it('refuses no record, two records, and an id that is missing, too long or not alphanumeric', () => {
    assert.equal(parseStsTxt([]).ok, false);
    assert.equal(parseStsTxt([['v=STSv10; id=1']]).ok, false, 'v=STSv10 is not v=STSv1');
    assert.match(
      (parseStsTxt([['v=STSv1; id=1'], ['v=STSv1; id=2']]) as { reason: string }).reason,
      /exactly one/,
    );
    assert.equal(parseStsTxt([['v=STSv1;']]).ok, false);
    assert.equal(parseStsTxt([[`v=STSv1; id=${'a'.repeat(33)}`]]).ok, false);
    assert.equal(parseStsTxt([['v=STSv1; id=a-b']]).ok, false);
  });
});

describe('parseStsPolicy', () => {
  it('reads version, mode, max_age and every mx (CRLF or LF, case of host names folded)', () => {
    const r = parseStsPolicy(
      policyText([
        'version: STSv1',
        'mode: enforce',
        'mx: MX1.Example.com',
        'mx: *.mail.example.com.',
        'max_age: 86400',
      ]),
    );
    assert.deepEqual(r, {
      ok: true,
      value: { mode: 'enforce', mx: ['mx1.example.com', '*.mail.example.com'], maxAgeS: 86400 },
    });
    assert.equal(parseStsPolicy('version: STSv1\nmode: testing\nmx: a.test\nmax_age: 5\n').ok, true);
  });

  it('caps max_age at 31557600 seconds', () => {
    const r = parseStsPolicy(policyText(['version: STSv1', 'mode: none', 'max_age: 9999999999']));
    assert.deepEqual(r, { ok: true, value: { mode: 'none', mx: [], maxAgeS: MAX_AGE_CAP_S } });
  });

  it('refuses a bad version, mode or max_age, a missing mx, a bad mx and an oversized file', () => {
    const bad = (lines: string[]) => parseStsPolicy(policyText(lines));
    assert.equal(bad(['version: STSv2', 'mode: none', 'max_age: 1']).ok, false);
    assert.equal(bad(['version: STSv1', 'mode: strict', 'mx: a.test', 'max_age: 1']).ok, false);
    assert.equal(bad(['version: STSv1', 'mode: enforce', 'mx: a.test', 'max_age: -1']).ok, false);
    assert.equal(bad(['version: STSv1', 'mode: enforce', 'mx: a.test']).ok, false);
    assert.equal(bad(['version: STSv1', 'mode: enforce', 'max_age: 60']).ok, false);
    assert.equal(bad(['version: STSv1', 'mode: enforce', 'mx: a..test', 'max_age: 60']).ok, false);
    assert.equal(bad(['version: STSv1', 'mode: enforce', 'mx: *.*.test', 'max_age: 60']).ok, false);
    assert.equal(parseStsPolicy('x'.repeat(MAX_POLICY_BYTES + 1)).ok, false);
  });
});

describe('matchMx', () => {
  it('matches a host name exactly, ignoring case and a trailing dot', () => {
    assert.equal(matchMx('mx.example.com', 'MX.example.com.'), true);
    assert.equal(matchMx('mx.example.com', 'mx2.example.com'), false);
  });

  it('lets *. stand for exactly one label (RFC 8461 §4.1)', () => {
    assert.equal(matchMx('*.example.com', 'mx.example.com'), true);
    assert.equal(matchMx('*.example.com', 'a.b.example.com'), false, 'not two labels');
    assert.equal(matchMx('*.example.com', 'example.com'), false, 'not the parent itself');
    assert.equal(matchMx('*.example.com', 'mxexample.com'), false);
  });

  it('mxAllowed: a none policy allows every host, others only listed ones', () => {
    assert.equal(mxAllowed({ mode: 'none', mx: [] }, 'any.test'), true);
    assert.equal(mxAllowed({ mode: 'enforce', mx: ['a.test', '*.b.test'] }, 'x.b.test'), true);
    assert.equal(mxAllowed({ mode: 'testing', mx: ['a.test'] }, 'c.test'), false);
  });
});

describe('matchDomainPolicy', () => {
  const policies = [
    { domain: 'example.com', level: 'verify' as const },
    { domain: '.example.com', level: 'required' as const },
    { domain: '.sub.example.com', level: 'opportunistic' as const },
  ];
  it('prefers the exact domain, then the nearest .parent entry', () => {
    assert.equal(matchDomainPolicy(policies, 'example.com')?.level, 'verify');
    assert.equal(matchDomainPolicy(policies, 'a.example.com')?.level, 'required');
    assert.equal(matchDomainPolicy(policies, 'x.sub.example.com')?.level, 'opportunistic');
    assert.equal(
      matchDomainPolicy(policies, 'sub.example.com')?.level,
      'required',
      '.sub covers only subdomains',
    );
    assert.equal(matchDomainPolicy(policies, 'EXAMPLE.com.')?.level, 'verify');
  });
  it('finds nothing for other domains', () => {
    assert.equal(matchDomainPolicy(policies, 'example.org'), undefined);
    assert.equal(matchDomainPolicy(policies, 'notexample.com'), undefined);
  });
});

describe('decideTls', () => {
  it('uses the default without other sources, and the destination policy over it (up or down)', () => {
    assert.equal(decideTls({ configured: 'opportunistic' }).level, 'opportunistic');
    const up = decideTls({ configured: 'opportunistic', destination: 'verify' });
    assert.deepEqual([up.level, up.source], ['verify', 'destination']);
    const down = decideTls({ configured: 'required', destination: 'opportunistic' });
    assert.deepEqual([down.level, down.source], ['opportunistic', 'destination']);
  });

  it('MTA-STS enforce raises to verify and keeps only the listed MX hosts', () => {
    const d = decideTls({ configured: 'opportunistic', sts: { mode: 'enforce', mx: ['*.good.test'] } });
    assert.deepEqual([d.level, d.source, d.stsMode], ['verify', 'mta-sts', 'enforce']);
    assert.equal(d.mxFilter('mx.good.test'), true);
    assert.equal(d.mxFilter('mx.evil.test'), false);
  });

  it('MTA-STS enforce never lowers a destination policy, and testing or none change nothing', () => {
    const d = decideTls({
      configured: 'opportunistic',
      destination: 'verify',
      sts: { mode: 'enforce', mx: ['a'] },
    });
    assert.deepEqual([d.level, d.source], ['verify', 'destination']);
    const t = decideTls({ configured: 'required', sts: { mode: 'testing', mx: ['a.test'] } });
    assert.deepEqual([t.level, t.stsMode, t.mxFilter('b.test')], ['required', 'testing', true]);
    assert.equal(
      decideTls({ configured: 'opportunistic', sts: { mode: 'none', mx: [] } }).level,
      'opportunistic',
    );
  });

  it('stronger orders opportunistic < required < verify', () => {
    assert.equal(stronger('required', 'opportunistic'), 'required');
    assert.equal(stronger('required', 'verify'), 'verify');
  });
});

/** A StsCache over scripted DNS and HTTPS answers and a hand-moved clock. */
function harness(opts: { maxEntries?: number; recheckMs?: number } = {}) {
  const state = {
    now: 1_000_000,
    txt: new Map<string, TxtAnswer>(),
    files: new Map<string, string | Error>(),
    txtQueries: 0,
    fetches: 0,
    results: [] as FetchResult[],
  };
  const cache = new StsCache({
    txt: async (name) => {
      state.txtQueries++;
      return state.txt.get(name) ?? { kind: 'none' };
    },
    fetch: async (domain) => {
      state.fetches++;
      const f = state.files.get(domain);
      if (f === undefined) throw new Error('HTTP 404');
      if (f instanceof Error) throw f;
      return f;
    },
    now: () => state.now,
    maxEntries: opts.maxEntries ?? 100,
    txtRecheckMs: opts.recheckMs ?? 60_000,
    onResult: (_d, r) => state.results.push(r),
  });
  const publish = (domain: string, id: string, mode: string, mx: string[], maxAge: number) => {
    state.txt.set(`_mta-sts.${domain}`, { kind: 'records', records: [[`v=STSv1; id=${id}`]] });
    state.files.set(
      domain,
      policyText(['version: STSv1', `mode: ${mode}`, ...mx.map((m) => `mx: ${m}`), `max_age: ${maxAge}`]),
    );
  };
  return { state, cache, publish };
}

describe('StsCache', () => {
  it('fetches once, then serves the cached policy until the recheck interval', async () => {
    const { state, cache, publish } = harness();
    publish('a.test', '1', 'enforce', ['mx.a.test'], 3600);
    assert.equal((await cache.policyFor('a.test'))?.mode, 'enforce');
    assert.equal((await cache.policyFor('a.test'))?.mode, 'enforce');
    assert.deepEqual([state.txtQueries, state.fetches], [1, 1]);
    state.now += 61_000; // recheck: same id, no fetch
    await cache.policyFor('a.test');
    assert.deepEqual([state.txtQueries, state.fetches], [2, 1]);
    assert.deepEqual(state.results, ['fetched', 'unchanged']);
  });

  it('fetches again when the TXT id changes, and keeps the cached policy if that fetch fails', async () => {
    const { state, cache, publish } = harness();
    publish('a.test', '1', 'enforce', ['mx.a.test'], 3600);
    await cache.policyFor('a.test');
    publish('a.test', '2', 'testing', ['mx.a.test'], 3600);
    state.now += 61_000;
    assert.equal((await cache.policyFor('a.test'))?.mode, 'testing');
    state.txt.set('_mta-sts.a.test', { kind: 'records', records: [['v=STSv1; id=3']] });
    state.files.set('a.test', new Error('connect ETIMEDOUT'));
    state.now += 61_000;
    assert.equal((await cache.policyFor('a.test'))?.mode, 'testing', 'kept');
    assert.equal(state.results.at(-1), 'kept-cached');
  });

  it('keeps an unexpired policy when the TXT record vanishes or its lookup fails', async () => {
    const { state, cache, publish } = harness();
    publish('a.test', '1', 'enforce', ['mx.a.test'], 3600);
    await cache.policyFor('a.test');
    state.txt.set('_mta-sts.a.test', { kind: 'error', reason: 'SERVFAIL' });
    state.now += 61_000;
    assert.equal((await cache.policyFor('a.test'))?.mode, 'enforce');
    state.txt.delete('_mta-sts.a.test');
    state.now += 61_000;
    assert.equal((await cache.policyFor('a.test'))?.mode, 'enforce');
  });

  it('drops a policy when its max_age runs out, and then has none without a record', async () => {
    const { state, cache, publish } = harness({ recheckMs: 3_600_000 });
    publish('a.test', '1', 'enforce', ['mx.a.test'], 10);
    await cache.policyFor('a.test');
    state.now += 9_000;
    assert.equal((await cache.policyFor('a.test'))?.mode, 'enforce', 'still fresh: no lookup');
    assert.equal(state.txtQueries, 1);
    state.txt.delete('_mta-sts.a.test');
    state.now += 2_000;
    assert.equal(await cache.policyFor('a.test'), undefined);
  });

  it('refetches after max_age even with the same id, and uses the new content', async () => {
    const { state, cache, publish } = harness();
    publish('a.test', '1', 'enforce', ['mx1.a.test'], 5);
    await cache.policyFor('a.test');
    publish('a.test', '1', 'enforce', ['mx2.a.test'], 5);
    state.now += 6_000;
    assert.deepEqual((await cache.policyFor('a.test'))?.mx, ['mx2.a.test']);
    assert.equal(state.fetches, 2);
  });

  it('remembers that a domain has no policy (one TXT query per recheck interval) and that a fetch failed', async () => {
    const { state, cache } = harness();
    assert.equal(await cache.policyFor('none.test'), undefined);
    assert.equal(await cache.policyFor('none.test'), undefined);
    assert.equal(state.txtQueries, 1);
    state.txt.set('_mta-sts.bad.test', { kind: 'records', records: [['v=STSv1; id=1']] });
    state.files.set('bad.test', 'version: STSv1\r\nmode: enforce\r\n');
    assert.equal(await cache.policyFor('bad.test'), undefined);
    assert.equal(state.results.at(-1), 'invalid');
    assert.equal(await cache.policyFor('bad.test'), undefined);
    assert.equal(state.fetches, 1);
  });

  it('holds at most maxEntries domains, and counts unexpired policies by mode', async () => {
    const { cache, publish } = harness({ maxEntries: 2 });
    publish('a.test', '1', 'enforce', ['mx.a.test'], 3600);
    publish('b.test', '1', 'testing', ['mx.b.test'], 3600);
    publish('c.test', '1', 'testing', ['mx.c.test'], 3600);
    await cache.policyFor('a.test');
    await cache.policyFor('b.test');
    await cache.policyFor('c.test');
    assert.equal(cache.size, 2);
    assert.deepEqual([...cache.modes()].sort(), [['testing', 2]]);
  });

  it('shares one discovery between concurrent callers', async () => {
    const { state, cache, publish } = harness();
    publish('a.test', '1', 'enforce', ['mx.a.test'], 3600);
    await Promise.all([cache.policyFor('a.test'), cache.policyFor('a.test'), cache.policyFor('a.test')]);
    assert.deepEqual([state.txtQueries, state.fetches], [1, 1]);
  });
});
