/**
 * DKIM keys of an SmtpRelay's tenants (spec.tenants[].dkim): which Secrets they come from, how they are
 * rendered into the relay config (each key a file of the operator-owned Secret) and the TXT record to
 * publish for each, for the status. Pure: the reconciler reads the Secrets (controller.ts).
 */
import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import type { SmtpRelay, SmtpRelayStatus } from '../api/types.js';
import type { Problem } from '../conditions.js';
import type { Tenant } from '../constants.js';
import type { KObject } from '../objects.js';
import { dkimDnsRecord, keyProblem } from '../../../relay/src/contract/index.js';

type DkimSpec = NonNullable<Tenant['dkim']>;
type KeySpec = DkimSpec['keys'][number];
export type DkimRecord = NonNullable<SmtpRelayStatus['dkim']>[number];

/** The key in the Secret that holds the PEM private key when secretRef.key is not given. */
export const DEFAULT_DKIM_SECRET_KEY = 'private.key';

/** Where a key's PEM is: `<Secret name>/<key>`, the index of BuildInput.dkimKeys. */
export const dkimRef = (k: KeySpec) => `${k.secretRef.name}/${k.secretRef.key ?? DEFAULT_DKIM_SECRET_KEY}`;

/** File name of a tenant's key in the operator-owned Secret. */
export const dkimKeyFile = (tenant: string, i: number) => `dkim-${tenant}-${i}.pem`;

/** The Secrets an SmtpRelay's DKIM keys come from. */
export function dkimSecrets(r: SmtpRelay): string[] {
  return (r.spec?.tenants ?? []).flatMap((t) => (t.dkim?.keys ?? []).map((k) => k.secretRef.name));
}

/**
 * The relay config's `dkim` for a tenant; each key's PEM goes into `secretData`. A key whose Secret is
 * missing is left out (a problem says so); without any key left, the tenant is rendered without `dkim`.
 */
export function renderDkim(
  t: Tenant,
  pems: Map<string, string>,
  secretData: Record<string, string>,
  problems: Problem[],
): Record<string, unknown> | undefined {
  if (!t.dkim) return undefined;
  const keys: Record<string, unknown>[] = [];
  t.dkim.keys.forEach((k, i) => {
    const pem = pems.get(dkimRef(k));
    if (!pem) {
      problems.push({
        reason: 'SecretMissing',
        message: `tenant ${t.name}: DKIM key ${k.selector}._domainkey.${k.domain}: Secret ${k.secretRef.name} (key ${k.secretRef.key ?? DEFAULT_DKIM_SECRET_KEY}) not found; mail of ${k.domain} is not signed with it`,
      });
      return;
    }
    const file = dkimKeyFile(t.name, i);
    secretData[file] = pem;
    keys.push({
      domain: k.domain,
      selector: k.selector,
      algorithm: k.algorithm ?? 'rsa-sha256',
      privateKeyFile: file,
    });
  });
  if (!keys.length) return undefined;
  return {
    keys,
    ...(t.dkim.unmatched ? { unmatched: t.dkim.unmatched } : {}),
    ...(t.dkim.expiry ? { expiry: t.dkim.expiry } : {}),
  };
}

/** For status.dkim: the TXT record of every key, or why there is none. */
export function dkimRecords(r: SmtpRelay, pems: Map<string, string>): DkimRecord[] {
  const out: DkimRecord[] = [];
  for (const t of r.spec?.tenants ?? [])
    for (const k of t.dkim?.keys ?? []) {
      const algorithm = k.algorithm ?? 'rsa-sha256';
      const domain = k.domain.toLowerCase().replace(/\.$/, '');
      const base = {
        tenant: t.name,
        domain,
        selector: k.selector,
        algorithm,
        name: `${k.selector}._domainkey.${domain}`,
      };
      const pem = pems.get(dkimRef(k));
      if (!pem) {
        out.push({
          ...base,
          problem: `Secret ${k.secretRef.name} or its key ${k.secretRef.key ?? DEFAULT_DKIM_SECRET_KEY} not found`,
        });
        continue;
      }
      try {
        const privateKey = createPrivateKey(pem);
        const problem = keyProblem(privateKey, algorithm);
        if (problem) out.push({ ...base, problem: `the key ${problem}` });
        else
          out.push({
            ...base,
            value: dkimDnsRecord({ domain, selector: k.selector, algorithm, privateKey }).value,
          });
      } catch (e) {
        out.push({ ...base, problem: `not a PEM private key: ${(e as Error).message}` });
      }
    }
  return out;
}

/** A Secret to create for keys with `generate: true` whose Secret does not exist. */
export interface KeysToGenerate {
  secret: string;
  keys: { key: string; algorithm: 'rsa-sha256' | 'ed25519-sha256' }[];
}

/** Which Secrets to create for `generate: true` keys, given which Secrets exist. */
export function keysToGenerate(r: SmtpRelay, exists: (secret: string) => boolean): KeysToGenerate[] {
  const out = new Map<string, KeysToGenerate>();
  for (const t of r.spec?.tenants ?? [])
    for (const k of t.dkim?.keys ?? []) {
      if (!k.generate || exists(k.secretRef.name)) continue;
      const g = out.get(k.secretRef.name) ?? { secret: k.secretRef.name, keys: [] };
      const key = k.secretRef.key ?? DEFAULT_DKIM_SECRET_KEY;
      if (!g.keys.some((x) => x.key === key)) g.keys.push({ key, algorithm: k.algorithm ?? 'rsa-sha256' });
      out.set(g.secret, g);
    }
  return [...out.values()];
}

/**
 * The Secret holding new key pairs (PEM, PKCS#8) for `g`. Not owned by the relay: a key whose record is in
 * DNS outlives it. Labelled and annotated so a human can tell where it came from.
 */
export function generatedKeySecret(r: SmtpRelay, g: KeysToGenerate): KObject {
  const data: Record<string, string> = {};
  for (const { key, algorithm } of g.keys) {
    const pair =
      algorithm === 'rsa-sha256'
        ? generateKeyPairSync('rsa', { modulusLength: 2048 })
        : generateKeyPairSync('ed25519');
    data[key] = Buffer.from(pair.privateKey.export({ type: 'pkcs8', format: 'pem' })).toString('base64');
  }
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      name: g.secret,
      namespace: r.metadata.namespace!,
      labels: { 'app.kubernetes.io/managed-by': 'cartero-operator' },
      annotations: { 'cartero.io/dkim-generated-for': r.metadata.name! },
    },
    type: 'Opaque',
    data,
  };
}
