/** The DNS identity judges (relay/src/identity/judge.ts) and the POST /dns/checks body parser. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  judgeDkimTxt,
  judgeFcrdns,
  parseTagList,
  MAX_PTR_NAMES,
  type DnsLookup,
} from '../../relay/src/identity/judge.js';
import { parseDnsChecks } from '../../relay/src/identity/admin.js';
import { HttpError } from '../../relay/src/admin.js';

const ok = <T>(...records: T[]): DnsLookup<T> => ({ ok: true, records });
const nx: DnsLookup<never> = { ok: false, failure: 'nxdomain', code: 'ENOTFOUND' };
const nodata: DnsLookup<never> = { ok: false, failure: 'nodata', code: 'ENODATA' };
const servfail: DnsLookup<never> = { ok: false, failure: 'temporary', code: 'ESERVFAIL' };
const fwd = (e: Record<string, DnsLookup<string>>) => new Map(Object.entries(e));

describe('judgeFcrdns', () => {
  it('Verified when the EHLO name is a PTR name that resolves back to the address', () => {
    const v = judgeFcrdns({
      ip: '203.0.113.10',
      ehlo: 'MTA1.Example.com.',
      ptr: ok('mta1.example.com.'),
      forward: fwd({ 'mta1.example.com': ok('198.51.100.1', '203.0.113.10') }),
    });
    assert.equal(v.result, 'Verified');
    assert.deepEqual(v.ptr, ['mta1.example.com']);
    assert.deepEqual(v.confirmed, ['mta1.example.com']);
  });

  it('compares IPv6 canonically (and IPv4-mapped IPv6 as IPv4)', () => {
    assert.equal(
      judgeFcrdns({
        ip: '2001:DB8:0:0:0:0:0:25',
        ehlo: 'mx.example.com',
        ptr: ok('mx.example.com'),
        forward: fwd({ 'mx.example.com': ok('2001:db8::25') }),
      }).result,
      'Verified',
    );
    assert.equal(
      judgeFcrdns({
        ip: '::ffff:192.0.2.7',
        ehlo: 'mx.example.com',
        ptr: ok('mx.example.com'),
        forward: fwd({ 'mx.example.com': ok('192.0.2.7') }),
      }).result,
      'Verified',
    );
  });

  it('PtrMissing without a PTR record (NXDOMAIN, no data or an empty answer)', () => {
    for (const ptr of [nx, nodata, ok<string>()]) {
      const v = judgeFcrdns({ ip: '192.0.2.1', ehlo: 'a.example', ptr, forward: new Map() });
      assert.equal(v.result, 'PtrMissing');
      assert.match(v.message, /publish one naming a\.example/);
    }
  });

  it('ForwardMismatch when no PTR name resolves back to the address', () => {
    const v = judgeFcrdns({
      ip: '192.0.2.1',
      ehlo: 'a.example',
      ptr: ok('a.example', 'b.example'),
      forward: fwd({ 'a.example': ok('192.0.2.99'), 'b.example': nx }),
    });
    assert.equal(v.result, 'ForwardMismatch');
    assert.deepEqual(v.ptr, ['a.example', 'b.example']);
    assert.match(v.message, /add an A\/AAAA record a\.example → 192\.0\.2\.1/);
  });

  it('EhloMismatch when FCrDNS holds for another name than the EHLO name', () => {
    const v = judgeFcrdns({
      ip: '192.0.2.1',
      ehlo: 'mta.example',
      ptr: ok('host-1.isp.example'),
      forward: fwd({ 'host-1.isp.example': ok('192.0.2.1') }),
    });
    assert.equal(v.result, 'EhloMismatch');
    assert.match(v.message, /set ehlo to host-1\.isp\.example/);
    // the EHLO name is a PTR name but does not resolve back, while another does
    const w = judgeFcrdns({
      ip: '192.0.2.1',
      ehlo: 'mta.example',
      ptr: ok('host-1.isp.example', 'mta.example'),
      forward: fwd({ 'host-1.isp.example': ok('192.0.2.1'), 'mta.example': ok('192.0.2.2') }),
    });
    assert.equal(w.result, 'EhloMismatch');
    assert.match(w.message, /mta\.example does not resolve to 192\.0\.2\.1/);
  });

  it('LookupFailed when a lookup that decides the result failed temporarily', () => {
    assert.equal(
      judgeFcrdns({ ip: '192.0.2.1', ehlo: 'a.example', ptr: servfail, forward: new Map() }).result,
      'LookupFailed',
    );
    assert.equal(
      judgeFcrdns({
        ip: '192.0.2.1',
        ehlo: 'a.example',
        ptr: ok('a.example'),
        forward: fwd({ 'a.example': servfail }),
      }).result,
      'LookupFailed',
    );
    // the EHLO name's lookup failed, another name is confirmed: not yet an EhloMismatch
    assert.equal(
      judgeFcrdns({
        ip: '192.0.2.1',
        ehlo: 'a.example',
        ptr: ok('b.example', 'a.example'),
        forward: fwd({ 'b.example': ok('192.0.2.1'), 'a.example': servfail }),
      }).result,
      'LookupFailed',
    );
    // a failed lookup of a name that does not matter does not hide a verified one
    assert.equal(
      judgeFcrdns({
        ip: '192.0.2.1',
        ehlo: 'a.example',
        ptr: ok('b.example', 'a.example'),
        forward: fwd({ 'b.example': servfail, 'a.example': ok('192.0.2.1') }),
      }).result,
      'Verified',
    );
  });

  it(`looks at no more than ${MAX_PTR_NAMES} PTR names`, () => {
    const names = Array.from({ length: 15 }, (_, i) => `n${i}.example`);
    const v = judgeFcrdns({
      ip: '192.0.2.1',
      ehlo: 'n9.example', // sorted: n0, n1, n10 … n14, n2 … n4 are looked at, n5 … n9 are not
      ptr: ok(...names),
      forward: fwd({ 'n9.example': ok('192.0.2.1') }),
    });
    assert.equal(v.ptr.length, MAX_PTR_NAMES);
    assert.equal(v.result, 'ForwardMismatch');
  });
});

describe('judgeDkimTxt', () => {
  const expected = 'v=DKIM1; k=rsa; p=MIIBIjANBgkqAAAA';
  it('Published when the served record carries the same key (strings joined, whitespace ignored)', () => {
    assert.equal(
      judgeDkimTxt({ expected, txt: ok(['v=DKIM1; k=rsa; p=MIIBIjAN', 'Bgkq AAAA']) }).result,
      'Published',
    );
    assert.equal(judgeDkimTxt({ expected, txt: ok(['v=DKIM1;p=MIIBIjANBgkqAAAA;']) }).result, 'Published');
    // other TXT records at the name (not key records) do not count
    assert.equal(
      judgeDkimTxt({ expected, txt: ok(['hello world'], ['v=DKIM1; p=MIIBIjANBgkqAAAA']) }).result,
      'Published',
    );
  });

  it('Missing without the name or without a key record there', () => {
    assert.equal(judgeDkimTxt({ expected, txt: nx }).result, 'Missing');
    assert.equal(judgeDkimTxt({ expected, txt: nodata }).result, 'Missing');
    assert.equal(judgeDkimTxt({ expected, txt: ok(['google-site-verification abc']) }).result, 'Missing');
  });

  it('Mismatch for another key, another key type, a revoked key, or a competing record', () => {
    assert.equal(judgeDkimTxt({ expected, txt: ok(['v=DKIM1; k=rsa; p=MIIBOTHER']) }).result, 'Mismatch');
    assert.equal(
      judgeDkimTxt({ expected, txt: ok(['v=DKIM1; k=ed25519; p=MIIBIjANBgkqAAAA']) }).result,
      'Mismatch',
    );
    const revoked = judgeDkimTxt({ expected, txt: ok(['v=DKIM1; p=']) });
    assert.equal(revoked.result, 'Mismatch');
    assert.match(revoked.message, /revoked/);
    const two = judgeDkimTxt({ expected, txt: ok(['v=DKIM1; p=MIIBIjANBgkqAAAA'], ['v=DKIM1; p=OLD']) });
    assert.equal(two.result, 'Mismatch');
    assert.match(two.message, /2 key records/);
  });

  it('LookupFailed on a temporary failure', () => {
    assert.equal(judgeDkimTxt({ expected, txt: servfail }).result, 'LookupFailed');
  });

  it('parses tag=value lists (RFC 6376 §3.2)', () => {
    assert.deepEqual(
      [...parseTagList(' v = DKIM1 ; k=rsa;p=AB CD ;')!],
      [
        ['v', 'DKIM1'],
        ['k', 'rsa'],
        ['p', 'AB CD'],
      ],
    );
    assert.equal(parseTagList('not a tag list'), undefined);
  });
});

describe('POST /dns/checks body', () => {
  const status = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      assert.ok(e instanceof HttpError);
      return `${e.status} ${e.message}`;
    }
    return 'accepted';
  };
  it('accepts addresses and DKIM records', () => {
    assert.deepEqual(
      parseDnsChecks({
        fcrdns: [{ ip: '2001:db8::1', ehlo: 'mta.example.com' }],
        dkim: [{ domain: 'example.com', selector: 's1', record: 'v=DKIM1; p=AAAA' }],
      }),
      {
        fcrdns: [{ ip: '2001:db8::1', ehlo: 'mta.example.com' }],
        dkim: [{ domain: 'example.com', selector: 's1', record: 'v=DKIM1; p=AAAA' }],
      },
    );
    assert.deepEqual(parseDnsChecks({}), { fcrdns: [], dkim: [] });
  });
  it('refuses malformed input with a 400 naming the field', () => {
    assert.match(
      status(() => parseDnsChecks({ extra: 1 })),
      /^400 body: unknown field "extra"/,
    );
    assert.match(
      status(() => parseDnsChecks({ fcrdns: {} })),
      /^400 fcrdns must be a list/,
    );
    assert.match(
      status(() => parseDnsChecks({ fcrdns: [{ ip: '1.2.3', ehlo: 'a.b' }] })),
      /^400 fcrdns\[0\]\.ip/,
    );
    assert.match(
      status(() => parseDnsChecks({ fcrdns: [{ ip: '1.2.3.4', ehlo: 'a b' }] })),
      /^400 fcrdns\[0\]\.ehlo must be a host name/,
    );
    assert.match(
      status(() => parseDnsChecks({ dkim: [{ domain: 'x.test', selector: 's', record: 'v=DKIM1' }] })),
      /^400 dkim\[0\]\.record/,
    );
    assert.match(
      status(() => parseDnsChecks({ fcrdns: Array(513).fill({ ip: '1.2.3.4', ehlo: 'a.b' }) })),
      /^400 fcrdns: at most 512 entries/,
    );
    assert.match(
      status(() =>
        parseDnsChecks({ dkim: Array(257).fill({ domain: 'x.test', selector: 's', record: 'p=A' }) }),
      ),
      /^400 dkim: at most 256 entries/,
    );
  });
});
