/**
 * `cartero-operator --uninstall-check`: the Helm chart's pre-delete hook. It refuses (exit 1, with what to
 * do) while SmtpRelays exist where the operator watches: their finalizer `cartero.io/drain` is lifted only
 * by a running operator, once their queues are delivered or handed off, so uninstalling the operator first
 * would leave them, and their namespaces, impossible to delete.
 */
import { ApiException, CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { FINALIZER, GROUP, VERSION } from './constants.js';

export interface UninstallCheckResult {
  ok: boolean;
  /** `namespace/name` of the SmtpRelays found, ` (deleting)` when already being deleted. */
  relays: string[];
  /** What to tell the person running `helm uninstall`. */
  message: string;
}

interface Listed {
  items?: { metadata?: { name?: string; namespace?: string; deletionTimestamp?: unknown } }[];
}

export async function uninstallCheck(
  kc: KubeConfig,
  namespaces: string[] = [],
): Promise<UninstallCheckResult> {
  const api = kc.makeApiClient(CustomObjectsApi);
  const scope = namespaces.length ? `namespace ${namespaces.join(', ')}` : 'any namespace';
  const list: Listed = { items: [] };
  try {
    for (const namespace of namespaces.length ? namespaces : [undefined]) {
      const part = (
        namespace
          ? await api.listNamespacedCustomObject({
              group: GROUP,
              version: VERSION,
              namespace,
              plural: 'smtprelays',
            })
          : await api.listClusterCustomObject({ group: GROUP, version: VERSION, plural: 'smtprelays' })
      ) as Listed;
      list.items!.push(...(part.items ?? []));
    }
  } catch (e) {
    // the CRD is gone (deleted by hand): nothing can be left waiting for the operator
    if (e instanceof ApiException && e.code === 404)
      return { ok: true, relays: [], message: 'cartero: no SmtpRelay CRD: nothing waits for the operator' };
    const why = e instanceof ApiException ? `${e.code}` : e instanceof Error ? e.message : String(e);
    return {
      ok: false,
      relays: [],
      message:
        `cartero: refusing to uninstall: could not list SmtpRelays in ${scope} (${why}). ` +
        'Check that none exist (kubectl get smtprelays -A), then run `helm uninstall --no-hooks`.',
    };
  }
  const relays = (list.items ?? []).map(
    (r) =>
      `${r.metadata?.namespace}/${r.metadata?.name}${r.metadata?.deletionTimestamp ? ' (deleting)' : ''}`,
  );
  if (relays.length === 0)
    return { ok: true, relays, message: `cartero: no SmtpRelays in ${scope}: the operator may go` };
  return {
    ok: false,
    relays,
    message: [
      `cartero: refusing to uninstall the operator: ${relays.length} SmtpRelay(s) still exist: ${relays.join(', ')}.`,
      `Their finalizer ${FINALIZER} is lifted by the operator once their queues are delivered or handed off;`,
      'without the operator they could never be deleted. First delete them and wait until they are gone:',
      '  kubectl delete smtprelays --all -A          (to drop queued mail instead of delivering it, first:',
      '  kubectl annotate smtprelays --all -A cartero.io/abandon-queued-mail=true)',
      '  kubectl get smtprelays -A                   (until: No resources found)',
      'then run helm uninstall again. `helm uninstall --no-hooks` skips this check; remaining SmtpRelays then',
      `keep their finalizer until you remove it by hand.`,
    ].join('\n'),
  };
}
