import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  classifyReply,
  describeStatus,
  isStatusCode,
  statusFor,
  type DeliveryOutcome,
  type ReplyInfo,
} from '../../relay/src/classify.js';

/** [input, expected outcome, expected status] */
type Row = [ReplyInfo, DeliveryOutcome, string];

function check(rows: Row[]): void {
  for (const [input, outcome, status] of rows) {
    const label = JSON.stringify(input);
    assert.equal(classifyReply(input), outcome, `classifyReply(${label})`);
    assert.equal(statusFor(input), status, `statusFor(${label})`);
  }
}

describe('classifyReply / statusFor: server replies', () => {
  it('classifies by the basic code class', () => {
    check([
      [{ code: 250 }, 'delivered', '2.0.0'],
      [{ code: 251 }, 'delivered', '2.0.0'],
      [{ code: 421 }, 'deferred', '4.0.0'],
      [{ code: 450 }, 'deferred', '4.0.0'],
      [{ code: 452 }, 'deferred', '4.0.0'],
      [{ code: 550 }, 'bounced', '5.0.0'],
      [{ code: 554 }, 'bounced', '5.0.0'],
    ]);
  });

  it('uses the server enhanced code as the status', () => {
    check([
      [{ code: 250, enhanced: '2.0.0' }, 'delivered', '2.0.0'],
      [{ code: 250, enhanced: '2.6.0' }, 'delivered', '2.6.0'],
      [{ code: 451, enhanced: '4.7.1' }, 'deferred', '4.7.1'],
      [{ code: 452, enhanced: '4.2.2' }, 'deferred', '4.2.2'],
      [{ code: 550, enhanced: '5.1.1' }, 'bounced', '5.1.1'],
      [{ code: 552, enhanced: '5.3.4' }, 'bounced', '5.3.4'],
      [{ code: 556, enhanced: '5.1.10' }, 'bounced', '5.1.10'],
      [{ code: 554, enhanced: '5.7.1', errCode: 'EMESSAGE' }, 'bounced', '5.7.1'],
    ]);
  });

  it('lets the basic code win over a contradicting enhanced code, and keeps the status consistent', () => {
    check([
      [{ code: 550, enhanced: '4.2.2' }, 'bounced', '5.2.2'],
      [{ code: 452, enhanced: '5.2.2' }, 'deferred', '4.2.2'],
      [{ code: 250, enhanced: '5.0.0' }, 'delivered', '2.0.0'],
    ]);
  });

  it('uses the enhanced code only when there is no basic code', () => {
    check([
      [{ enhanced: '5.1.1' }, 'bounced', '5.1.1'],
      [{ enhanced: '4.4.1' }, 'deferred', '4.4.1'],
      [{ enhanced: '2.0.0' }, 'delivered', '2.0.0'],
    ]);
  });

  it('ignores a malformed enhanced code', () => {
    check([
      [{ code: 550, enhanced: '5.1' }, 'bounced', '5.0.0'],
      [{ code: 550, enhanced: '3.1.1' }, 'bounced', '5.0.0'],
      [{ code: 451, enhanced: 'x.y.z' }, 'deferred', '4.0.0'],
    ]);
  });

  it('defers unexpected reply classes (1xx, 3xx)', () => {
    check([
      [{ code: 354 }, 'deferred', '4.0.0'],
      [{ code: 199 }, 'deferred', '4.0.0'],
    ]);
  });

  it('reads codes from the reply text when they are not given apart', () => {
    check([
      [{ message: '550 5.1.1 <bob@example.org>: Recipient address rejected' }, 'bounced', '5.1.1'],
      [{ message: '550-5.1.1 The email account does not exist' }, 'bounced', '5.1.1'],
      [{ message: '452 4.2.2 Mailbox full' }, 'deferred', '4.2.2'],
      [{ message: '250 2.0.0 Ok: queued as 1234' }, 'delivered', '2.0.0'],
      [{ message: '554 Transaction failed' }, 'bounced', '5.0.0'],
      [{ code: 550, message: '550 5.7.1 Relaying denied' }, 'bounced', '5.7.1'],
      [{ errCode: 'EENVELOPE', code: 550, message: '550 5.1.1 no such user' }, 'bounced', '5.1.1'],
      // The enhanced code given apart wins over the one in the text.
      [{ code: 550, enhanced: '5.1.2', message: '550 5.1.1 x' }, 'bounced', '5.1.2'],
      // A number that is not a leading reply code is not one.
      [{ errCode: 'ECONNECTION', message: 'connect ECONNREFUSED 192.0.2.1:25' }, 'deferred', '4.4.1'],
      [{ message: 'Mail command failed: 550 5.1.1 x' }, 'deferred', '4.0.0'],
    ]);
  });
});

describe('classifyReply / statusFor: errors without a reply', () => {
  it('defers connection, timeout, socket, DNS, TLS and protocol errors', () => {
    check([
      [{ errCode: 'ECONNECTION' }, 'deferred', '4.4.1'],
      [{ errCode: 'ETIMEDOUT' }, 'deferred', '4.4.1'],
      [{ errCode: 'ESOCKET' }, 'deferred', '4.4.2'],
      [{ errCode: 'EDNS' }, 'deferred', '4.4.3'],
      [{ errCode: 'ETLS' }, 'deferred', '4.7.5'],
      [{ errCode: 'EPROTOCOL' }, 'deferred', '4.5.0'],
      [{ errCode: 'EREQUIRETLS' }, 'deferred', '4.0.0'],
      [{ errCode: 'ESOMETHINGNEW' }, 'deferred', '4.0.0'],
      [{}, 'deferred', '4.0.0'],
    ]);
  });

  it('tells no answer (4.4.1) from a broken connection (4.4.2) by the error text', () => {
    check([
      [{ errCode: 'ESOCKET', message: 'connect ECONNREFUSED 192.0.2.1:25' }, 'deferred', '4.4.1'],
      [{ errCode: 'ESOCKET', message: 'connect EHOSTUNREACH 192.0.2.1:25' }, 'deferred', '4.4.1'],
      [{ errCode: 'ETIMEDOUT', message: 'Connection timeout' }, 'deferred', '4.4.1'],
      [{ errCode: 'ETIMEDOUT', message: 'Greeting never received' }, 'deferred', '4.4.1'],
      [{ errCode: 'ESOCKET', message: 'read ECONNRESET' }, 'deferred', '4.4.2'],
      [{ errCode: 'ECONNECTION', message: 'Connection closed unexpectedly' }, 'deferred', '4.4.2'],
      [{ errCode: 'ETIMEDOUT', message: 'Timeout' }, 'deferred', '4.4.2'],
    ]);
  });

  it('prefers the caller’s knowledge of whether the session was up', () => {
    check([
      [{ errCode: 'ETIMEDOUT', message: 'Timeout', connected: true }, 'deferred', '4.4.2'],
      [
        { errCode: 'ECONNECTION', message: 'Connection closed unexpectedly', connected: false },
        'deferred',
        '4.4.1',
      ],
      [{ errCode: 'ESOCKET', connected: false }, 'deferred', '4.4.1'],
    ]);
  });

  it('always defers authentication failures, even with a 5xx reply', () => {
    check([
      [{ errCode: 'EAUTH' }, 'deferred', '4.7.0'],
      [
        { errCode: 'EAUTH', code: 535, message: '535 5.7.8 Authentication credentials invalid' },
        'deferred',
        '4.7.8',
      ],
      [{ errCode: 'EAUTH', code: 535, message: '535 Authentication failed' }, 'deferred', '4.7.0'],
      [{ errCode: 'EAUTH', code: 454, enhanced: '4.7.0' }, 'deferred', '4.7.0'],
    ]);
  });

  it('bounces local permanent refusals (EENVELOPE, EMESSAGE without a reply)', () => {
    check([
      [{ errCode: 'EENVELOPE', message: 'Invalid recipient "a b"' }, 'bounced', '5.1.3'],
      [{ errCode: 'EENVELOPE', message: 'Invalid sender "a b"' }, 'bounced', '5.1.7'],
      [{ errCode: 'EENVELOPE', message: 'No recipients defined' }, 'bounced', '5.0.0'],
      [{ errCode: 'EENVELOPE' }, 'bounced', '5.0.0'],
      [{ errCode: 'EMESSAGE', message: 'Message size larger than allowed 10240' }, 'bounced', '5.3.4'],
      [{ errCode: 'EMESSAGE' }, 'bounced', '5.0.0'],
    ]);
  });

  it('but defers them when the server replied 4xx', () => {
    check([
      [{ errCode: 'EENVELOPE', code: 451, message: '451 4.3.0 Try again' }, 'deferred', '4.3.0'],
      [{ errCode: 'EMESSAGE', code: 452 }, 'deferred', '4.0.0'],
    ]);
  });
});

describe('statusFor: expiry and unroutable domains', () => {
  it('reports 4.4.7 for an expired message', () => {
    assert.equal(statusFor({ expired: true }), '4.4.7');
  });

  it('reports 5.1.2, 5.1.10 or 5.4.4 for an unroutable domain', () => {
    assert.equal(statusFor({ unroutable: 'nxdomain' }), '5.1.2');
    assert.equal(statusFor({ unroutable: 'null-mx' }), '5.1.10');
    assert.equal(statusFor({ unroutable: 'no-route' }), '5.4.4');
  });
});

describe('describeStatus / isStatusCode', () => {
  it('describes common statuses by subject and detail', () => {
    assert.equal(describeStatus('5.1.1'), 'bad destination mailbox address');
    assert.equal(describeStatus('4.1.1'), 'bad destination mailbox address');
    assert.equal(describeStatus('4.4.7'), 'delivery time expired');
    assert.equal(describeStatus('5.1.10'), 'recipient address has null MX');
    assert.equal(describeStatus('4.4.1'), 'no answer from host');
    assert.equal(describeStatus('5.9.9'), '');
    assert.equal(describeStatus('nonsense'), '');
  });

  it('accepts only class 2, 4 and 5 with 1-3 digit subject and detail', () => {
    for (const s of ['2.0.0', '4.4.7', '5.1.10', '5.999.999']) assert.equal(isStatusCode(s), true, s);
    for (const s of ['3.0.0', '5.1', '5.1.1 ', '5.1.1000', '', 'x.1.1', '55.1.1'])
      assert.equal(isStatusCode(s), false, s);
  });
});
