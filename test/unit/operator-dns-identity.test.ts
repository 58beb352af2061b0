// The operator's DNS identity decisions as pure functions: an IpPool's status.addresses, its
// ReverseDNSVerified condition, requireFcrdns in allocation, when to check again; and status.dkim's DNS
// results. No churn: the same checks give the same status.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { IpPool } from '../../operator/src/api/types.js';
import { findCondition } from '../../operator/src/conditions.js';
import { allocate } from '../../operator/src/ippool/allocate.js';
import { poolStatus } from '../../operator/src/ippool/status.js';
import {
  addressEntries,
  allocatable,
  checkDueIn,
  checkSignature,
  dnsStatus,
  type AddressDns,
} from '../../operator/src/ippool/verify.js';
import { withDnsResults } from '../../operator/src/relay/dkim-dns.js';
import type { DkimRecord } from '../../operator/src/relay/dkim.js';
import type { FcrdnsCheck, FcrdnsResult } from '../../relay/src/contract/index.js';

const T0 = new Date('2026-12-05T07:00:00Z');
const T1 = new Date('2026-12-05T08:00:00Z');
const IPS = ['192.0.2.1', '192.0.2.2', '192.0.2.3'];
const pool = (o: { require?: boolean; status?: IpPool['status'] } = {}): IpPool =>
  ({
    apiVersion: 'cartero.io/v1alpha1',
    kind: 'IpPool',
    metadata: { name: 'p', namespace: 'ns', generation: 1 },
    spec: {
      addresses: IPS.map((ip, i) => ({ ip, ehlo: `mta${i + 1}.example` })),
      ...(o.require ? { requireFcrdns: true } : {}),
    },
    ...(o.status ? { status: o.status } : {}),
  }) as IpPool;
const check = (ip: string, result: FcrdnsResult, ptr: string[] = []): FcrdnsCheck => ({
  ip,
  ehlo: `mta${IPS.indexOf(ip) + 1}.example`,
  result,
  ptr,
  message: `${result} message`,
});

describe('IpPool status.addresses', () => {
  it('one entry per checked address, in spec order, PTR names sorted; since stays while the result does', () => {
    const first = addressEntries(
      pool(),
      [check('192.0.2.2', 'PtrMissing'), check('192.0.2.1', 'Verified', ['b.example', 'mta1.example'])],
      T0,
    );
    assert.deepEqual(
      first.map((e) => [e.ip, e.result, e.ptr, e.since]),
      [
        ['192.0.2.1', 'Verified', ['b.example', 'mta1.example'], '2026-12-05T07:00:00Z'],
        ['192.0.2.2', 'PtrMissing', [], '2026-12-05T07:00:00Z'],
      ],
    );
    const again = addressEntries(
      pool({ status: { addresses: first } }),
      [
        check('192.0.2.1', 'Verified', ['mta1.example', 'b.example']),
        check('192.0.2.2', 'Verified', ['mta2.example']),
      ],
      T1,
    );
    assert.deepEqual(again[0], first[0], 'unchanged: no status write');
    assert.equal(again[1].since, '2026-12-05T08:00:00Z', 'a new result has a new since');
  });

  it('a temporary failure keeps the result seen before; without a check the last entries stay', () => {
    const before: AddressDns[] = addressEntries(
      pool(),
      [check('192.0.2.1', 'Verified', ['mta1.example'])],
      T0,
    );
    const p = pool({ status: { addresses: before } });
    assert.deepEqual(addressEntries(p, [check('192.0.2.1', 'LookupFailed')], T1), before);
    assert.deepEqual(addressEntries(p, undefined, T1), before);
    // an entry for an address no longer in the spec, or with another EHLO name, goes
    const moved = { ...p, spec: { addresses: [{ ip: '192.0.2.1', ehlo: 'other.example' }] } } as IpPool;
    assert.deepEqual(addressEntries(moved, undefined, T1), []);
  });
});

describe('ReverseDNSVerified', () => {
  const status = (p: IpPool, entries: AddressDns[], o: { noResolver?: boolean; checkError?: string } = {}) =>
    dnsStatus(
      p,
      poolStatus(p, allocate(p, []), T0).status,
      { entries, noResolver: !!o.noResolver, ...o },
      T0,
    );

  it('True when every address is verified, with N/M in status.verified', () => {
    const entries = addressEntries(
      pool(),
      IPS.map((ip) => check(ip, 'Verified')),
      T0,
    );
    const s = status(pool(), entries);
    assert.equal(s.verified, '3/3');
    assert.deepEqual(
      [
        findCondition(s.conditions, 'ReverseDNSVerified')?.status,
        findCondition(s.conditions, 'ReverseDNSVerified')?.reason,
      ],
      ['True', 'Verified'],
    );
  });

  it('False naming the addresses per result, the worst result as reason', () => {
    const entries = addressEntries(
      pool(),
      [check('192.0.2.1', 'EhloMismatch'), check('192.0.2.2', 'PtrMissing'), check('192.0.2.3', 'Verified')],
      T0,
    );
    const c = findCondition(status(pool(), entries).conditions, 'ReverseDNSVerified')!;
    assert.equal(c.status, 'False');
    assert.equal(c.reason, 'PtrMissing');
    assert.match(
      c.message!,
      /^1 of 3 addresses verified; PtrMissing: 192\.0\.2\.2; EhloMismatch: 192\.0\.2\.1/,
    );
  });

  it('Unknown NoResolver while no relay pod can check and addresses were never checked', () => {
    const c = findCondition(status(pool(), [], { noResolver: true }).conditions, 'ReverseDNSVerified')!;
    assert.deepEqual([c.status, c.reason], ['Unknown', 'NoResolver']);
    assert.match(c.message!, /3 of 3 addresses not checked yet: no Ready relay pod/);
    const f = findCondition(
      status(pool(), [], { checkError: 'fleet-0: 500' }).conditions,
      'ReverseDNSVerified',
    )!;
    assert.deepEqual([f.status, f.reason], ['Unknown', 'CheckFailed']);
  });
});

describe('requireFcrdns', () => {
  it('without it every address may be allocated', () => {
    assert.equal(allocatable(pool(), [])('192.0.2.3'), true);
  });

  it('before any check and allocation: only the first address, so one pod can start and check', () => {
    const p = pool({ require: true });
    const r = allocate(
      p,
      [
        { relay: 'f', pod: 'f-0' },
        { relay: 'f', pod: 'f-1' },
      ],
      allocatable(p, []),
    );
    assert.deepEqual(
      r.allocations.map((a) => [a.pod, a.ip]),
      [['f-0', '192.0.2.1']],
    );
    assert.deepEqual(
      r.unallocated.map((w) => w.pod),
      ['f-1'],
    );
    const s = poolStatus(p, r, T0).status;
    assert.match(
      findCondition(s.conditions, 'Ready')!.message!,
      /not allocated while their reverse DNS is not verified \(requireFcrdns\): 192\.0\.2\.2, 192\.0\.2\.3/,
    );
  });

  it('then only verified addresses go to new pods; an allocated one that is not verified stays, Degraded', () => {
    const allocations = [{ ip: '192.0.2.1', relay: 'f', pod: 'f-0' }];
    const p = pool({ require: true, status: { allocations } });
    const entries = addressEntries(
      p,
      [
        check('192.0.2.1', 'ForwardMismatch'),
        check('192.0.2.2', 'PtrMissing'),
        check('192.0.2.3', 'Verified'),
      ],
      T0,
    );
    const r = allocate(
      p,
      [
        { relay: 'f', pod: 'f-0' },
        { relay: 'f', pod: 'f-1' },
        { relay: 'f', pod: 'f-2' },
      ],
      allocatable(p, entries),
    );
    assert.deepEqual(
      r.allocations.map((a) => [a.pod, a.ip]),
      [
        ['f-0', '192.0.2.1'],
        ['f-1', '192.0.2.3'],
      ],
    );
    assert.deepEqual(
      r.unallocated.map((w) => w.pod),
      ['f-2'],
    );
    assert.deepEqual(r.skipped, ['192.0.2.2']);
    // f-2 waits: Degraded says the pool is exhausted; without it, Degraded names the unverified allocation
    const r2 = allocate(p, [{ relay: 'f', pod: 'f-0' }], allocatable(p, entries));
    const s = dnsStatus(p, poolStatus(p, r2, T0).status, { entries, noResolver: false }, T0);
    const d = findCondition(s.conditions, 'Degraded')!;
    assert.deepEqual([d.status, d.reason], ['True', 'UnverifiedAllocated']);
    assert.match(d.message!, /192\.0\.2\.1 \(f-0\)/);
  });
});

describe('when to check', () => {
  it('at once without a check or after a spec change; else when the interval has passed', () => {
    const sig = checkSignature(pool());
    assert.equal(checkDueIn(undefined, sig, 600_000, 0), 0);
    assert.equal(checkDueIn({ sig: 'other', at: 0 }, sig, 600_000, 1), 0);
    assert.equal(checkDueIn({ sig, at: 1000 }, sig, 600_000, 2000), 599_000);
    assert.equal(checkDueIn({ sig, at: 1000 }, sig, 600_000, 700_000), 0);
  });
});

describe('status.dkim DNS results', () => {
  const rec = (name: string, value?: string): DkimRecord => ({
    tenant: 't',
    domain: 'shop.example',
    selector: name,
    name: `${name}._domainkey.shop.example`,
    ...(value ? { value } : { problem: 'Secret missing' }),
  });
  const chk = (name: string, value: string, result: 'Published' | 'Missing' | 'LookupFailed') =>
    [
      `${name}._domainkey.shop.example`,
      {
        domain: 'shop.example',
        selector: name,
        name: `${name}._domainkey.shop.example`,
        result,
        message: result,
        value,
      },
    ] as const;

  it('published from a check of the same value; records without value unchanged', () => {
    const out = withDnsResults(
      [rec('a', 'v=DKIM1; p=A'), rec('b', 'v=DKIM1; p=B'), rec('c')],
      new Map([chk('a', 'v=DKIM1; p=A', 'Published'), chk('b', 'v=DKIM1; p=OLD', 'Published')]),
      undefined,
    );
    assert.deepEqual(
      out.map((r) => [r.selector, r.published, r.dnsResult]),
      [
        ['a', true, 'Published'],
        ['b', undefined, undefined],
        ['c', undefined, undefined],
      ],
    );
  });

  it('between checks (or after a restart) the previous status stands; LookupFailed does not overwrite it', () => {
    const prev = withDnsResults(
      [rec('a', 'v=DKIM1; p=A')],
      new Map([chk('a', 'v=DKIM1; p=A', 'Missing')]),
      undefined,
    );
    assert.deepEqual(withDnsResults([rec('a', 'v=DKIM1; p=A')], undefined, prev), prev);
    assert.deepEqual(
      withDnsResults([rec('a', 'v=DKIM1; p=A')], new Map([chk('a', 'v=DKIM1; p=A', 'LookupFailed')]), prev),
      prev,
    );
    // a new key: the old result does not carry over
    assert.equal(withDnsResults([rec('a', 'v=DKIM1; p=NEW')], undefined, prev)[0].dnsResult, undefined);
  });
});
