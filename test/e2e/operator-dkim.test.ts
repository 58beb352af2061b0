/**
 * DKIM through the operator: keys in Secrets named by an SmtpRelay's tenant, the operator renders them
 * into the relay's config, the relay (a real process under the test kubelet) signs, and the TXT records
 * the status says to publish verify what arrives at the test MX (mailauth). A key Secret replaced under
 * the running fleet changes the record and the signature without a restart. The CRD refuses a bad expiry.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { IMAGE, operatorE2e } from '../helpers/operator-e2e.js';
import { waitFor } from '../helpers/poll.js';
import { sendMail } from '../helpers/swaks.js';

const MX_ADDRESS = '127.0.4.91';
const e2e = operatorE2e({ name: 'operator-dkim', namespace: 'mail', mxAddress: MX_ADDRESS });
const { kubectl } = e2e;
const pem = (k: KeyObject) => k.export({ type: 'pkcs8', format: 'pem' }).toString();
const indent = (s: string) => s.replace(/\n/g, '\n    ');

interface Record_ {
  tenant: string;
  name: string;
  value?: string;
  problem?: string;
}

const secretYaml = (rsa: KeyObject, ed: KeyObject) => `
apiVersion: v1
kind: Secret
metadata: {name: shop-dkim, namespace: mail}
stringData:
  private.key: |
    ${indent(pem(rsa))}
  ed.key: |
    ${indent(pem(ed))}
`;

const relayYaml = (expiry = '7d', extraKey = '') => `
apiVersion: cartero.io/v1alpha1
kind: SmtpRelay
metadata: {name: signer, namespace: mail}
spec:
  replicas: 1
  image: ${IMAGE}
  terminationGracePeriodSeconds: 15
  listeners: [{name: smtp, port: 25, auth: optional}]
  tenants:
    - name: shop
      trustedNetworks: ['127.0.0.0/8']
      dkim:
        expiry: ${expiry}
        keys:
          - {domain: shop.example, selector: s2026, secretRef: {name: shop-dkim}}
          - {domain: shop.example, selector: e2026, algorithm: ed25519-sha256, secretRef: {name: shop-dkim, key: ed.key}}
${extraKey}  routing:
    domains:
      - {domain: example.test, host: ${MX_ADDRESS}, port: ${e2e.mx.port}, tls: none}
`;

async function records(): Promise<Record_[]> {
  const out = await kubectl(['get', 'smr', 'signer', '-n', 'mail', '-o', 'jsonpath={.status.dkim}']);
  return out.trim() ? (JSON.parse(out) as Record_[]) : [];
}

/** mailauth's verdicts on `raw`, against the records the status says to publish. */
async function verify(raw: Buffer, published: Record_[]): Promise<string[]> {
  const txt = new Map(published.map((r) => [r.name, r.value]));
  const r = await dkimVerify(raw, {
    resolver: async (name: string) => {
      const v = txt.get(name);
      if (!v) throw Object.assign(new Error(`NXDOMAIN ${name}`), { code: 'ENOTFOUND' });
      return [[v]];
    },
  });
  return r.results.map((x) => `${x.selector}:${x.status.result}`);
}

describe('DKIM through the operator', { timeout: 180_000 }, () => {
  it('signs with the keys of the Secret; the records in status verify the mail', async () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const ed = generateKeyPairSync('ed25519').privateKey;
    await kubectl(['apply', '-f', '-'], secretYaml(rsa, ed) + '---' + relayYaml());
    await kubectl(['wait', '--for=condition=Ready', 'smr/signer', '-n', 'mail', '--timeout=90s']).catch(
      async (e) => {
        const status = await kubectl([
          'get',
          'smr',
          'signer',
          '-n',
          'mail',
          '-o',
          'jsonpath={.status.conditions}',
        ]);
        throw new Error(`not Ready: ${status}`, { cause: e });
      },
    );
    const published = await waitFor(async () => ((await records()).length === 2 ? records() : undefined), {
      what: 'status.dkim',
    });
    assert.deepEqual(
      published.map((r) => r.name),
      ['s2026._domainkey.shop.example', 'e2026._domainkey.shop.example'],
    );
    assert.match(published[0].value!, /^v=DKIM1; k=rsa; p=MIIB/);
    assert.match(published[1].value!, /^v=DKIM1; k=ed25519; p=/);
    const ip = await e2e.podIp('signer-0');
    await sendMail(2525, { host: ip, from: 'app@shop.example', to: ['ok-1@example.test'] });
    const [m] = await waitFor(
      () =>
        e2e.mx.byRecipient('ok-1@example.test').length ? e2e.mx.byRecipient('ok-1@example.test') : undefined,
      {
        what: 'delivery',
        timeoutMs: 30_000,
      },
    );
    assert.deepEqual(await verify(m.raw, published), ['s2026:pass', 'e2026:pass']);

    // rotate the Ed25519 key in place: the status and the next signature follow, the pod is not restarted
    const uid = (
      await kubectl(['get', 'pod', 'signer-0', '-n', 'mail', '-o', 'jsonpath={.metadata.uid}'])
    ).trim();
    const ed2 = generateKeyPairSync('ed25519').privateKey;
    await kubectl(['apply', '-f', '-'], secretYaml(rsa, ed2));
    const rotated = await waitFor(
      async () => {
        const r = await records();
        return r[1]?.value && r[1].value !== published[1].value ? r : undefined;
      },
      { what: 'the new record in status' },
    );
    const m2 = await waitFor(
      async () => {
        const to = `ok-2-${Date.now()}@example.test`;
        await sendMail(2525, { host: ip, from: 'app@shop.example', to: [to] });
        const [got] = await waitFor(
          () => (e2e.mx.byRecipient(to).length ? e2e.mx.byRecipient(to) : undefined),
          {
            what: 'delivery',
            timeoutMs: 30_000,
          },
        );
        // the relay picks the key up by hot reload, shortly after the operator rewrote its Secret
        return (await verify(got.raw, rotated))[1] === 'e2026:pass' ? got : undefined;
      },
      { what: 'a signature with the new key', timeoutMs: 60_000, intervalMs: 1000 },
    );
    assert.deepEqual(await verify(m2.raw, rotated), ['s2026:pass', 'e2026:pass']);
    assert.equal(
      (await kubectl(['get', 'pod', 'signer-0', '-n', 'mail', '-o', 'jsonpath={.metadata.uid}'])).trim(),
      uid,
    );
  });

  it('generate: true makes a key pair into a new Secret, kept when the relay goes; its record verifies', async () => {
    await kubectl(
      ['apply', '-f', '-'],
      relayYaml(
        '7d',
        '          - {domain: gen.example, selector: g1, algorithm: ed25519-sha256, secretRef: {name: gen-dkim}, generate: true}\n',
      ),
    );
    const published = await waitFor(
      async () => {
        const r = await records();
        return r.find((x) => x.name === 'g1._domainkey.gen.example')?.value ? r : undefined;
      },
      { what: 'the generated key in status.dkim', timeoutMs: 30_000 },
    );
    const secret = JSON.parse(await kubectl(['get', 'secret', 'gen-dkim', '-n', 'mail', '-o', 'json'])) as {
      metadata: { ownerReferences?: unknown[]; annotations?: Record<string, string> };
      data: Record<string, string>;
    };
    assert.equal(secret.metadata.ownerReferences, undefined, 'not owned: deleting the relay keeps the key');
    assert.equal(secret.metadata.annotations?.['cartero.io/dkim-generated-for'], 'signer');
    assert.match(
      Buffer.from(secret.data['private.key'], 'base64').toString(),
      /^-----BEGIN PRIVATE KEY-----/,
    );
    const ip = await e2e.podIp('signer-0');
    const m = await waitFor(
      async () => {
        const to = `ok-gen-${Date.now()}@example.test`;
        await sendMail(2525, { host: ip, from: 'app@gen.example', to: [to] });
        const [got] = await waitFor(
          () => (e2e.mx.byRecipient(to).length ? e2e.mx.byRecipient(to) : undefined),
          {
            what: 'delivery',
            timeoutMs: 30_000,
          },
        );
        return (await verify(got.raw, published))[0] === 'g1:pass' ? got : undefined;
      },
      { what: 'mail signed with the generated key', timeoutMs: 60_000, intervalMs: 1000 },
    );
    assert.deepEqual(await verify(m.raw, published), ['g1:pass']);
  });

  it('the CRD refuses an expiry out of bounds, naming the field', async () => {
    await assert.rejects(
      kubectl(['apply', '-f', '-'], relayYaml('5m')),
      /dkim\.expiry.*must be from 1h to 3650d/s,
    );
  });
});
