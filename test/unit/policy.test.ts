import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import ipaddr from 'ipaddr.js';
import { addressProblem, countReceived, mayRelay, secretEquals, type Cidr } from '../../relay/src/policy.js';

const cidr = (c: string): Cidr => ipaddr.parseCIDR(c);

describe('addressProblem', () => {
  it('accepts a plain local@domain, for senders and recipients', () => {
    for (const a of [
      'user@example.test',
      'first.last+tag@mail.example.test',
      "o'neil@x.test",
      'josé@correo.test',
    ]) {
      assert.equal(addressProblem(a), undefined, a);
      assert.equal(addressProblem(a, { allowNull: true, allowSingleLabel: true }), undefined, a);
    }
  });

  it('refuses the classic relay tricks with a reason naming the trick', () => {
    const cases: [string, RegExp][] = [
      ['a%b@x.test', /routing characters/],
      ['x!y@z.test', /routing characters/],
      ['@a.test:b@c.test', /source route/],
      ['"a b"@x.test', /quoted local part/],
      ['"a"@x.test', /quoted local part/],
      ['a@b@x.test', /more than one @/],
      ['user', /unqualified/],
      ['u@[1.2.3.4]', /address literal/],
      ['u@[IPv6:::1]', /address literal/],
    ];
    for (const [addr, reason] of cases) {
      // the same for senders (single labels allowed) as for recipients
      assert.match(addressProblem(addr) ?? 'accepted', reason, addr);
      assert.match(
        addressProblem(addr, { allowNull: true, allowSingleLabel: true }) ?? 'accepted',
        reason,
        addr,
      );
    }
  });

  it('refuses a single-label domain for recipients but allows it for senders', () => {
    assert.match(addressProblem('user@localhost') ?? 'accepted', /not fully qualified/);
    assert.equal(addressProblem('user@localhost', { allowSingleLabel: true }), undefined);
  });

  it('allows the null sender only when asked', () => {
    assert.equal(addressProblem('', { allowNull: true }), undefined);
    assert.match(addressProblem('') ?? 'accepted', /empty/);
  });

  it('refuses addresses that are too long', () => {
    const long = `${'a'.repeat(64)}@${Array(4).fill('b'.repeat(60)).join('.')}.test`;
    assert.ok(long.length > 254);
    assert.match(addressProblem(long) ?? 'accepted', /too long/);
    assert.match(addressProblem(`${'a'.repeat(65)}@x.test`) ?? 'accepted', /invalid local part/);
    assert.equal(addressProblem(`${'a'.repeat(64)}@x.test`), undefined);
  });

  it('refuses malformed local parts and domains', () => {
    assert.match(addressProblem('.a@x.test') ?? 'accepted', /invalid local part/);
    assert.match(addressProblem('a..b@x.test') ?? 'accepted', /invalid local part/);
    assert.match(addressProblem('a b@x.test') ?? 'accepted', /invalid local part/);
    assert.match(addressProblem('a@-x.test') ?? 'accepted', /invalid domain/);
    assert.match(addressProblem('a@x..test') ?? 'accepted', /invalid domain/);
    assert.match(addressProblem('a@') ?? 'accepted', /invalid domain/);
  });
});

describe('mayRelay', () => {
  const trusted = [cidr('10.1.0.0/16'), cidr('127.0.0.0/8'), cidr('fd00:1::/64')];

  it('lets an authenticated client relay from anywhere', () => {
    assert.equal(
      mayRelay({ authenticatedUser: 'alice', clientIp: '203.0.113.9', trustedNetworks: [] }),
      true,
    );
  });

  it('lets clients inside a trusted IPv4 or IPv6 network relay without AUTH', () => {
    assert.equal(mayRelay({ clientIp: '10.1.200.3', trustedNetworks: trusted }), true);
    assert.equal(mayRelay({ clientIp: '127.0.0.1', trustedNetworks: trusted }), true);
    assert.equal(mayRelay({ clientIp: 'fd00:1::42', trustedNetworks: trusted }), true);
  });

  it('treats an IPv4-mapped IPv6 client address as the IPv4 address', () => {
    assert.equal(mayRelay({ clientIp: '::ffff:127.0.0.1', trustedNetworks: trusted }), true);
    assert.equal(mayRelay({ clientIp: '::ffff:10.1.0.1', trustedNetworks: trusted }), true);
    assert.equal(mayRelay({ clientIp: '::ffff:10.2.0.1', trustedNetworks: trusted }), false);
  });

  it('refuses unauthenticated clients outside the trusted networks', () => {
    assert.equal(mayRelay({ clientIp: '10.2.0.1', trustedNetworks: trusted }), false);
    assert.equal(mayRelay({ clientIp: 'fd00:2::1', trustedNetworks: trusted }), false);
    assert.equal(mayRelay({ clientIp: '127.0.0.1', trustedNetworks: [] }), false);
    assert.equal(mayRelay({ clientIp: '::1', trustedNetworks: [cidr('127.0.0.0/8')] }), false);
    assert.equal(
      mayRelay({ authenticatedUser: '', clientIp: '203.0.113.9', trustedNetworks: trusted }),
      false,
    );
  });

  it('refuses a client address that does not parse', () => {
    assert.equal(
      mayRelay({ clientIp: 'not-an-ip', trustedNetworks: [cidr('0.0.0.0/0'), cidr('::/0')] }),
      false,
    );
  });
});

describe('countReceived', () => {
  it('counts Received fields in the header section only, case-insensitively', () => {
    const raw = Buffer.from(
      'Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n' +
        'RECEIVED: from c\r\n\tby d; Mon, 1 Jan 2024 00:00:00 +0000\r\n' +
        'X-Received: not counted\r\n' +
        'Subject: hi\r\n' +
        '\r\n' +
        'Received: in the body is not a header\r\n',
    );
    assert.equal(countReceived(raw), 2);
  });

  it('works with bare LF line ends and without a body', () => {
    assert.equal(countReceived(Buffer.from('Received: x\nreceived: y\nSubject: s\n\nReceived: z\n')), 2);
    assert.equal(countReceived(Buffer.from('Received: x\r\nReceived: y\r\n')), 2);
    assert.equal(countReceived(Buffer.from('Subject: none\r\n\r\nbody')), 0);
  });

  it('counts 30 hops', () => {
    const head = Array.from(
      { length: 30 },
      (_, i) => `Received: from h${i} by h${i + 1}; Mon, 1 Jan 2024 00:00:00 +0000\r\n`,
    ).join('');
    assert.equal(countReceived(Buffer.from(`${head}Subject: loop\r\n\r\nbody\r\n`)), 30);
  });
});

describe('secretEquals', () => {
  it('is true only for identical secrets', () => {
    assert.equal(secretEquals('hunter2', 'hunter2'), true);
    assert.equal(secretEquals(Buffer.from('hunter2'), 'hunter2'), true);
    assert.equal(secretEquals('hunter2', 'hunter3'), false);
    assert.equal(secretEquals('hunter2', 'Hunter2'), false);
  });

  it('handles different lengths and empty secrets without throwing', () => {
    assert.equal(secretEquals('short', 'a much longer secret'), false);
    assert.equal(secretEquals('', 'x'), false);
    assert.equal(secretEquals('', ''), true);
  });
});
