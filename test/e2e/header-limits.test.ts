/**
 * limits.maxHeaderLine and limits.maxHeaderSize against a real relay process: an over-long header line and
 * an over-large header section are refused with 552 5.6.0 at the end of DATA, the session goes on (the next
 * transaction on the same connection is accepted), nothing refused is delivered or left in the spool, and
 * the refusals are counted. Long body lines are not limited.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { startRelay, type RelayProc } from '../helpers/relay.js';
import { startTestMx, type TestMx } from '../helpers/testmx.js';
import { rawSmtp, type RawStep } from '../helpers/rawsmtp.js';
import { waitFor } from '../helpers/poll.js';

const QUEUED_RE = /^250 2\.0\.0 Ok: queued as [0-9A-Z]{20}$/;

let mx: TestMx;
let relay: RelayProc;

before(async () => {
  mx = await startTestMx();
  relay = await startRelay({
    config: {
      hostname: 'relay.test',
      trustedNetworks: ['127.0.0.0/8'],
      limits: { maxHeaderSize: 8192 }, // maxHeaderLine: the default, 998
      routing: {
        default: { type: 'smarthost', smarthost: { host: '127.0.0.1', port: mx.port, tls: 'none' } },
      },
    },
  });
});

after(async () => {
  await relay?.cleanup();
  await mx?.close();
});

/** One transaction's commands, DATA's payload (dot-terminated here) expecting one reply. */
function transaction(rcpt: string, data: string): RawStep[] {
  return [
    'MAIL FROM:<sender@src.test>',
    `RCPT TO:<${rcpt}>`,
    'DATA',
    { raw: `${data}\r\n.\r\n`, expectReplies: 1 },
  ];
}

function message(subject: string, extraHead: string, body = 'hello\r\n'): string {
  return `From: <sender@src.test>\r\nTo: <x@dest.test>\r\nSubject: ${subject}\r\n${extraHead}\r\n${body}`;
}

/** A header field line of exactly `n` octets, with its CRLF. */
function field(n: number, name = 'X-Long'): string {
  return `${name}: ${'a'.repeat(n - name.length - 2)}\r\n`;
}

async function rejected(reason: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${relay.adminPort}/metrics`)).text();
  const m = new RegExp(
    `^cartero_smtp_rejected_total\\{listener="smtp",reason="${reason}"\\} (\\d+)$`,
    'm',
  ).exec(text);
  return m ? Number(m[1]) : 0;
}

test('an over-long header line or header section gets 552 5.6.0; the session goes on; nothing is delivered', async () => {
  const longBodyLine = `${'b'.repeat(5000)}\r\n`;
  const bigHead = Array.from({ length: 10 }, (_, i) => field(900, `X-Filler-${i}`)).join(''); // 9000 octets
  const replies = await rawSmtp(relay.ports.smtp, [
    'EHLO client.test',
    ...transaction('ok-line-999@dest.test', message('line over', field(999))),
    ...transaction('ok-line-998@dest.test', message('line at the limit', field(998), longBodyLine)),
    ...transaction('ok-head-9000@dest.test', message('header over', bigHead)),
    ...transaction('ok-bare-lf@dest.test', message('bare LF', field(999)).replace(/\r\n/g, '\n')),
    // no header fields at all: the first line is body, and body lines are not limited
    ...transaction(
      'ok-no-header@dest.test',
      `${'c'.repeat(3000)}\r\nX-Not-A-Header: ${'d'.repeat(2000)}\r\n`,
    ),
    ...transaction('ok-after@dest.test', message('after', '')),
    'QUIT',
  ]);
  assert.equal(replies.length, 27, JSON.stringify(replies));
  const data = [5, 9, 13, 17, 21, 25].map((i) => replies[i]);
  assert.equal(data[0], '552 5.6.0 Header line too long (at most 998 octets)');
  assert.match(data[1], QUEUED_RE, 'a line of 998 octets and a body line of 5000 pass');
  assert.equal(data[2], '552 5.6.0 Header section too big (at most 8192 bytes)');
  assert.equal(data[3], '552 5.6.0 Header line too long (at most 998 octets)', 'bare LF lines too');
  assert.match(data[4], QUEUED_RE, 'a message without header fields');
  assert.match(data[5], QUEUED_RE, 'the next transaction on the same connection');
  assert.match(replies[26], /^221 /);

  await waitFor(
    () =>
      ['ok-after@dest.test', 'ok-line-998@dest.test', 'ok-no-header@dest.test'].every(
        (r) => mx.byRecipient(r).length,
      ),
    { what: 'the three accepted messages' },
  );
  await waitFor(
    async () =>
      ((await (await fetch(`http://127.0.0.1:${relay.adminPort}/queue`)).json()) as { depth: number })
        .depth === 0,
    { what: 'an empty queue' },
  );
  const raw = mx.byRecipient('ok-line-998@dest.test')[0].raw.toString('latin1');
  assert.ok(raw.includes(`\r\n${field(998)}`), 'the 998-octet line arrives whole');
  assert.ok(raw.includes(longBodyLine), 'and so does the long body line');
  for (const rcpt of ['ok-line-999@dest.test', 'ok-head-9000@dest.test', 'ok-bare-lf@dest.test'])
    assert.equal(mx.byRecipient(rcpt).length, 0, `nothing delivered to ${rcpt}`);
  assert.match(
    mx.byRecipient('ok-no-header@dest.test')[0].raw.toString('latin1'),
    /^Received: [^]*\r\nc{3000}\r\nX-Not-A-Header: d{2000}\r\n\r\n$/,
  );
  assert.equal(mx.messages.length, 3);
  assert.deepEqual(await readdir(path.join(relay.root, 'spool', 'tmp')), [], 'no partial file left');
  assert.equal(await rejected('header_line_too_long'), 2);
  assert.equal(await rejected('header_too_big'), 1);
});
