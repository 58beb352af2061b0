import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { SmtpRelay } from '../../operator/src/api/types.js';
import { buildRelayConfig, type BuildInput } from '../../operator/src/relay/config-render.js';
import { checkRenderedConfig } from '../../operator/src/relay/config-check.js';
import { outboundCaRef } from '../../operator/src/relay/outbound-tls.js';
import { secretsOf } from '../../operator/src/cache.js';
import { makeTestCa } from '../helpers/certs.js';
import { buildInputFixture, smtpRelayFixture } from '../helpers/smtprelay-fixture.js';

function relay(outboundTls: NonNullable<SmtpRelay['spec']>['outboundTls']): SmtpRelay {
  return smtpRelayFixture({ outboundTls });
}

const input = (r: SmtpRelay, outboundCa?: string): BuildInput =>
  buildInputFixture(r, outboundCa ? { outboundCa } : {});

describe('SmtpRelay spec.outboundTls', () => {
  const spec = {
    level: 'required' as const,
    caSecretRef: { name: 'partner-ca' },
    policies: [
      { domain: 'partner.example', level: 'verify' as const },
      { domain: '.partner.example', level: 'verify' as const },
    ],
    mtaSts: { enabled: true, fetchTimeout: '5s', recheckInterval: '10m', cacheMaxEntries: 500 },
  };

  it('passes levels and MTA-STS through and puts the CA certificates in the operator Secret; the relay accepts it', async () => {
    const ca = (await makeTestCa()).cert.toString();
    const built = buildRelayConfig(input(relay(spec), ca));
    assert.deepEqual(built.doc.outboundTls, {
      level: 'required',
      caFile: 'outbound-ca.pem',
      policies: spec.policies,
      mtaSts: spec.mtaSts,
    });
    assert.equal(built.secretData['outbound-ca.pem'], ca);
    assert.deepEqual(built.problems, []);
    assert.equal(checkRenderedConfig(built.doc, built.secretData), undefined);
    assert.deepEqual(outboundCaRef(relay(spec)), { name: 'partner-ca', key: 'ca.crt' });
    assert.ok(
      secretsOf(relay(spec)).includes('partner-ca'),
      'a change to the CA Secret reconciles the relay',
    );
  });

  it('a missing CA Secret renders without caFile and says so; a Secret without a certificate is refused', () => {
    const built = buildRelayConfig(input(relay(spec)));
    assert.equal((built.doc.outboundTls as Record<string, unknown>).caFile, undefined);
    assert.match(
      built.problems[0].message,
      /outboundTls\.caSecretRef: Secret partner-ca \(key ca\.crt\) not found/,
    );
    const bad = buildRelayConfig(input(relay(spec), 'not a certificate'));
    assert.match(
      checkRenderedConfig(bad.doc, bad.secretData)?.message ?? '',
      /\/outboundTls\/caFile: holds no PEM certificate/,
    );
  });

  it('without spec.outboundTls nothing is rendered (the relay defaults: opportunistic, MTA-STS on)', () => {
    assert.equal(buildRelayConfig(input(relay(undefined))).doc.outboundTls, undefined);
  });

  it('the relay refuses a domain listed twice', () => {
    const twice = buildRelayConfig(
      input(
        relay({
          policies: [
            { domain: 'a.example', level: 'verify' },
            { domain: 'A.example', level: 'required' },
          ],
        }),
      ),
    );
    assert.match(
      checkRenderedConfig(twice.doc, twice.secretData)?.message ?? '',
      /\/outboundTls\/policies\/1\/domain: a\.example is listed twice/,
    );
  });
});
