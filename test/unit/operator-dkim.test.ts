import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import type { SmtpRelay } from '../../operator/src/api/types.js';
import { buildRelayConfig, type BuildInput } from '../../operator/src/relay/config-render.js';
import { checkRenderedConfig } from '../../operator/src/relay/config-check.js';
import { dkimRecords, generatedKeySecret, keysToGenerate } from '../../operator/src/relay/dkim.js';
import { secretsOf } from '../../operator/src/cache.js';
import { dkimDnsRecord } from '../../relay/src/contract/index.js';
import { buildInputFixture, smtpRelayFixture } from '../helpers/smtprelay-fixture.js';

const pem = (k: ReturnType<typeof generateKeyPairSync>['privateKey']) =>
  k.export({ type: 'pkcs8', format: 'pem' }).toString();
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
const ed = generateKeyPairSync('ed25519').privateKey;

function relay(): SmtpRelay {
  return smtpRelayFixture({
    tenants: [
      {
        name: 'shop',
        trustedNetworks: ['10.1.0.0/16'],
        dkim: {
          unmatched: 'refuse',
          expiry: '7d',
          keys: [
            { domain: 'Shop.example', selector: '2026a', secretRef: { name: 'shop-dkim' } },
            {
              domain: 'shop.example',
              selector: '2026e',
              algorithm: 'ed25519-sha256',
              secretRef: { name: 'shop-dkim', key: 'ed.key' },
            },
          ],
        },
      },
    ],
  });
}

const input = (dkimKeys: Map<string, string>): BuildInput => buildInputFixture(relay(), { dkimKeys });

describe('SmtpRelay tenants[].dkim', () => {
  const both = new Map([
    ['shop-dkim/private.key', pem(rsa)],
    ['shop-dkim/ed.key', pem(ed)],
  ]);

  it('renders each key as a file of the operator Secret; the relay accepts the result', () => {
    const built = buildRelayConfig(input(both));
    const t = (built.doc.tenants as Record<string, unknown>[])[0];
    assert.deepEqual(t.dkim, {
      unmatched: 'refuse',
      expiry: '7d',
      keys: [
        {
          domain: 'Shop.example',
          selector: '2026a',
          algorithm: 'rsa-sha256',
          privateKeyFile: 'dkim-shop-0.pem',
        },
        {
          domain: 'shop.example',
          selector: '2026e',
          algorithm: 'ed25519-sha256',
          privateKeyFile: 'dkim-shop-1.pem',
        },
      ],
    });
    assert.equal(built.secretData['dkim-shop-1.pem'], pem(ed));
    assert.deepEqual(built.problems, []);
    assert.equal(checkRenderedConfig(built.doc, built.secretData), undefined);
    assert.ok(secretsOf(relay()).includes('shop-dkim'), 'a change to the key Secret reconciles the relay');
  });

  it('a missing Secret leaves the key out with a problem; a key the relay refuses is not applied', () => {
    const built = buildRelayConfig(input(new Map([['shop-dkim/ed.key', pem(ed)]])));
    assert.match(built.problems[0].message, /Secret shop-dkim \(key private\.key\) not found/);
    assert.equal(
      ((built.doc.tenants as Record<string, unknown>[])[0].dkim as { keys: unknown[] }).keys.length,
      1,
    );
    const wrong = buildRelayConfig(input(new Map([...both, ['shop-dkim/private.key', pem(ed)]])));
    assert.match(
      checkRenderedConfig(wrong.doc, wrong.secretData)?.message ?? '',
      /\/tenants\/0\/dkim\/keys\/0\/privateKeyFile: is a ed25519 key, not an RSA key/,
    );
  });

  it('status lists the TXT record to publish for each key, or why there is none', () => {
    const records = dkimRecords(relay(), new Map([['shop-dkim/ed.key', pem(ed)]]));
    assert.deepEqual(records[1], {
      tenant: 'shop',
      domain: 'shop.example',
      selector: '2026e',
      algorithm: 'ed25519-sha256',
      name: '2026e._domainkey.shop.example',
      value: dkimDnsRecord({
        domain: 'shop.example',
        selector: '2026e',
        algorithm: 'ed25519-sha256',
        privateKey: ed,
      }).value,
    });
    assert.match(records[1].value!, /^v=DKIM1; k=ed25519; p=/);
    assert.equal(records[0].name, '2026a._domainkey.shop.example');
    assert.match(records[0].problem!, /Secret shop-dkim or its key private\.key not found/);
    const bad = dkimRecords(
      relay(),
      new Map([
        ['shop-dkim/private.key', 'junk'],
        ['shop-dkim/ed.key', pem(rsa)],
      ]),
    );
    assert.match(bad[0].problem!, /not a PEM private key/);
    assert.match(bad[1].problem!, /not an Ed25519 key/);
  });

  it('generate: one Secret per missing Secret, a key per secretRef.key, never for a Secret that exists', () => {
    const r = relay();
    for (const k of r.spec.tenants![0].dkim!.keys) k.generate = true;
    assert.deepEqual(
      keysToGenerate(r, () => true),
      [],
    );
    const g = keysToGenerate(r, () => false);
    assert.deepEqual(g, [
      {
        secret: 'shop-dkim',
        keys: [
          { key: 'private.key', algorithm: 'rsa-sha256' },
          { key: 'ed.key', algorithm: 'ed25519-sha256' },
        ],
      },
    ]);
    const secret = generatedKeySecret(r, g[0]) as unknown as {
      metadata: { ownerReferences?: unknown };
      data: Record<string, string>;
    };
    assert.equal(secret.metadata.ownerReferences, undefined);
    const pems = new Map(
      Object.entries(secret.data).map(([k, v]) => [`shop-dkim/${k}`, Buffer.from(v, 'base64').toString()]),
    );
    assert.deepEqual(
      dkimRecords(r, pems).map((x) => x.value?.slice(0, 16)),
      ['v=DKIM1; k=rsa; ', 'v=DKIM1; k=ed255'],
    );
  });
});
