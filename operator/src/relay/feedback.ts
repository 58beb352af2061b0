/**
 * The feedback loop in the operator (docs/feedback.md, ADR 016): the relay config's `feedback` section and
 * the tenants' returnPath / feedbackAddress, the token key kept in the operator-owned Secret, the Service
 * `<name>-feedback` (port 25 to the listener) and the MX records shown in status.feedback. Pure.
 */
import type { SmtpRelay, SmtpRelaySpec } from '../api/types.js';
import { ADMIN_PORT, FEEDBACK_PORT, names, selectorLabels } from '../constants.js';
import type { KObject } from '../objects.js';
import { meta } from './workload.js';

export const FEEDBACK_KEY_FILE = 'feedback.key';

type Tenant = NonNullable<SmtpRelaySpec['tenants']>[number];

/**
 * The headless Service's name, which resolves to every pod of the StatefulSet (ready or not): where a
 * relay asks the others for a sent message it did not accept (ADR 020).
 */
export function peerLookupHost(relay: string, namespace: string): string {
  return `${names(relay).headless}.${namespace}.svc.cluster.local`;
}

/** The relay config's `feedback` section, or undefined without spec.feedback. */
export function renderFeedback(
  spec: SmtpRelaySpec,
  key: string,
  secretData: Record<string, string>,
  relay: { name: string; namespace: string },
): Record<string, unknown> | undefined {
  if (!spec.feedback) return undefined;
  secretData[FEEDBACK_KEY_FILE] = key;
  return {
    tokenKeyFile: FEEDBACK_KEY_FILE,
    listener: {
      address: '${POD_IP}',
      port: FEEDBACK_PORT,
      ...(spec.feedback.maxMessageSize ? { maxMessageSize: spec.feedback.maxMessageSize } : {}),
    },
    // a report lands on any pod: the others are asked over the admin port, with the shared admin token
    peerLookup: { host: peerLookupHost(relay.name, relay.namespace), port: ADMIN_PORT },
  };
}

/** A tenant's returnPath and feedbackAddress in the relay config (only with spec.feedback: the CRD's rule). */
export function renderTenantFeedback(spec: SmtpRelaySpec, t: Tenant, out: Record<string, unknown>): void {
  if (!spec.feedback) return;
  if (t.returnPath)
    out.returnPath = {
      domain: t.returnPath.domain,
      ...(t.returnPath.prefix ? { prefix: t.returnPath.prefix } : {}),
    };
  if (t.feedbackAddress) out.feedbackAddress = t.feedbackAddress;
}

/** status.feedback.mx: the MX record each bounce domain publishes. */
export function feedbackMx(spec: SmtpRelaySpec): { tenant: string; domain: string; record: string }[] {
  if (!spec.feedback) return [];
  const target = spec.feedback.mxHost.replace(/\.?$/, '.');
  return (spec.tenants ?? [])
    .filter((t) => t.returnPath)
    .map((t) => ({
      tenant: t.name,
      domain: t.returnPath!.domain,
      record: `${t.returnPath!.domain.toLowerCase()}. IN MX 10 ${target}`,
    }));
}

/** The Service in front of the feedback listeners, or undefined without spec.feedback. */
export function buildFeedbackService(relay: SmtpRelay): KObject | undefined {
  const f = relay.spec.feedback;
  if (!f) return undefined;
  const name = relay.metadata.name!;
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(relay, names(name).feedbackService),
    spec: {
      type: f.serviceType ?? 'LoadBalancer',
      selector: selectorLabels(name),
      ports: [{ name: 'feedback', port: 25, targetPort: 'feedback', protocol: 'TCP' }],
    },
  };
}
