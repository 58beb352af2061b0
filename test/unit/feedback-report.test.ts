import { describe, it } from 'node:test';
import { feedbackCfg, KEY, NOW, QID } from '../helpers/feedback-fixture.js';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readReport } from '../../relay/src/feedback/report.js';
import { matchBounceRule } from '../../relay/src/feedback/bounce-rules.js';
import { parseFields, parseMime, MAX_FIELDS, MAX_PARTS } from '../../relay/src/feedback/mime.js';
import { decide, judgeRcpt } from '../../relay/src/feedback/decide.js';
import { makeToken } from '../../relay/src/feedback/token.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const crlf = (s: string) => Buffer.from(s.replace(/\r?\n/g, '\r\n'));
const cfg = feedbackCfg({ returnPath: { domain: 'b.globex.test', prefix: 'bounce' } });
const rpFor = (rcpt: string, tenant = 'acme') =>
  `bounce+${makeToken(KEY, { tenant, queueId: QID, recipient: rcpt }, NOW)}@b.${tenant}.test`;

describe('reading reports', () => {
  it('reads an ARF report: type, reporter, Original-Rcpt-To, the original headers', async () => {
    const t = (await readFile(path.join(ROOT, 'test/fixtures/feedback/arf-rfc5965.eml'), 'utf8'))
      .split('{{RCPT}}')
      .join('Bob@dest.test')
      .split('{{MESSAGE_ID}}')
      .join('<x@acme.test>');
    const r = readReport(crlf(t));
    assert.equal(r.kind, 'arf');
    if (r.kind !== 'arf') return;
    assert.equal(r.feedbackType, 'abuse');
    assert.equal(r.reporter, 'dns; mail.example.com');
    assert.deepEqual(r.recipients, ['bob@dest.test']);
    assert.equal(r.original.messageId, '<x@acme.test>');
  });

  it('reads a quoted-printable feedback report and a base64 delivery status', () => {
    const b64 = Buffer.from(
      'Reporting-MTA: dns; mx\r\n\r\nFinal-Recipient: rfc822; a@x.test\r\nAction: failed\r\nStatus: 5.2.1\r\n',
    ).toString('base64');
    const r = readReport(
      crlf(
        `Content-Type: multipart/report; boundary=b\n\n--b\nContent-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n${b64}\n--b--\n`,
      ),
    );
    assert.deepEqual(r.kind === 'dsn' && r.recipients, [
      { recipient: 'a@x.test', action: 'failed', status: '5.2.1' },
    ]);
  });

  it('matches non-standard bounces by the rules table, not human prose', () => {
    assert.deepEqual(matchBounceRule('host mx said: 550 5.1.1 <a@x.test>... User unknown'), {
      rule: 'smtp-enhanced',
      status: '5.1.1',
    });
    assert.equal(matchBounceRule('Sorry, no mailbox here by that name. (#5.1.1)')?.status, '5.1.1');
    assert.equal(
      matchBounceRule('The email account that you tried to reach does not exist.')?.status,
      '5.1.1',
    );
    assert.equal(matchBounceRule('Thanks for your mail, I am on holiday until Monday.'), undefined);
    const r = readReport(
      crlf('From: MAILER-DAEMON@x\nSubject: failure\n\n<a@x.test>: 550 5.1.1 user unknown\n'),
    );
    assert.equal(r.kind, 'dsn');
    assert.deepEqual(r.kind === 'dsn' && r.recipients.map((x) => [x.recipient, x.status]), [
      ['a@x.test', '5.1.1'],
    ]);
  });

  // How long these take (and mailparser on the same bytes) is measured by `npm run bench:feedback`; here,
  // that they end and keep only what is bounded.
  it('reads a hostile 1 MiB report: the 1 MiB address run is not taken as an address', () => {
    const run = 'a'.repeat(1024 * 1024);
    const a = readReport(crlf(`To: <${run}\nSubject: x\n\n550 5.1.1 ${run}\n`));
    assert.equal(a.kind, 'dsn');
    assert.deepEqual([a.kind === 'dsn' && a.recipients, a.original.to], [[], []]);
    const b = readReport(
      crlf(
        `Content-Type: multipart/report; boundary=b\n\n--b\nContent-Type: message/delivery-status\n\nx\n\nFinal-Recipient: rfc822; ${run}\n--b--\n`,
      ),
    );
    assert.deepEqual([b.kind, b.kind === 'dsn' && b.recipients, b.original.to], ['dsn', [], []]);
  });

  it("reads hostile reports of the listener's largest size (10 MiB), keeping at most 10 addresses of each", () => {
    const M = 10 * 1024 * 1024;
    const lf = (s: string) => Buffer.from(s);
    const shapes: Record<string, [Buffer, string]> = {
      'many fields': [lf('a:b\n'.repeat(M / 4)), 'unknown'],
      'one field folded over and over': [lf(`X: a\n${' b\n'.repeat(M / 3)}\nbody`), 'unknown'],
      'a huge To in the returned message': [
        lf(
          `Content-Type: multipart/report; boundary=b\n\n--b\nContent-Type: message/rfc822\n\nTo: ${'a@b.cc,'.repeat(M / 7)}\n\nx\n--b--\n`,
        ),
        'unknown',
      ],
      'empty delivery-status blocks': [
        lf(`Content-Type: message/delivery-status\n\n${'\n\n'.repeat(M / 2)}`),
        'dsn',
      ],
      'empty body parts': [
        lf(`Content-Type: multipart/mixed; boundary=b\n\n${'--b\n'.repeat(M / 4)}`),
        'unknown',
      ],
      'many feedback fields': [
        lf(`Content-Type: message/feedback-report\n\n${'Original-Rcpt-To: a@b.cc\n'.repeat(M / 25)}`),
        'arf',
      ],
    };
    for (const [name, [raw, kind]] of Object.entries(shapes)) {
      const r = readReport(raw);
      assert.equal(r.kind, kind, name);
      assert.ok(r.original.to.length <= 10, `${name}: ${r.original.to.length} addresses of To kept`);
      if (r.kind !== 'unknown')
        assert.ok(r.recipients.length <= 10, `${name}: ${r.recipients.length} recipients`);
    }
    assert.ok(parseFields('a:b\n'.repeat(M / 4)).length <= MAX_FIELDS);
  });

  it("finds the Message-ID of a returned message after 200 KiB of header fields (Postfix's limit is 100 KiB)", () => {
    const fields = Array.from({ length: 1500 }, (_, i) => `X-Long-${i}: ${'v'.repeat(130)}\n`).join('');
    const r = readReport(
      crlf(
        `Content-Type: multipart/report; boundary=b\n\n--b\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n\n--b\nContent-Type: message/rfc822\n\n${fields}Message-ID: <late@acme.test>\nTo: bob@dest.test\n\nbody\n--b--\n`,
      ),
    );
    assert.equal(r.original.messageId, '<late@acme.test>');
  });

  it('decodes a quoted-printable part of 10 MiB; soft breaks, both cases of hex, stray =', () => {
    const qp = (body: string) =>
      parseMime(Buffer.from(`Content-Transfer-Encoding: quoted-printable\n\n${body}`)).body.toString(
        'latin1',
      );
    assert.equal(qp('a=3Db=3db=\r\nc=\nd=E9 =ZZ=4'), 'a=b=bcd\u00e9 =ZZ=4');
    const n = Math.floor((10 * 1024 * 1024) / 3);
    const big = parseMime(Buffer.from(`Content-Transfer-Encoding: quoted-printable\n\n${'=41'.repeat(n)}`));
    assert.equal(big.body.length, n);
    assert.equal(big.body.toString('latin1'), 'A'.repeat(n));
  });

  it('bounds the parts it reads', () => {
    const parts = Array.from({ length: MAX_PARTS + 50 }, (_, i) => `--b\n\npart ${i}\n`).join('');
    const m = parseMime(crlf(`Content-Type: multipart/mixed; boundary=b\n\n${parts}--b--\n`));
    assert.equal(m.parts.length, MAX_PARTS);
  });
});

describe('feedback decisions', () => {
  it('takes the bounce domains token and the feedback address; refuses the rest', () => {
    const rp = rpFor('bob@dest.test');
    assert.equal(judgeRcpt(cfg, rp, NOW).ok, true);
    assert.equal(judgeRcpt(cfg, rp.toUpperCase(), NOW).ok, true);
    assert.deepEqual(judgeRcpt(cfg, 'FBL@acme.test', NOW), {
      ok: true,
      target: { kind: 'feedback', tenant: 'acme' },
    });
    assert.deepEqual(judgeRcpt(cfg, rp.replace('b.acme.test', 'b.globex.test'), NOW), {
      ok: false,
      reason: 'forged',
    });
    assert.deepEqual(judgeRcpt(cfg, 'x@elsewhere.test', NOW), { ok: false, reason: 'foreign' });
    assert.deepEqual(judgeRcpt(cfg, rp, NOW + 31 * 86_400_000), { ok: false, reason: 'expired' });
  });

  it('maps a hard DSN through the token to its one recipient', () => {
    const v = judgeRcpt(cfg, rpFor('bob@dest.test'), NOW);
    assert.ok(v.ok);
    const rep = {
      kind: 'dsn' as const,
      recipients: [
        { recipient: 'eve@dest.test', action: 'failed', status: '5.1.1' },
        { recipient: 'bob@dest.test', action: 'failed', status: '5.1.1' },
      ],
      original: { to: [] },
    };
    assert.deepEqual(decide(cfg, rep, v.target, NOW), {
      result: 'bounce',
      tenant: 'acme',
      queueId: QID,
      recipient: 'bob@dest.test',
      status: '5.1.1',
    });
    rep.recipients[1].status = '4.2.2';
    rep.recipients[1].action = 'delayed';
    assert.equal(decide(cfg, rep, v.target, NOW).result, 'ignored');
  });
});
