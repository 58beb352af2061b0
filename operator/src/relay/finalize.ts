/**
 * Deletion of an SmtpRelay: every pod delivers (or expires) its queue first, unless the abandon
 * annotation says not to; then the relays stop, their spool claims go, and the finalizer is removed.
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { SmtpRelay } from '../api/types.js';
import type { ApiWriter } from '../api-writer.js';
import { ABANDON_ANNOTATION, API_VERSION, FINALIZER, names, selectorString } from '../constants.js';
import type { Caches, Pod } from '../cache.js';
import { errorText, ignoreNotFound } from '../errors.js';
import type { EventRecorder } from '../events.js';
import { drainFinished, drainPending, type RelayAdmin } from './admin-client.js';
import { deletingStatus } from './status.js';

export async function finalizeRelay(
  x: { caches: Caches; writer: ApiWriter; events: EventRecorder; now: () => Date },
  relay: SmtpRelay,
  pods: Pod[],
  admin: (ip: string) => RelayAdmin,
  log: Logger,
): Promise<{ requeueAfterMs?: number } | void> {
  if (!(relay.metadata.finalizers ?? []).includes(FINALIZER)) return;
  const abandon = relay.metadata.annotations?.[ABANDON_ANNOTATION] === 'true';
  const pending: string[] = [];
  if (!abandon) {
    for (const p of pods) {
      if (!p.status?.podIP || p.metadata.deletionTimestamp) {
        if (!p.metadata.deletionTimestamp) pending.push(`${p.metadata.name} (not running)`);
        continue;
      }
      try {
        const a = admin(p.status.podIP);
        let d = await a.drainStatus();
        if (!d.draining) d = await a.drain([]);
        if (!drainFinished(d)) pending.push(drainPending(p.metadata.name, d));
      } catch (e) {
        pending.push(`${p.metadata.name} (${errorText(e)})`);
      }
    }
  }
  let msg: string | undefined;
  if (pending.length)
    msg = `deleting: waiting for ${pending.join(', ')} to deliver their queues (annotate ${ABANDON_ANNOTATION}=true to abandon them)`;
  else if (!abandon && pods.length) {
    // Every queue is empty: stop the relays before their claims go (a claim must not vanish under a
    // running relay), then delete the claims, then let the SmtpRelay go.
    const sts = x.caches.statefulsets.get(relay.metadata.namespace, names(relay.metadata.name!).statefulSet);
    if (sts && sts.spec?.replicas !== 0)
      await x.writer.mergePatch({
        apiVersion: 'apps/v1',
        kind: 'StatefulSet',
        metadata: { name: sts.metadata.name, namespace: sts.metadata.namespace },
        spec: { replicas: 0 },
      } as KubernetesObject);
    msg = `deleting: queues delivered; stopping ${pods.map((p) => p.metadata.name).join(', ')} before their volumes are released`;
  }
  if (msg) {
    const { status, events } = deletingStatus(relay, msg, x.now());
    await x.writer.writeStatus(relay, 'smtprelays', status);
    x.events.emitAll(relay, events);
    return { requeueAfterMs: 2000 };
  }
  // Every queue was delivered and every relay stopped: the spool claims (kept by whenDeleted: Retain for
  // abandoned mail) go too, so an SmtpRelay re-created under this name does not start on old volumes.
  if (!abandon) await deleteClaims(x.writer, relay, log);
  log.info({ abandoned: abandon }, 'finalizer.removed');
  await ignoreNotFound(
    x.writer.mergePatch({
      apiVersion: API_VERSION,
      kind: 'SmtpRelay',
      metadata: {
        name: relay.metadata.name,
        namespace: relay.metadata.namespace,
        resourceVersion: relay.metadata.resourceVersion,
        finalizers: (relay.metadata.finalizers ?? []).filter((f) => f !== FINALIZER),
      },
    }),
  );
  await x.writer.deleteEgressPolicies(relay);
}

async function deleteClaims(writer: ApiWriter, relay: SmtpRelay, log: Logger): Promise<void> {
  const namespace = relay.metadata.namespace!;
  const claims = await writer.core.listNamespacedPersistentVolumeClaim({
    namespace,
    labelSelector: selectorString(relay.metadata.name!),
  });
  for (const c of claims.items) {
    await ignoreNotFound(
      writer.core.deleteNamespacedPersistentVolumeClaim({ namespace, name: c.metadata!.name! }),
    );
    log.info({ claim: c.metadata!.name }, 'claim.deleted');
  }
}
