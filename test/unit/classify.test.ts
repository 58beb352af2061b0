/** The one reply classifier: every decision the relay makes about a delivery result, as a table. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  classify,
  describeStatus,
  isHardBounce,
  isStatusCode,
  resultOf,
  statusFor,
  type Cause,
  type Decision,
} from '../../relay/src/delivery/classify.js';

/** [input, expected decision, expected status] */
type Row = [Cause, Decision, string];

function check(rows: Row[]): void {
  for (const [input, decision, status] of rows) {
    const label = JSON.stringify(input);
    assert.deepEqual(classify(input), { decision, status }, `classify(${label})`);
    assert.equal(statusFor(input), status, `statusFor(${label})`);
  }
}

describe('classify: server replies', () => {
  it('decides by the basic code class', () => {
    check([
      [{ code: 250 }, 'deliver', '2.0.0'],
      [{ code: 251 }, 'deliver', '2.0.0'],
      [{ code: 450 }, 'defer', '4.0.0'],
      [{ code: 451 }, 'defer', '4.0.0'],
      [{ code: 452 }, 'defer', '4.0.0'],
      [{ code: 550 }, 'bounce', '5.0.0'],
      [{ code: 552 }, 'bounce', '5.0.0'],
      [{ code: 554 }, 'bounce', '5.0.0'],
    ]);
  });

  it('uses the server enhanced code as the status', () => {
    check([
      [{ code: 250, enhanced: '2.0.0' }, 'deliver', '2.0.0'],
      [{ code: 250, enhanced: '2.6.0' }, 'deliver', '2.6.0'],
      [{ code: 451, enhanced: '4.7.1' }, 'defer', '4.7.1'],
      [{ code: 450, enhanced: '4.1.1' }, 'defer', '4.1.1'],
      [{ code: 552, enhanced: '5.3.4' }, 'bounce', '5.3.4'],
      [{ code: 554, enhanced: '5.7.1', errCode: 'EMESSAGE' }, 'bounce', '5.7.1'],
    ]);
  });

  it('hard-bounces 5.1.x address failures, except the sender’s address (5.1.7, 5.1.8); 5.7.x is soft', () => {
    check([
      [{ code: 550, enhanced: '5.1.1' }, 'hard-bounce', '5.1.1'],
      [{ code: 550, enhanced: '5.1.0' }, 'hard-bounce', '5.1.0'],
      [{ code: 553, enhanced: '5.1.3' }, 'hard-bounce', '5.1.3'],
      [{ code: 556, enhanced: '5.1.10' }, 'hard-bounce', '5.1.10'],
      [{ code: 550, enhanced: '4.1.1' }, 'hard-bounce', '5.1.1'],
      [{ code: 553, enhanced: '5.1.7' }, 'bounce', '5.1.7'],
      [{ code: 550, enhanced: '5.1.8' }, 'bounce', '5.1.8'],
      [{ code: 550, enhanced: '5.7.1' }, 'bounce', '5.7.1'],
      [{ code: 550, enhanced: '5.7.26' }, 'bounce', '5.7.26'],
      [{ code: 554, enhanced: '5.7.0' }, 'bounce', '5.7.0'],
      [{ code: 550, enhanced: '5.4.1' }, 'bounce', '5.4.1'],
    ]);
  });

  it('defers a full mailbox, 4xx or 5xx (X.2.2 is a persistent transient failure, RFC 3463)', () => {
    check([
      [{ code: 452, enhanced: '4.2.2' }, 'defer', '4.2.2'],
      [{ message: '452 4.2.2 The email account that you tried to reach is over quota' }, 'defer', '4.2.2'],
      [{ code: 552, enhanced: '5.2.2' }, 'defer', '4.2.2'],
      [{ message: '552-5.2.2 The recipient’s inbox is out of storage space.' }, 'defer', '4.2.2'],
      [{ code: 550, enhanced: '4.2.2' }, 'defer', '4.2.2'],
      // other mailbox statuses stay permanent
      [{ code: 550, enhanced: '5.2.1' }, 'bounce', '5.2.1'],
      [{ code: 552, enhanced: '5.2.3' }, 'bounce', '5.2.3'],
    ]);
  });

  it('lets the basic code win over a contradicting enhanced code, and keeps the status consistent', () => {
    check([
      [{ code: 550, enhanced: '4.7.1' }, 'bounce', '5.7.1'],
      [{ code: 451, enhanced: '5.7.1' }, 'defer', '4.7.1'],
      [{ code: 451, enhanced: '5.1.1' }, 'defer', '4.1.1'],
      [{ code: 250, enhanced: '5.0.0' }, 'deliver', '2.0.0'],
    ]);
  });

  it('never lets the text turn a 5xx into a deferral: 550 “try again later” bounces', () => {
    check([
      [{ code: 550, message: '550 5.7.1 Service unavailable, try again later' }, 'bounce', '5.7.1'],
      [{ message: '550 Mailbox busy, try again later' }, 'bounce', '5.0.0'],
      [{ message: '550 5.1.1 Unknown user; please try again later' }, 'hard-bounce', '5.1.1'],
      [
        { message: '554 5.7.1 [TS03] All messages from 192.0.2.1 will be permanently deferred' },
        'bounce',
        '5.7.1',
      ],
    ]);
  });

  it('uses the enhanced code only when there is no basic code', () => {
    check([
      [{ enhanced: '5.1.1' }, 'hard-bounce', '5.1.1'],
      [{ enhanced: '5.7.1' }, 'bounce', '5.7.1'],
      [{ enhanced: '4.4.1' }, 'defer', '4.4.1'],
      [{ enhanced: '2.0.0' }, 'deliver', '2.0.0'],
    ]);
  });

  it('ignores a malformed enhanced code: the basic code decides, never a hard bounce', () => {
    check([
      [{ code: 550, enhanced: '5.1' }, 'bounce', '5.0.0'],
      [{ code: 550, enhanced: '3.1.1' }, 'bounce', '5.0.0'],
      [{ code: 550, enhanced: '5.1.1000' }, 'bounce', '5.0.0'],
      [{ code: 451, enhanced: 'x.y.z' }, 'defer', '4.0.0'],
      [{ message: '550 5.1 No such user' }, 'bounce', '5.0.0'],
      [{ message: '550 5.1.1x No such user' }, 'bounce', '5.0.0'],
      [{ message: '451 4.7.1000 later' }, 'defer', '4.0.0'],
    ]);
  });

  it('defers reply codes outside 2xx-5xx (1xx, 3xx, 6xx and nonsense)', () => {
    check([
      [{ code: 354 }, 'defer', '4.0.0'],
      [{ code: 199 }, 'defer', '4.0.0'],
      [{ code: 600 }, 'defer', '4.0.0'],
      [{ code: 0 }, 'defer', '4.0.0'],
      [{ code: 354, enhanced: '5.1.1' }, 'defer', '4.1.1'],
      [{ message: '354 End data with <CR><LF>.<CR><LF>' }, 'defer', '4.0.0'],
    ]);
  });

  it('reads codes from the reply text when they are not given apart', () => {
    check([
      [{ message: '550 5.1.1 <bob@example.org>: Recipient address rejected' }, 'hard-bounce', '5.1.1'],
      [{ message: '550-5.1.1 The email account does not exist' }, 'hard-bounce', '5.1.1'],
      [{ message: '250 2.0.0 Ok: queued as 1234' }, 'deliver', '2.0.0'],
      [{ message: '554 Transaction failed' }, 'bounce', '5.0.0'],
      [{ code: 550, message: '550 5.7.1 Relaying denied' }, 'bounce', '5.7.1'],
      [{ errCode: 'EENVELOPE', code: 550, message: '550 5.1.1 no such user' }, 'hard-bounce', '5.1.1'],
      // The enhanced code given apart wins over the one in the text.
      [{ code: 550, enhanced: '5.1.2', message: '550 5.1.1 x' }, 'hard-bounce', '5.1.2'],
      // A number that is not a leading reply code is not one.
      [{ errCode: 'ECONNECTION', message: 'connect ECONNREFUSED 192.0.2.1:25' }, 'defer', '4.4.1'],
      [{ message: 'Mail command failed: 550 5.1.1 x' }, 'defer', '4.0.0'],
    ]);
  });
});

describe('classify: throttling replies', () => {
  const throttles: [number | undefined, string][] = [
    [421, '421 4.7.0 Try again later, closing connection. (EHLO) - gsmtp'],
    [421, 'anything at all'],
    [
      421,
      '421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1',
    ],
    [
      450,
      '450 4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited.',
    ],
    [451, '451 4.7.0 Too many connections from your host'],
    [452, '452 4.7.0 Too many concurrent SMTP connections; please try again later'],
    [451, '451 4.7.500 Server busy. Please try again later from [192.0.2.1]. (S77719)'],
    [451, '451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation.'],
    [451, '451 Temporarily deferred due to user complaints [TSS04]'],
    [450, '450 4.7.1 Slow down: you are sending too fast'],
    [451, '451 4.7.1 Rate-limit exceeded'],
    [451, '451 4.7.1 Throttled: too much mail from 192.0.2.1'],
    [undefined, '421 4.3.2 Service shutting down'],
    [undefined, '451 4.7.1 RATE LIMIT exceeded'],
  ];
  for (const [code, message] of throttles) {
    it(`throttle: ${code ?? '-'} ${message.slice(0, 60)}`, () => {
      const c = classify({ code, message });
      assert.equal(c.decision, 'throttle');
      assert.match(c.status, /^4\./);
    });
  }

  const others: [number | undefined, string, Decision][] = [
    [451, '451 4.3.0 Error: queue file write error', 'defer'],
    [451, '451 4.3.0 Temporary local problem - please try later', 'defer'],
    [452, '452 4.5.3 Too many recipients (at most 100 per message)', 'defer'],
    [
      450,
      '450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered',
      'defer',
    ],
    [452, '452 4.2.2 The email account that you tried to reach is over quota', 'defer'],
    [550, '550 5.7.1 Service unavailable, rate limited, too many connections, try again later', 'bounce'],
    [554, '554 5.7.1 [TS03] All messages from 192.0.2.1 will be permanently deferred', 'bounce'],
    [250, '250 2.0.0 OK try again later', 'deliver'],
    [undefined, 'Connection timeout', 'defer'],
    [undefined, '', 'defer'],
  ];
  for (const [code, message, decision] of others) {
    it(`not a throttle: ${code ?? '-'} ${message.slice(0, 60)}`, () => {
      assert.equal(classify({ code, message }).decision, decision);
    });
  }

  it('a 421 greeting throttles; a peer’s 421 only defers', () => {
    check([
      [{ stage: 'connect', code: 421, message: '421 4.7.0 Too many connections' }, 'throttle', '4.7.0'],
      [{ peer: true, code: 421, message: '421 4.3.2 shutting down' }, 'defer', '4.3.2'],
    ]);
  });
});

describe('classify: the stage and the hop', () => {
  it('defers a 5xx before the transaction (greeting, EHLO, STARTTLS, AUTH): the route failed, not the recipient', () => {
    check([
      [{ stage: 'connect', code: 554, message: '554 5.7.1 No SMTP service here' }, 'defer', '4.7.1'],
      [{ stage: 'connect', code: 554 }, 'defer', '4.0.0'],
      [{ stage: 'connect', code: 550, enhanced: '5.1.1' }, 'defer', '4.1.1'],
      [{ stage: 'session', code: 535, message: '535 5.7.8 bad credentials' }, 'defer', '4.7.8'],
      [{ stage: 'connect', code: 451 }, 'defer', '4.0.0'],
    ]);
  });

  it('bounces a 5xx to MAIL FROM, RCPT TO and DATA', () => {
    check([
      [{ stage: 'mail', code: 553, message: '553 5.1.8 sender domain does not exist' }, 'bounce', '5.1.8'],
      [{ stage: 'mail', code: 550, message: '550 5.7.1 Relaying denied' }, 'bounce', '5.7.1'],
      [{ stage: 'rcpt', code: 550, message: '550 5.1.1 No such user' }, 'hard-bounce', '5.1.1'],
      [{ stage: 'data', code: 554, message: '554 5.7.1 Message rejected as spam' }, 'bounce', '5.7.1'],
      [{ stage: 'data', code: 552, message: '552 5.3.4 Message too big' }, 'bounce', '5.3.4'],
    ]);
  });

  it('defers whatever a peer relay answers during a drain, with a class 4 status', () => {
    check([
      [{ peer: true, stage: 'rcpt', code: 550, message: '550 5.1.1 No such user' }, 'defer', '4.1.1'],
      [{ peer: true, stage: 'data', code: 554 }, 'defer', '4.0.0'],
      [{ peer: true, errCode: 'EMESSAGE' }, 'defer', '4.0.0'],
      [{ peer: true, code: 250 }, 'deliver', '2.0.0'],
    ]);
  });

  it('takes a connection error after the session was set up as a broken connection (4.4.2)', () => {
    check([
      [{ stage: 'data', errCode: 'ETIMEDOUT', message: 'Timeout' }, 'defer', '4.4.2'],
      [{ stage: 'mail', errCode: 'ECONNECTION', message: 'Connection closed' }, 'defer', '4.4.2'],
      [{ stage: 'connect', errCode: 'ETIMEDOUT', message: 'Connection timeout' }, 'defer', '4.4.1'],
      [
        { stage: 'connect', errCode: 'ECONNECTION', message: 'Connection closed unexpectedly' },
        'defer',
        '4.4.2',
      ],
    ]);
  });
});

describe('classify: errors without a reply (every nodemailer error code)', () => {
  it('defers connection, timeout, socket, DNS, TLS, protocol and local errors', () => {
    check([
      [{ errCode: 'ECONNECTION' }, 'defer', '4.4.1'],
      [{ errCode: 'ETIMEDOUT' }, 'defer', '4.4.1'],
      [{ errCode: 'ESOCKET' }, 'defer', '4.4.2'],
      [{ errCode: 'EPROXY' }, 'defer', '4.4.1'],
      [{ errCode: 'EDNS' }, 'defer', '4.4.3'],
      [{ errCode: 'ETLS' }, 'defer', '4.7.5'],
      [{ errCode: 'EPROTOCOL' }, 'defer', '4.5.0'],
      [{ errCode: 'ESTREAM' }, 'defer', '4.3.0'],
      [{ errCode: 'ECONFIG' }, 'defer', '4.3.5'],
      [{ errCode: 'EREQUIRETLS' }, 'defer', '4.0.0'],
      [{ errCode: 'EABORT' }, 'defer', '4.0.0'],
      [{ errCode: 'EOTP' }, 'defer', '4.0.0'],
      [{ errCode: 'EMAXLIMIT' }, 'defer', '4.0.0'],
      [{ errCode: 'EMAXRECIPIENTS' }, 'defer', '4.0.0'],
      [{ errCode: 'ESENDMAIL' }, 'defer', '4.0.0'],
      [{ errCode: 'ESES' }, 'defer', '4.0.0'],
      [{ errCode: 'EFILEACCESS' }, 'defer', '4.0.0'],
      [{ errCode: 'EURLACCESS' }, 'defer', '4.0.0'],
      [{ errCode: 'EFETCH' }, 'defer', '4.0.0'],
      [{ errCode: 'ESOMETHINGNEW' }, 'defer', '4.0.0'],
      [{}, 'defer', '4.0.0'],
    ]);
  });

  it('tells no answer (4.4.1) from a broken connection (4.4.2) by the error text', () => {
    check([
      [{ errCode: 'ESOCKET', message: 'connect ECONNREFUSED 192.0.2.1:25' }, 'defer', '4.4.1'],
      [{ errCode: 'ESOCKET', message: 'connect EHOSTUNREACH 192.0.2.1:25' }, 'defer', '4.4.1'],
      [{ errCode: 'ETIMEDOUT', message: 'Connection timeout' }, 'defer', '4.4.1'],
      [{ errCode: 'ETIMEDOUT', message: 'Greeting never received' }, 'defer', '4.4.1'],
      [{ errCode: 'ESOCKET', message: 'read ECONNRESET' }, 'defer', '4.4.2'],
      [{ errCode: 'ECONNECTION', message: 'Connection closed unexpectedly' }, 'defer', '4.4.2'],
      [{ errCode: 'ETIMEDOUT', message: 'Timeout' }, 'defer', '4.4.2'],
    ]);
  });

  it('prefers the caller’s knowledge of whether the session was up', () => {
    check([
      [{ errCode: 'ETIMEDOUT', message: 'Timeout', connected: true }, 'defer', '4.4.2'],
      [
        { errCode: 'ECONNECTION', message: 'Connection closed unexpectedly', connected: false },
        'defer',
        '4.4.1',
      ],
      [{ errCode: 'ESOCKET', connected: false }, 'defer', '4.4.1'],
      [{ stage: 'data', errCode: 'ESOCKET', connected: false }, 'defer', '4.4.1'],
    ]);
  });

  it('always defers our own authentication failures, even with a 5xx reply', () => {
    check([
      [{ errCode: 'EAUTH' }, 'defer', '4.7.0'],
      [{ errCode: 'ENOAUTH' }, 'defer', '4.7.0'],
      [{ errCode: 'EOAUTH2' }, 'defer', '4.7.0'],
      [
        { errCode: 'EAUTH', code: 535, message: '535 5.7.8 Authentication credentials invalid' },
        'defer',
        '4.7.8',
      ],
      [{ errCode: 'EAUTH', code: 535, message: '535 Authentication failed' }, 'defer', '4.7.0'],
      [{ errCode: 'EAUTH', code: 454, enhanced: '4.7.0' }, 'defer', '4.7.0'],
      [{ errCode: 'EAUTH', code: 550, enhanced: '5.1.1' }, 'defer', '4.1.1'],
    ]);
  });

  it('bounces local permanent refusals (EENVELOPE, EMESSAGE without a reply)', () => {
    check([
      [{ errCode: 'EENVELOPE', message: 'Invalid recipient "a b"' }, 'hard-bounce', '5.1.3'],
      [{ errCode: 'EENVELOPE', message: 'Invalid sender "a b"' }, 'bounce', '5.1.7'],
      [{ errCode: 'EENVELOPE', message: 'No recipients defined' }, 'bounce', '5.0.0'],
      [{ errCode: 'EENVELOPE', message: 'Invalid DSN NOTIFY value' }, 'bounce', '5.0.0'],
      [{ errCode: 'EENVELOPE' }, 'bounce', '5.0.0'],
      [{ errCode: 'EMESSAGE', message: 'Message size larger than allowed 10240' }, 'bounce', '5.3.4'],
      [
        { stage: 'mail', errCode: 'EMESSAGE', message: 'Message size larger than allowed 10240' },
        'bounce',
        '5.3.4',
      ],
      [{ errCode: 'EMESSAGE', message: 'Empty message' }, 'bounce', '5.0.0'],
      [{ errCode: 'EMESSAGE' }, 'bounce', '5.0.0'],
    ]);
  });

  it('but follows the server when it replied', () => {
    check([
      [{ errCode: 'EENVELOPE', code: 451, message: '451 4.3.0 Try again' }, 'defer', '4.3.0'],
      [{ errCode: 'EMESSAGE', code: 452 }, 'defer', '4.0.0'],
      [{ errCode: 'EMESSAGE', code: 451, message: '451 4.7.1 Throttled' }, 'throttle', '4.7.1'],
    ]);
  });
});

describe('classify: DNS, holds, local errors and expiry', () => {
  it('hard-bounces NXDOMAIN (5.1.2) and a null MX (5.1.10); bounces no usable host (5.4.4); defers a failed lookup (4.4.3)', () => {
    check([
      [{ dns: 'nxdomain' }, 'hard-bounce', '5.1.2'],
      [{ dns: 'null-mx' }, 'hard-bounce', '5.1.10'],
      [{ dns: 'no-route' }, 'bounce', '5.4.4'],
      [{ dns: 'temporary' }, 'defer', '4.4.3'],
    ]);
  });

  it('defers recipients held back by a back-off or a pool cap (4.4.5) and on a local error (4.3.0)', () => {
    check([
      [{ held: 'backoff' }, 'defer', '4.4.5'],
      [{ held: 'pool-cap' }, 'defer', '4.4.5'],
      [{ localError: true }, 'defer', '4.3.0'],
    ]);
  });

  it('bounces an expired message with 4.4.7, a soft bounce', () => {
    check([[{ expired: true }, 'bounce', '4.4.7']]);
  });
});

describe('isHardBounce / resultOf', () => {
  it('counts 5.1.x except the sender’s address as hard', () => {
    for (const s of ['5.1.1', '5.1.0', '5.1.2', '5.1.3', '5.1.6', '5.1.10'])
      assert.equal(isHardBounce(s), true, s);
    for (const s of ['5.1.7', '5.1.8', '4.1.1', '5.7.1', '5.2.2', '5.4.4', '4.4.7', '5.1', '5.10.1', ''])
      assert.equal(isHardBounce(s), false, s);
  });

  it('agrees with classify: a bounce is hard exactly when its status is', () => {
    for (const enhanced of ['5.1.1', '5.1.7', '5.7.1', '5.3.4', '5.1.10', '5.4.4']) {
      const c = classify({ code: 550, enhanced });
      assert.equal(c.decision === 'hard-bounce', isHardBounce(c.status), enhanced);
    }
  });

  it('maps decisions to the engine’s results', () => {
    assert.equal(resultOf('deliver'), 'delivered');
    assert.equal(resultOf('defer'), 'deferred');
    assert.equal(resultOf('throttle'), 'deferred');
    assert.equal(resultOf('bounce'), 'bounced');
    assert.equal(resultOf('hard-bounce'), 'bounced');
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
