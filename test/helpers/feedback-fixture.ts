/**
 * The feedback unit tests' config (relay/src/feedback/): the token key, a fixed clock and queue id, and
 * tenant `acme` with a tagged return path and a feedback address, beside a second tenant `globex` shaped
 * by each test.
 */
import type { RelayConfig, TenantConfig } from '../../relay/src/config.js';

export const KEY = Buffer.from('unit-test-feedback-key-0123456789');
export const NOW = Date.UTC(2026, 11, 5);
export const QID = '0MIRS2QX0ABCDEFGHIJK';

export function feedbackCfg(globex: Partial<TenantConfig>): Pick<RelayConfig, 'tenants' | 'feedback'> {
  return {
    tenants: new Map<string, TenantConfig>([
      [
        'acme',
        {
          name: 'acme',
          returnPath: { domain: 'b.acme.test', prefix: 'bounce' },
          feedbackAddress: 'fbl@acme.test',
        } as TenantConfig,
      ],
      ['globex', { name: 'globex', ...globex } as TenantConfig],
    ]),
    feedback: { key: KEY, tokenTtlDays: 30, unmatchedKeep: 10 } as RelayConfig['feedback'],
  };
}
