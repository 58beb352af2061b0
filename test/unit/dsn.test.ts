import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { simpleParser, type ParsedMail } from 'mailparser';
import {
  dsnRecipientsWanted,
  renderDsn,
  rfc5322Date,
  type DsnInput,
  type DsnRecipient,
} from '../../relay/src/dsn.js';

const ORIGINAL_HEADERS =
  'Received: from client.example.com ([192.0.2.10])\r\n' +
  '\tby relay.example.com with ESMTPSA id Q1A2B3\r\n' +
  'From: Alice <alice@example.com>\r\n' +
  'To: Bob <bob@example.org>\r\n' +
  'Subject: Quarterly report\r\n' +
  'Message-ID: <orig-1@example.com>\r\n';
const ORIGINAL_BODY = 'Hello Bob,\r\n\r\nsecret body line\r\n';
const ORIGINAL = Buffer.from(`${ORIGINAL_HEADERS}\r\n${ORIGINAL_BODY}`);

const failedBob: DsnRecipient = {
  address: 'bob@example.org',
  orcpt: 'rfc822;Bob@Example.org',
  action: 'failed',
  status: '5.1.1',
  diagnostic: '550 5.1.1 <bob@example.org>: no such user',
  remoteMta: 'mx1.example.org',
  lastAttemptAt: new Date('2024-03-05T10:20:30Z'),
};

function input(over: Partial<DsnInput> = {}): DsnInput {
  return {
    reportingMta: 'relay.example.com',
    queueId: 'Q1A2B3',
    arrivalDate: new Date('2024-03-05T10:00:00Z'),
    sender: 'alice@example.com',
    recipients: [failedBob],
    original: ORIGINAL,
    now: new Date('2024-03-05T10:20:31Z'),
    messageIdDomain: 'relay.example.com',
    ...over,
  };
}

interface RawPart {
  headers: string;
  body: string;
}

/** Splits a rendered DSN into its top-level header section and its MIME parts, byte for byte. */
function split(raw: string): {
  headers: string;
  boundary: string;
  preamble: string;
  parts: RawPart[];
  epilogue: string;
} {
  const sep = raw.indexOf('\r\n\r\n');
  const headers = raw.slice(0, sep + 2);
  const boundary = /boundary="([^"]+)"/.exec(headers.replace(/\r\n[ \t]/g, ' '))![1];
  const body = raw.slice(sep + 4);
  const close = `\r\n--${boundary}--\r\n`;
  assert.ok(body.endsWith(close), 'ends with the close delimiter');
  const [preamble, ...chunks] = body.slice(0, -close.length).split(`\r\n--${boundary}\r\n`);
  const parts = chunks.map((c) => {
    const i = c.indexOf('\r\n\r\n');
    return { headers: c.slice(0, i + 2), body: c.slice(i + 4) };
  });
  return { headers, boundary, preamble, parts, epilogue: '' };
}

/** A header section as [name, value] pairs in order, unfolded. */
function fields(section: string): [string, string][] {
  return section
    .replace(/\r\n(?=[ \t])/g, '')
    .split('\r\n')
    .filter(Boolean)
    .map((line) => {
      const i = line.indexOf(':');
      assert.ok(i > 0, `field line has a colon: ${JSON.stringify(line)}`);
      return [line.slice(0, i), line.slice(i + 1).trim()];
    });
}

/** The message/delivery-status body as field groups: the per-message one, then one per recipient. */
function deliveryStatus(body: string): [string, string][][] {
  assert.ok(body.endsWith('\r\n'), 'delivery-status ends with CRLF');
  assert.ok(!body.startsWith('\r\n'), 'no blank line before the per-message fields');
  return body
    .slice(0, -2)
    .split('\r\n\r\n')
    .map((group) => fields(`${group}\r\n`));
}

/** The DSN's own header fields, in order. */
const TOP_HEADERS = [
  'From',
  'To',
  'Subject',
  'Date',
  'Message-ID',
  'Auto-Submitted',
  'MIME-Version',
  'Content-Type',
];
const names = (group: [string, string][]) => group.map(([n]) => n);
const get = (group: [string, string][], name: string) =>
  group.find(([n]) => n.toLowerCase() === name.toLowerCase())?.[1];

function decodeQp(text: string): Buffer {
  const bytes = text
    .replace(/=\r\n/g, '')
    .replace(/=([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
  return Buffer.from(bytes, 'latin1');
}

/** Every line ends with CRLF: no bare CR or LF anywhere, and the message ends with CRLF. */
function assertCrlf(buf: Buffer): void {
  for (let i = 0; i < buf.length; i++) {
    if (buf[i] === 0x0d) assert.equal(buf[i + 1], 0x0a, `bare CR at ${i}`);
    if (buf[i] === 0x0a) assert.equal(buf[i - 1], 0x0d, `bare LF at ${i}`);
  }
  assert.equal(buf.subarray(-2).toString(), '\r\n');
}

async function render(
  over: Partial<DsnInput> = {},
): Promise<{ raw: string; buf: Buffer; mail: ParsedMail; dsn: ReturnType<typeof split> }> {
  const buf = renderDsn(input(over));
  const raw = buf.toString('utf8');
  return { raw, buf, mail: await simpleParser(buf), dsn: split(raw) };
}

describe('renderDsn: a failure report', () => {
  it('has the DSN message headers', async () => {
    const { mail, dsn } = await render();
    assert.equal(mail.from?.value[0].address, 'MAILER-DAEMON@relay.example.com');
    assert.equal(mail.from?.value[0].name, 'Mail Delivery System');
    assert.equal(
      mail.to && !Array.isArray(mail.to) ? mail.to.value[0].address : undefined,
      'alice@example.com',
    );
    assert.equal(mail.subject, 'Undelivered Mail Returned to Sender');
    assert.equal(mail.date?.toISOString(), '2024-03-05T10:20:31.000Z');
    assert.match(mail.messageId ?? '', /^<20240305102031\.Q1A2B3\.[0-9a-f]{12}@relay\.example\.com>$/);
    assert.equal(mail.headers.get('auto-submitted'), 'auto-replied');
    assert.equal(mail.headers.get('mime-version'), '1.0');
    const ct = mail.headers.get('content-type') as { value: string; params: Record<string, string> };
    assert.equal(ct.value, 'multipart/report');
    assert.equal(ct.params['report-type'], 'delivery-status');
    assert.equal(ct.params.boundary, dsn.boundary);

    const top = fields(dsn.headers);
    assert.deepEqual(names(top), TOP_HEADERS);
    assert.equal(get(top, 'From'), 'Mail Delivery System <MAILER-DAEMON@relay.example.com>');
    assert.equal(get(top, 'To'), '<alice@example.com>');
    assert.equal(get(top, 'Date'), 'Tue, 5 Mar 2024 10:20:31 +0000');
  });

  it('uses CRLF line endings throughout, and no line is over 998 octets', async () => {
    const { buf, raw } = await render({ ret: 'FULL' });
    assertCrlf(buf);
    for (const line of raw.split('\r\n')) assert.ok(Buffer.byteLength(line) <= 998);
  });

  it('has the three report parts in order', async () => {
    const { dsn } = await render();
    assert.equal(dsn.preamble, 'This is a MIME-encapsulated message.\r\n');
    assert.equal(dsn.parts.length, 3);
    assert.deepEqual(
      dsn.parts.map((p) => get(fields(p.headers), 'Content-Type')),
      ['text/plain; charset=utf-8', 'message/delivery-status', 'text/rfc822-headers'],
    );
  });

  it('explains the failure in the text part', async () => {
    const { mail, dsn } = await render();
    const text = dsn.parts[0].body;
    assert.match(text, /^This is the mail delivery system at relay\.example\.com\.\r\n/);
    assert.match(text, /could not be delivered/);
    assert.match(
      text,
      /<bob@example\.org>: delivery failed \(status 5\.1\.1, bad destination mailbox\r\n\s+address\)/,
    );
    assert.match(text, /mx1\.example\.org said: 550 5\.1\.1 <bob@example\.org>: no such user/);
    assert.match(text, /headers of your message are attached/);
    assert.match(mail.text ?? '', /could not be delivered/);
  });

  it('reports the per-message and per-recipient fields of RFC 3464, in order', async () => {
    const { dsn } = await render({ envid: 'ENV-42' });
    const [message, bob, ...rest] = deliveryStatus(dsn.parts[1].body);
    assert.equal(rest.length, 0);
    assert.deepEqual(message, [
      ['Original-Envelope-Id', 'ENV-42'],
      ['Reporting-MTA', 'dns; relay.example.com'],
      ['Arrival-Date', 'Tue, 5 Mar 2024 10:00:00 +0000'],
      ['X-Cartero-Queue-ID', 'Q1A2B3'],
    ]);
    assert.deepEqual(bob, [
      ['Original-Recipient', 'rfc822; Bob@Example.org'],
      ['Final-Recipient', 'rfc822; bob@example.org'],
      ['Action', 'failed'],
      ['Status', '5.1.1'],
      ['Remote-MTA', 'dns; mx1.example.org'],
      ['Diagnostic-Code', 'smtp; 550 5.1.1 <bob@example.org>: no such user'],
      ['Last-Attempt-Date', 'Tue, 5 Mar 2024 10:20:30 +0000'],
    ]);
  });

  it('leaves out the optional fields it was not given', async () => {
    const { dsn } = await render({
      recipients: [{ address: 'bob@example.org', action: 'failed', status: '5.4.4' }],
    });
    const [message, bob] = deliveryStatus(dsn.parts[1].body);
    assert.deepEqual(names(message), ['Reporting-MTA', 'Arrival-Date', 'X-Cartero-Queue-ID']);
    assert.deepEqual(bob, [
      ['Final-Recipient', 'rfc822; bob@example.org'],
      ['Action', 'failed'],
      ['Status', '5.4.4'],
    ]);
  });

  it('marks a diagnostic that is not an SMTP reply as our own', async () => {
    const { dsn } = await render({
      recipients: [
        {
          address: 'bob@example.org',
          action: 'failed',
          status: '4.4.7',
          diagnostic: 'connect ECONNREFUSED 192.0.2.7:25',
        },
      ],
    });
    const [, bob] = deliveryStatus(dsn.parts[1].body);
    assert.equal(get(bob, 'Diagnostic-Code'), 'X-Cartero; connect ECONNREFUSED 192.0.2.7:25');
    assert.equal(get(bob, 'Status'), '4.4.7');
    assert.equal(get(bob, 'Action'), 'failed');
    assert.match(dsn.parts[0].body, /delivery time expired/);
    assert.match(dsn.parts[0].body, /Reason: connect ECONNREFUSED/);
  });

  it('replaces a malformed status with the default for the action', async () => {
    const { dsn } = await render({
      recipients: [
        { address: 'a@example.org', action: 'failed', status: '550' },
        { address: 'b@example.org', action: 'delayed', status: '' },
        { address: 'c@example.org', action: 'delivered', status: '2.0' },
      ],
    });
    const [, a, b, c] = deliveryStatus(dsn.parts[1].body);
    assert.deepEqual([get(a, 'Status'), get(b, 'Status'), get(c, 'Status')], ['5.0.0', '4.0.0', '2.0.0']);
  });

  it('joins a multi-line SMTP reply into one diagnostic', async () => {
    const { dsn } = await render({
      recipients: [
        {
          ...failedBob,
          diagnostic:
            '550-5.1.1 The email account that you tried to reach does not exist.\r\n550 5.1.1 Please try again.',
        },
      ],
    });
    const [, bob] = deliveryStatus(dsn.parts[1].body);
    assert.equal(
      get(bob, 'Diagnostic-Code'),
      'smtp; 550 5.1.1 The email account that you tried to reach does not exist. Please try again.',
    );
  });
});

describe('renderDsn: the returned original', () => {
  it('returns only the header section by default', async () => {
    const { mail, dsn, raw } = await render();
    const part = dsn.parts[2];
    assert.equal(get(fields(part.headers), 'Content-Type'), 'text/rfc822-headers');
    assert.equal(get(fields(part.headers), 'Content-Description'), 'Undelivered Message Headers');
    assert.equal(part.body, ORIGINAL_HEADERS);
    assert.ok(!raw.includes('secret body line'), 'the body is not returned');
    const att = mail.attachments.find((a) => a.contentType === 'text/rfc822-headers');
    assert.equal(att?.content.toString(), ORIGINAL_HEADERS);
  });

  it('returns only the header section with RET=HDRS', async () => {
    const { dsn, raw } = await render({ ret: 'HDRS' });
    assert.equal(dsn.parts[2].body, ORIGINAL_HEADERS);
    assert.ok(!raw.includes('secret body line'));
  });

  it('returns the full message with RET=FULL', async () => {
    const { mail, dsn } = await render({ ret: 'FULL' });
    const part = fields(dsn.parts[2].headers);
    assert.equal(get(part, 'Content-Type'), 'message/rfc822');
    assert.equal(get(part, 'Content-Transfer-Encoding'), '7bit');
    assert.equal(dsn.parts[2].body, ORIGINAL.toString());
    const att = mail.attachments.find((a) => a.contentType === 'message/rfc822');
    assert.equal(att?.content.toString(), ORIGINAL.toString());
    assert.match(dsn.parts[0].body, /Your message is attached below/);
  });

  it('returns only headers in a delay warning even with RET=FULL (RFC 3461 §4.3)', async () => {
    const { dsn, mail } = await render({
      ret: 'FULL',
      recipients: [
        {
          address: 'bob@example.org',
          action: 'delayed',
          status: '4.4.1',
          willRetryUntil: new Date('2024-03-10T10:00:00Z'),
        },
      ],
    });
    assert.equal(get(fields(dsn.parts[2].headers), 'Content-Type'), 'text/rfc822-headers');
    assert.equal(get(fields(dsn.parts[2].headers), 'Content-Description'), 'Message Headers');
    assert.equal(dsn.parts[2].body, ORIGINAL_HEADERS);
    assert.equal(mail.subject, 'Delayed Mail (still being retried)');
  });

  it('normalizes bare LF in the original to CRLF', async () => {
    const lf = Buffer.from('From: a@example.com\nSubject: lf\n\nline 1\nline 2\n');
    const full = await render({ ret: 'FULL', original: lf });
    assertCrlf(full.buf);
    assert.equal(full.dsn.parts[2].body, 'From: a@example.com\r\nSubject: lf\r\n\r\nline 1\r\nline 2\r\n');
    const hdrs = await render({ original: lf });
    assert.equal(hdrs.dsn.parts[2].body, 'From: a@example.com\r\nSubject: lf\r\n');
  });

  it('copes with an original that has no body or no headers', async () => {
    const onlyHeaders = await render({ original: Buffer.from('Subject: x\r\nFrom: a@example.com') });
    assert.equal(onlyHeaders.dsn.parts[2].body, 'Subject: x\r\nFrom: a@example.com\r\n');
    const noHeaders = await render({ original: Buffer.from('\r\njust a body\r\n') });
    assert.equal(noHeaders.dsn.parts[2].body, '');
    const empty = await render({ original: Buffer.alloc(0) });
    assert.equal(empty.dsn.parts[2].body, '');
  });

  it('declares 8bit for a full 8-bit original and quoted-printable for 8-bit headers', async () => {
    const utf8 = Buffer.from('From: Jörg <j@example.com>\r\nSubject: Grüße\r\n\r\nSchöne Grüße\r\n');
    const full = await render({ ret: 'FULL', original: utf8 });
    assert.equal(get(fields(full.dsn.parts[2].headers), 'Content-Transfer-Encoding'), '8bit');
    assert.equal(
      full.mail.attachments.find((a) => a.contentType === 'message/rfc822')?.content.toString(),
      utf8.toString(),
    );

    const hdrs = await render({ original: utf8 });
    const part = hdrs.dsn.parts[2];
    assert.equal(get(fields(part.headers), 'Content-Transfer-Encoding'), 'quoted-printable');
    assert.ok(/^[\x20-\x7e\r\n]*$/.test(part.body), 'the headers part is 7-bit');
    assert.equal(decodeQp(part.body).toString('utf8'), 'From: Jörg <j@example.com>\r\nSubject: Grüße\r\n');
    assert.equal(
      hdrs.mail.attachments[0].content.toString('utf8'),
      'From: Jörg <j@example.com>\r\nSubject: Grüße\r\n',
    );
  });

  it('falls back to headers when the original cannot travel as 7/8-bit MIME', async () => {
    const long = Buffer.from(`Subject: long\r\n\r\n${'x'.repeat(1200)}\r\n`);
    const { dsn } = await render({ ret: 'FULL', original: long });
    assert.equal(get(fields(dsn.parts[2].headers), 'Content-Type'), 'text/rfc822-headers');
    assert.equal(dsn.parts[2].body, 'Subject: long\r\n');
    assert.match(dsn.parts[0].body, /cannot be returned in full/);
  });

  it('keeps a header line over 998 octets intact through quoted-printable', async () => {
    const hdr = `X-Long: ${'y'.repeat(1500)}\r\n`;
    const { dsn, raw } = await render({ original: Buffer.from(`${hdr}\r\nbody\r\n`) });
    assert.equal(get(fields(dsn.parts[2].headers), 'Content-Transfer-Encoding'), 'quoted-printable');
    assert.equal(decodeQp(dsn.parts[2].body).toString(), hdr);
    for (const line of raw.split('\r\n')) assert.ok(line.length <= 998);
  });

  it('is not confused by boundary-like lines in the original', async () => {
    const tricky = Buffer.from('Subject: t\r\n\r\n--=_cartero_\r\n--=_cartero_0000--\r\nend\r\n');
    const { mail, dsn } = await render({ ret: 'FULL', original: tricky });
    assert.equal(dsn.parts.length, 3);
    assert.equal(dsn.parts[2].body, tricky.toString());
    assert.equal(
      mail.attachments.find((a) => a.contentType === 'message/rfc822')?.content.toString(),
      tricky.toString(),
    );
  });
});

describe('renderDsn: hostile input stays in its field', () => {
  const injection =
    '550 5.1.1 no such user\r\nBcc: victim@example.net\r\n\r\nInjected: yes\n\x00\x1b[31m\x7f';

  it('keeps a diagnostic with CR/LF on one logical line', async () => {
    const { dsn, raw, buf } = await render({ recipients: [{ ...failedBob, diagnostic: injection }] });
    assertCrlf(buf);
    const groups = deliveryStatus(dsn.parts[1].body);
    assert.equal(groups.length, 2);
    assert.deepEqual(names(groups[1]), [
      'Original-Recipient',
      'Final-Recipient',
      'Action',
      'Status',
      'Remote-MTA',
      'Diagnostic-Code',
      'Last-Attempt-Date',
    ]);
    assert.equal(
      get(groups[1], 'Diagnostic-Code'),
      'smtp; 550 5.1.1 no such user Bcc: victim@example.net Injected: yes [31m',
    );
    assert.ok(!/^(Bcc|Injected):/m.test(raw), 'no injected line starts a field');
    const controls = [...raw].filter((c) => !'\r\n\t'.includes(c) && (c < ' ' || c === '\x7f'));
    assert.deepEqual(controls, [], 'no control characters');
  });

  it('keeps other values on one line too (sender, queue id, envid, hosts, addresses)', async () => {
    const { dsn, mail, buf } = await render({
      sender: 'alice@example.com>\r\nBcc: victim@example.net',
      queueId: 'Q1\r\nX-Evil: 1',
      envid: 'E1\r\n\r\nFinal-Recipient: rfc822; evil@example.net',
      reportingMta: 'relay.example.com\r\nX-Evil: 1',
      recipients: [
        {
          address: 'bob@example.org\r\nAction: delivered',
          orcpt: 'rfc822;bob@example.org\r\nStatus: 2.0.0',
          action: 'failed',
          status: '5.1.1',
          remoteMta: 'mx.example.org\r\nX-Evil: 1',
        },
      ],
    });
    assertCrlf(buf);
    const top = fields(dsn.headers);
    assert.deepEqual(names(top), TOP_HEADERS);
    assert.equal(get(top, 'To'), '<alice@example.com Bcc: victim@example.net>');
    assert.equal(mail.bcc, undefined);
    const [message, bob, ...rest] = deliveryStatus(dsn.parts[1].body);
    assert.equal(rest.length, 0);
    assert.deepEqual(names(message), [
      'Original-Envelope-Id',
      'Reporting-MTA',
      'Arrival-Date',
      'X-Cartero-Queue-ID',
    ]);
    assert.equal(get(message, 'Reporting-MTA'), 'dns; relay.example.comX-Evil:1');
    assert.deepEqual(names(bob), ['Original-Recipient', 'Final-Recipient', 'Action', 'Status', 'Remote-MTA']);
    assert.equal(get(bob, 'Action'), 'failed');
    assert.equal(get(bob, 'Final-Recipient'), 'rfc822; bob@example.org Action: delivered');
  });

  it('folds a long diagnostic and truncates an absurd one below the line limit', async () => {
    const words = Array.from({ length: 60 }, (_, i) => `word${i}`).join(' ');
    const { dsn } = await render({ recipients: [{ ...failedBob, diagnostic: `550 5.7.1 ${words}` }] });
    const body = dsn.parts[1].body;
    for (const line of body.split('\r\n')) assert.ok(line.length <= 78, `folded: ${line}`);
    assert.equal(get(deliveryStatus(body)[1], 'Diagnostic-Code'), `smtp; 550 5.7.1 ${words}`);

    const huge = await render({ recipients: [{ ...failedBob, diagnostic: `550 ${'z'.repeat(5000)}` }] });
    const diag = get(deliveryStatus(huge.dsn.parts[1].body)[1], 'Diagnostic-Code')!;
    assert.ok(diag.length < 998 && diag.endsWith('...'));
    for (const line of huge.raw.split('\r\n')) assert.ok(line.length <= 998);
  });

  it('turns non-ASCII in a diagnostic into ?', async () => {
    const { dsn } = await render({
      recipients: [{ ...failedBob, diagnostic: '550 5.1.1 Empfänger unbekannt' }],
    });
    assert.equal(
      get(deliveryStatus(dsn.parts[1].body)[1], 'Diagnostic-Code'),
      'smtp; 550 5.1.1 Empf?nger unbekannt',
    );
  });
});

describe('renderDsn: several recipients', () => {
  const recipients: DsnRecipient[] = [
    failedBob,
    {
      address: 'carol@example.net',
      action: 'delayed',
      status: '4.4.1',
      diagnostic: 'connect ECONNREFUSED 198.51.100.5:25',
      lastAttemptAt: new Date('2024-03-05T10:20:00Z'),
      willRetryUntil: new Date('2024-03-10T10:00:00Z'),
    },
    {
      address: 'dave@example.net',
      orcpt: 'rfc822;dave@lists.example.net',
      action: 'failed',
      status: '5.1.2',
    },
  ];

  it('gives one field group per recipient, in order', async () => {
    const { dsn, mail } = await render({ recipients });
    const [message, ...groups] = deliveryStatus(dsn.parts[1].body);
    assert.equal(get(message, 'Reporting-MTA'), 'dns; relay.example.com');
    assert.deepEqual(
      groups.map((g) => [get(g, 'Final-Recipient'), get(g, 'Action'), get(g, 'Status')]),
      [
        ['rfc822; bob@example.org', 'failed', '5.1.1'],
        ['rfc822; carol@example.net', 'delayed', '4.4.1'],
        ['rfc822; dave@example.net', 'failed', '5.1.2'],
      ],
    );
    assert.equal(get(groups[1], 'Will-Retry-Until'), 'Sun, 10 Mar 2024 10:00:00 +0000');
    assert.equal(get(groups[0], 'Will-Retry-Until'), undefined);
    assert.equal(get(groups[2], 'Original-Recipient'), 'rfc822; dave@lists.example.net');
    assert.equal(mail.subject, 'Undelivered Mail Returned to Sender');
    const text = dsn.parts[0].body;
    assert.ok(text.indexOf('<bob@example.org>') < text.indexOf('<carol@example.net>'));
    assert.ok(text.indexOf('<carol@example.net>') < text.indexOf('<dave@example.net>'));
    assert.match(text, /could not be delivered/);
    assert.match(text, /not yet been delivered/);
    assert.match(text, /Will retry until Sun, 10 Mar 2024 10:00:00 \+0000/);
  });

  it('ignores Will-Retry-Until on a recipient that is not delayed', async () => {
    const { dsn } = await render({
      recipients: [{ ...failedBob, willRetryUntil: new Date('2024-03-10T10:00:00Z') }],
    });
    assert.equal(get(deliveryStatus(dsn.parts[1].body)[1], 'Will-Retry-Until'), undefined);
  });

  it('titles a success report', async () => {
    const { mail, dsn } = await render({
      recipients: [
        {
          address: 'bob@example.org',
          action: 'delivered',
          status: '2.0.0',
          remoteMta: 'mx1.example.org',
          diagnostic: '250 2.0.0 Ok: queued as ABC',
        },
        { address: 'eve@example.org', action: 'relayed', status: '2.0.0', remoteMta: 'old.example.org' },
      ],
    });
    assert.equal(mail.subject, 'Successful Mail Delivery Report');
    assert.deepEqual(
      deliveryStatus(dsn.parts[1].body)
        .slice(1)
        .map((g) => get(g, 'Action')),
      ['delivered', 'relayed'],
    );
  });
});

describe('renderDsn: internationalized addresses', () => {
  it('writes a non-ASCII recipient as an RFC 6533 utf-8 address and keeps the report 7-bit', async () => {
    const { dsn, mail } = await render({
      sender: 'jörg@example.com',
      recipients: [
        {
          address: 'søren@example.dk',
          orcpt: 'rfc822;søren+x@example.dk',
          action: 'failed',
          status: '5.1.1',
        },
      ],
    });
    const [, r] = deliveryStatus(dsn.parts[1].body);
    assert.equal(get(r, 'Final-Recipient'), 'utf-8; s\\x{F8}ren@example.dk');
    assert.equal(get(r, 'Original-Recipient'), 'utf-8; s\\x{F8}ren\\x{2B}x@example.dk');
    assert.ok(/^[\x20-\x7e\r\n]*$/.test(dsn.parts[1].body));
    assert.equal(get(fields(dsn.parts[0].headers), 'Content-Transfer-Encoding'), 'quoted-printable');
    assert.match(mail.text ?? '', /<søren@example\.dk>: delivery failed/);
    assert.equal(get(fields(dsn.headers), 'To'), '<jörg@example.com>');
  });
});

describe('renderDsn: determinism and refusals', () => {
  it('renders the same bytes for the same input, and a fresh Message-ID for another moment', () => {
    const a = renderDsn(input());
    assert.deepEqual(renderDsn(input()), a);
    const b = renderDsn(input({ now: new Date('2024-03-05T10:20:32Z') }));
    const id = (buf: Buffer) => /^Message-ID: (.*)$/m.exec(buf.toString())![1];
    assert.notEqual(id(a), id(b));
  });

  it('refuses a null sender and an empty recipient list', () => {
    assert.throws(() => renderDsn(input({ sender: '' })), RangeError);
    assert.throws(() => renderDsn(input({ sender: ' <> ' })), RangeError);
    assert.throws(() => renderDsn(input({ recipients: [] })), RangeError);
  });

  it('refuses invalid dates', () => {
    assert.throws(() => renderDsn(input({ now: new Date(NaN) })), RangeError);
    assert.throws(() => renderDsn(input({ arrivalDate: new Date('nope') })), RangeError);
  });
});

describe('rfc5322Date', () => {
  it('formats in UTC with a numeric zone', () => {
    assert.equal(rfc5322Date(new Date('2024-01-02T03:04:05Z')), 'Tue, 2 Jan 2024 03:04:05 +0000');
    assert.equal(rfc5322Date(new Date('1999-12-31T23:59:59.999Z')), 'Fri, 31 Dec 1999 23:59:59 +0000');
  });
});

describe('dsnRecipientsWanted (RFC 3461 NOTIFY)', () => {
  const table: [
    string | string[] | undefined,
    { failed: boolean; delayed: boolean; delivered: boolean; relayed: boolean },
  ][] = [
    [undefined, { failed: true, delayed: true, delivered: false, relayed: false }],
    ['', { failed: true, delayed: true, delivered: false, relayed: false }],
    ['NEVER', { failed: false, delayed: false, delivered: false, relayed: false }],
    ['never', { failed: false, delayed: false, delivered: false, relayed: false }],
    ['SUCCESS', { failed: false, delayed: false, delivered: true, relayed: true }],
    ['FAILURE', { failed: true, delayed: false, delivered: false, relayed: false }],
    ['DELAY', { failed: false, delayed: true, delivered: false, relayed: false }],
    ['SUCCESS,FAILURE', { failed: true, delayed: false, delivered: true, relayed: true }],
    ['failure, delay', { failed: true, delayed: true, delivered: false, relayed: false }],
    ['SUCCESS,FAILURE,DELAY', { failed: true, delayed: true, delivered: true, relayed: true }],
    [['SUCCESS', 'DELAY'], { failed: false, delayed: true, delivered: true, relayed: true }],
    [[], { failed: true, delayed: true, delivered: false, relayed: false }],
    [['NEVER'], { failed: false, delayed: false, delivered: false, relayed: false }],
  ];
  for (const [notify, want] of table) {
    it(`NOTIFY=${JSON.stringify(notify)}`, () => {
      for (const action of ['failed', 'delayed', 'delivered', 'relayed'] as const) {
        assert.equal(dsnRecipientsWanted(notify, action), want[action], action);
      }
    });
  }
});
