import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BUILTIN_RULES, Shaper, type ShapingConfig, type ShapingRule } from '../../relay/src/shaping.js';

const defaults = { maxConnections: 50, messagesPerConnection: 500 };
const backoff = { initialMs: 1000, maxMs: 8000 };
const cfg = (rules: ShapingRule[] = [], extra: Partial<ShapingConfig> = {}): ShapingConfig => ({
  defaults,
  rules,
  backoff,
  ...extra,
});

describe('Shaper.limitsFor', () => {
  it('falls back to the defaults', () => {
    const s = new Shaper(cfg(), () => 0);
    assert.deepEqual(s.limitsFor('example.test'), defaults);
    assert.deepEqual(s.limitsFor('example.test', 'mx.example.test'), defaults);
    const r = new Shaper({ ...cfg(), defaults: { ...defaults, messagesPerSecond: 5 } }, () => 0);
    assert.deepEqual(r.limitsFor('example.test'), { ...defaults, messagesPerSecond: 5 });
  });

  it('applies built-in rules by domain and by MX host, tightening the defaults only', () => {
    const s = new Shaper(cfg(), () => 0);
    assert.deepEqual(s.limitsFor('gmail.com'), { maxConnections: 20, messagesPerConnection: 100 });
    assert.deepEqual(s.limitsFor('GoogleMail.com.'), { maxConnections: 20, messagesPerConnection: 100 });
    // a Google Workspace domain, recognised by its MX host
    assert.deepEqual(s.limitsFor('corp.example', 'ASPMX.L.GOOGLE.COM.'), {
      maxConnections: 20,
      messagesPerConnection: 100,
    });
    assert.deepEqual(s.limitsFor('contoso.example', 'contoso-example.mail.protection.outlook.com'), {
      maxConnections: 10,
      messagesPerConnection: 50,
    });
    assert.deepEqual(s.limitsFor('aol.com', 'mx-aol.mail.gm0.yahoodns.net'), {
      maxConnections: 10,
      messagesPerConnection: 20,
    });
    assert.deepEqual(s.limitsFor('me.com'), { maxConnections: 10, messagesPerConnection: 50 });
    // stricter defaults win over the built-in figures
    const strict = new Shaper(
      { ...cfg(), defaults: { maxConnections: 4, messagesPerConnection: 30 } },
      () => 0,
    );
    assert.deepEqual(strict.limitsFor('gmail.com'), { maxConnections: 4, messagesPerConnection: 30 });
    // and the built-ins can be switched off
    const off = new Shaper(cfg([], { builtins: false }), () => 0);
    assert.deepEqual(off.limitsFor('gmail.com', 'gmail-smtp-in.l.google.com'), defaults);
  });

  it('user rules beat built-in rules, field by field, and may loosen the defaults', () => {
    const s = new Shaper(
      cfg([
        { domain: 'gmail.com', maxConnections: 5 },
        { domain: 'big.example', maxConnections: 200, messagesPerSecond: 100 },
      ]),
      () => 0,
    );
    // maxConnections from the user rule, messagesPerConnection from the built-in one
    assert.deepEqual(s.limitsFor('gmail.com'), { maxConnections: 5, messagesPerConnection: 100 });
    assert.deepEqual(s.limitsFor('big.example'), {
      maxConnections: 200,
      messagesPerConnection: 500,
      messagesPerSecond: 100,
    });
    // a user MX rule beats a built-in domain rule
    const t = new Shaper(cfg([{ mx: '*.google.com', messagesPerConnection: 10 }]), () => 0);
    assert.deepEqual(t.limitsFor('gmail.com', 'gmail-smtp-in.l.google.com'), {
      maxConnections: 20,
      messagesPerConnection: 10,
    });
  });

  it('within a tier, a domain match beats an MX match, exact beats wildcard, longer wildcard beats shorter', () => {
    const s = new Shaper(
      cfg([
        { mx: '*.mx.example', maxConnections: 1 },
        { domain: '*', maxConnections: 2 },
        { domain: '*.example', maxConnections: 3 },
        { domain: '*.sub.example', maxConnections: 4 },
        { domain: 'a.sub.example', maxConnections: 5 },
        { domain: 'a.sub.example', mx: 'in.mx.example', maxConnections: 6 },
        { mx: 'in.mx.example', maxConnections: 7, messagesPerConnection: 9 },
      ]),
      () => 0,
    );
    assert.equal(s.limitsFor('other.test').maxConnections, 2);
    assert.equal(s.limitsFor('x.example').maxConnections, 3);
    assert.equal(s.limitsFor('example').maxConnections, 2); // '*.example' is subdomains only
    assert.equal(s.limitsFor('deep.x.sub.example').maxConnections, 4);
    assert.equal(s.limitsFor('a.sub.example').maxConnections, 5);
    assert.equal(s.limitsFor('a.sub.example', 'other.mx.example').maxConnections, 5);
    assert.deepEqual(s.limitsFor('a.sub.example', 'IN.mx.example'), {
      maxConnections: 6,
      messagesPerConnection: 9, // the only rule that sets it
    });
    const m = new Shaper(
      cfg([
        { mx: '*.mx.example', maxConnections: 1 },
        { mx: 'in.mx.example', maxConnections: 7 },
      ]),
      () => 0,
    );
    assert.equal(m.limitsFor('d.test', 'in.mx.example').maxConnections, 7);
    assert.equal(m.limitsFor('d.test', 'out.mx.example').maxConnections, 1);
    assert.equal(m.limitsFor('d.test', 'mx.example').maxConnections, 50);
    assert.equal(m.limitsFor('d.test').maxConnections, 50); // MX rules need an MX host
  });

  it("a static route's host is shaped by mx-only rules on the host, never by recipient domains", () => {
    const s = new Shaper(
      cfg([
        { domain: '*', maxConnections: 2 },
        { domain: 'corp.example', mx: 'relay.corp.example', maxConnections: 3 },
        { mx: '*.corp.example', maxConnections: 4 },
        { mx: 'relay.corp.example', maxConnections: 5, messagesPerSecond: 7 },
      ]),
      () => 0,
    );
    assert.deepEqual(s.limitsForHost('Relay.Corp.Example.'), {
      maxConnections: 5,
      messagesPerConnection: 500,
      messagesPerSecond: 7,
    });
    assert.equal(s.limitsForHost('other.corp.example').maxConnections, 4);
    assert.deepEqual(s.limitsForHost('smtp.provider.test'), defaults); // domain '*' is for MX delivery
    assert.equal(s.limitsFor('any.test').maxConnections, 2);
    // built-in recipient-domain figures never apply to a route's host; built-in MX hosts do
    const b = new Shaper(cfg(), () => 0);
    assert.deepEqual(b.limitsForHost('outlook.com'), defaults);
    assert.deepEqual(b.limitsForHost('gmail.com'), defaults);
    assert.deepEqual(b.limitsForHost('smtp-mail.outlook.com'), {
      maxConnections: 10,
      messagesPerConnection: 50,
    });
    assert.notEqual(b.limitsForHost('outlook.com'), b.limitsFor('outlook.com'), 'separate cache entries');
  });

  it('caches, and reconfigure drops the cache', () => {
    const s = new Shaper(cfg([{ domain: 'x.test', maxConnections: 3 }]), () => 0);
    const a = s.limitsFor('x.test');
    assert.equal(s.limitsFor('X.test'), a);
    s.reconfigure(cfg([{ domain: 'x.test', maxConnections: 4 }]));
    assert.equal(s.limitsFor('x.test').maxConnections, 4);
  });

  it('rejects invalid configurations', () => {
    const bad: ShapingConfig[] = [
      cfg([{ maxConnections: 3 }]),
      cfg([{ domain: 'a.*.test' }]),
      cfg([{ mx: '*.' }]),
      cfg([{ domain: '' }]),
      cfg([{ domain: 'x.test', maxConnections: 0 }]),
      cfg([{ domain: 'x.test', messagesPerConnection: 2.5 }]),
      cfg([{ domain: 'x.test', messagesPerSecond: -1 }]),
      { ...cfg(), defaults: { maxConnections: 0, messagesPerConnection: 1 } },
      { ...cfg(), backoff: { initialMs: 0, maxMs: 10 } },
      { ...cfg(), backoff: { initialMs: 100, maxMs: 10 } },
    ];
    for (const c of bad) assert.throws(() => new Shaper(c, () => 0), RangeError, JSON.stringify(c));
    // fractional rates are fine
    new Shaper(cfg([{ domain: 'x.test', messagesPerSecond: 0.5 }]), () => 0);
  });

  it('built-in rules are valid and cover the big providers', () => {
    new Shaper(cfg(BUILTIN_RULES), () => 0);
    const domains = new Set(BUILTIN_RULES.map((r) => r.domain).filter(Boolean));
    for (const d of [
      'gmail.com',
      'googlemail.com',
      'outlook.com',
      'hotmail.com',
      'live.com',
      'yahoo.com',
      'aol.com',
      'icloud.com',
      'me.com',
    ])
      assert.ok(domains.has(d), d);
  });
});

describe('Shaper.takeSend', () => {
  it('is a token bucket of messagesPerSecond, holding one second of burst', () => {
    const c = { t: 1_000_000 };
    const s = new Shaper(cfg(), () => c.t);
    const limits = { maxConnections: 1, messagesPerConnection: 1, messagesPerSecond: 4 };
    for (let i = 0; i < 4; i++) assert.deepEqual(s.takeSend('k', limits), { ok: true }, `burst ${i}`);
    assert.deepEqual(s.takeSend('k', limits), { ok: false, waitMs: 250 });
    c.t += 100;
    assert.deepEqual(s.takeSend('k', limits), { ok: false, waitMs: 150 });
    c.t += 150;
    assert.deepEqual(s.takeSend('k', limits), { ok: true });
    assert.equal(s.takeSend('k', limits).ok, false);
    // other keys have their own buckets
    assert.deepEqual(s.takeSend('other', limits), { ok: true });
    // a long pause refills to the burst size, no more
    c.t += 60_000;
    let n = 0;
    while (s.takeSend('k', limits).ok) n++;
    assert.equal(n, 4);
  });

  it('handles rates below one per second, and no rate at all', () => {
    const c = { t: 0 };
    const s = new Shaper(cfg(), () => c.t);
    const slow = { maxConnections: 1, messagesPerConnection: 1, messagesPerSecond: 0.5 };
    assert.deepEqual(s.takeSend('k', slow), { ok: true });
    assert.deepEqual(s.takeSend('k', slow), { ok: false, waitMs: 2000 });
    c.t += 2000;
    assert.deepEqual(s.takeSend('k', slow), { ok: true });
    const free = { maxConnections: 1, messagesPerConnection: 1 };
    for (let i = 0; i < 1000; i++) assert.equal(s.takeSend('k', free).ok, true);
  });
});

describe('Shaper back-off', () => {
  it('backs off exponentially up to maxMs and resets on success', () => {
    const c = { t: 0 };
    const s = new Shaper(cfg(), () => c.t);
    assert.equal(s.backoffUntil('k'), undefined);
    const waits: number[] = [];
    for (let i = 0; i < 6; i++) {
      const until = s.onThrottle('k');
      assert.equal(s.backoffUntil('k'), until);
      waits.push(until - c.t);
      c.t = until; // the back-off has run out; the next attempt is throttled again
      assert.equal(s.backoffUntil('k'), undefined);
    }
    assert.deepEqual(waits, [1000, 2000, 4000, 8000, 8000, 8000]);
    assert.equal(s.backoffUntil('other'), undefined);
    s.onSuccess('k');
    assert.equal(s.onThrottle('k') - c.t, 1000);
  });

  it('does not escalate on throttles that arrive during a running back-off', () => {
    const c = { t: 0 };
    const s = new Shaper(cfg(), () => c.t);
    const first = s.onThrottle('k');
    c.t += 10;
    assert.equal(s.onThrottle('k'), first);
    assert.equal(s.onThrottle('k'), first);
    c.t = first;
    assert.equal(s.onThrottle('k') - c.t, 2000);
  });

  it('forgets a back-off that ended more than maxMs ago', () => {
    const c = { t: 0 };
    const s = new Shaper(cfg(), () => c.t);
    c.t = s.onThrottle('k');
    c.t = s.onThrottle('k'); // level 2 ended
    c.t += backoff.maxMs + 1;
    assert.equal(s.onThrottle('k') - c.t, 1000);
  });

  it('keeps back-offs and buckets across reconfigure', () => {
    const c = { t: 0 };
    const s = new Shaper(cfg(), () => c.t);
    const until = s.onThrottle('k');
    s.reconfigure(cfg([{ domain: 'x.test', maxConnections: 1 }]));
    assert.equal(s.backoffUntil('k'), until);
  });
});
