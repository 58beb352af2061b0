/**
 * Webhook endpoints of an SmtpRelay's tenants (spec.tenants[].webhooks, docs/events.md): which Secrets
 * hold their signing keys and how they are rendered into the relay config (each key a file of the
 * operator-owned Secret, like the DKIM keys). Pure: the reconciler reads the Secrets (controller.ts).
 */
import type { SmtpRelay } from '../api/types.js';
import type { Problem } from '../conditions.js';
import type { Tenant } from '../constants.js';

type HookSpec = NonNullable<Tenant['webhooks']>[number];

/** The key in the Secret that holds the signing key when secretRef.key is not given. */
export const DEFAULT_WEBHOOK_SECRET_KEY = 'signing.key';

/** Where an endpoint's signing key is: `<Secret name>/<key>`, the index of BuildInput.webhookKeys. */
export const webhookRef = (h: HookSpec) =>
  `${h.secretRef.name}/${h.secretRef.key ?? DEFAULT_WEBHOOK_SECRET_KEY}`;

/** File name of an endpoint's signing key in the operator-owned Secret. */
export const webhookKeyFile = (tenant: string, i: number) => `webhook-${tenant}-${i}.key`;

/** The Secrets an SmtpRelay's webhook signing keys come from. */
export function webhookSecrets(r: SmtpRelay): string[] {
  return (r.spec?.tenants ?? []).flatMap((t) => (t.webhooks ?? []).map((h) => h.secretRef.name));
}

/**
 * The relay config's `webhooks` for a tenant; each signing key goes into `secretData`. An endpoint whose
 * Secret is missing is left out (a problem says so: its events are not written until it is there).
 */
export function renderWebhooks(
  t: Tenant,
  keys: Map<string, string>,
  secretData: Record<string, string>,
  problems: Problem[],
): Record<string, unknown>[] | undefined {
  const out: Record<string, unknown>[] = [];
  (t.webhooks ?? []).forEach((h, i) => {
    const key = keys.get(webhookRef(h));
    if (!key) {
      problems.push({
        reason: 'SecretMissing',
        message: `tenant ${t.name}: webhook ${h.url}: Secret ${h.secretRef.name} (key ${h.secretRef.key ?? DEFAULT_WEBHOOK_SECRET_KEY}) not found; no events are sent to it`,
      });
      return;
    }
    if (out.some((o) => o.url === h.url)) {
      problems.push({ reason: 'InvalidSpec', message: `tenant ${t.name}: webhook ${h.url} is listed twice` });
      return;
    }
    const file = webhookKeyFile(t.name, i);
    secretData[file] = key;
    out.push({
      url: h.url,
      secretFile: file,
      ...(h.events ? { events: h.events } : {}),
      ...(h.batchSize ? { batchSize: h.batchSize } : {}),
      ...(h.timeout ? { timeout: h.timeout } : {}),
      ...(h.retryFor ? { retryFor: h.retryFor } : {}),
    });
  });
  return out.length ? out : undefined;
}
