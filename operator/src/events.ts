/**
 * Events. The pure decide and status functions return `EventIntent`s; the controllers hand them to the
 * `EventRecorder`, which writes a core/v1 Event once per transition.
 */
import type { CoreV1Api, KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { FIELD_MANAGER } from './constants.js';
import { errorText } from './errors.js';

export interface EventIntent {
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
  /** An action's event (each one is news), not a state's: written even when the last one was the same. */
  always?: boolean;
}

export class EventRecorder {
  /** Per object and reason: the last message written, so a state's event is written once per transition. */
  private readonly last = new Map<string, string>();

  constructor(
    private readonly core: CoreV1Api,
    private readonly log: Logger,
    private readonly now: () => Date,
  ) {}

  emit(obj: KubernetesObject, e: EventIntent): void {
    const meta = obj.metadata ?? {};
    const key = `${obj.kind}/${meta.namespace}/${meta.name}/${e.reason}`;
    if (!e.always && this.last.get(key) === e.message) return;
    this.last.set(key, e.message);
    const now = this.now()
      .toISOString()
      .replace(/\.\d{3}Z$/, 'Z');
    void this.core
      .createNamespacedEvent({
        namespace: meta.namespace!,
        body: {
          metadata: { generateName: `${meta.name}.`, namespace: meta.namespace },
          involvedObject: {
            apiVersion: obj.apiVersion,
            kind: obj.kind,
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
          },
          reason: e.reason,
          message: e.message.slice(0, 1024),
          type: e.type,
          source: { component: FIELD_MANAGER },
          // client-node types these as Date but sends them as given: the API wants seconds, not millis
          firstTimestamp: now as unknown as Date,
          lastTimestamp: now as unknown as Date,
          count: 1,
        },
      })
      .catch((err: unknown) => this.log.warn({ err: errorText(err) }, 'event.failed'));
  }

  emitAll(obj: KubernetesObject, events: EventIntent[]): void {
    for (const e of events) this.emit(obj, e);
  }

  /** Forgets the events of an object that is gone (`kind/namespace/name`). */
  forget(prefix: string): void {
    for (const k of [...this.last.keys()]) if (k.startsWith(`${prefix}/`)) this.last.delete(k);
  }
}
