/**
 * status.lint of an SmtpRelay (operator/src/relay/lint-status.ts): the pods' GET /lint merged (counts
 * added, the latest sample wins), in a stable order, absent tenants and zero counts left out; and the
 * tenant's `bulk` and `lint.policy` rendered into the relay config.
 */
import { buildInputFixture, smtpRelayFixture } from '../helpers/smtprelay-fixture.js';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { lintStatus } from '../../operator/src/relay/lint-status.js';
import type { PodFigures } from '../../operator/src/relay/figures.js';
import { buildRelayConfig } from '../../operator/src/relay/config-render.js';
import { checkConfigSchema } from '../../relay/src/contract/index.js';

const pod = (name: string, lint?: PodFigures['lint']): PodFigures => ({
  name,
  ready: true,
  ...(lint ? { lint } : {}),
});
const rule = (r: string, count: number, lastSeen: string, queueId: string, messageId?: string) => ({
  rule: r,
  count,
  lastSeen,
  sample: { queueId, ...(messageId ? { messageId } : {}) },
});

describe('operator status.lint', () => {
  it('adds the pods up; the sample is the latest; tenants by name, rules in the contract order', () => {
    const s = lintStatus([
      pod('relay-1', {
        b: [rule('date', 2, '2026-12-05T10:05:00.000Z', 'Q1')],
        a: [rule('spf', 1, '2026-12-05T10:00:00.000Z', 'Q2', '<2@x>')],
      }),
      pod('relay-0', {
        a: [
          rule('dkim-alignment', 3, '2026-12-05T10:01:00.000Z', 'Q3', '<3@x>'),
          rule('spf', 4, '2026-12-05T10:02:00.000Z', 'Q4', '<4@x>'),
        ],
      }),
      pod('relay-2'), // an older relay without GET /lint
    ]);
    assert.deepEqual(s, [
      {
        tenant: 'a',
        rules: [
          {
            rule: 'dkim-alignment',
            count: 3,
            lastSeen: '2026-12-05T10:01:00.000Z',
            sampleMessageId: '<3@x>',
            sampleQueueId: 'Q3',
            pod: 'relay-0',
          },
          {
            rule: 'spf',
            count: 5,
            lastSeen: '2026-12-05T10:02:00.000Z',
            sampleMessageId: '<4@x>',
            sampleQueueId: 'Q4',
            pod: 'relay-0',
          },
        ],
      },
      {
        tenant: 'b',
        rules: [
          {
            rule: 'date',
            count: 2,
            lastSeen: '2026-12-05T10:05:00.000Z',
            sampleQueueId: 'Q1',
            pod: 'relay-1',
          },
        ],
      },
    ]);
  });

  it('the same figures in another pod order give the same status; nothing broken gives none', () => {
    const p0 = pod('relay-0', { a: [rule('spf', 1, '2026-12-05T10:00:00.000Z', 'Q1')] });
    const p1 = pod('relay-1', { a: [rule('spf', 1, '2026-12-05T10:00:00.000Z', 'Q2')] });
    assert.deepEqual(lintStatus([p0, p1]), lintStatus([p1, p0]));
    assert.equal(lintStatus([p0, p1])[0].rules[0].pod, 'relay-0');
    assert.deepEqual(
      lintStatus([pod('relay-0', { a: [rule('spf', 0, '2026-12-05T10:00:00.000Z', 'Q')] })]),
      [],
    );
    assert.deepEqual(lintStatus([pod('relay-0', {}), pod('relay-1')]), []);
  });

  it('renders bulk and lint.policy into the relay config, which the relay schema accepts', () => {
    const built = buildRelayConfig(
      buildInputFixture(
        smtpRelayFixture({
          replicas: 1,
          tenants: [
            { name: 'news', trustedNetworks: ['10.1.0.0/16'], bulk: true, lint: { policy: 'enforce' } },
            { name: 'plain', trustedNetworks: ['10.2.0.0/16'] },
          ],
        }),
      ),
    );
    const tenants = (built.doc as { tenants: Record<string, unknown>[] }).tenants;
    assert.deepEqual(
      tenants.map((t) => [t.name, t.bulk, t.lint]),
      [
        ['news', true, { policy: 'enforce' }],
        ['plain', undefined, undefined],
      ],
    );
    assert.equal(checkConfigSchema(built.doc), undefined);
  });
});
