/** The ServiceAccount controller: a `default` ServiceAccount in every namespace that is not terminating. */
import { ApiError } from '../apiserver/errors.js';
import type { Context } from './context.js';

export interface ServiceAccountController {
  sync(): void;
  /** Creates ServiceAccount `ns/name` unless it exists. */
  ensure(ns: string, name: string): void;
}

export function serviceAccountController(ctx: Context): ServiceAccountController {
  const { store, kinds } = ctx;

  function ensure(ns: string, name: string): void {
    try {
      store.get(kinds.serviceAccount, ns, name);
      return;
    } catch {
      // create it
    }
    try {
      store.create(kinds.serviceAccount, ns, {
        apiVersion: 'v1',
        kind: 'ServiceAccount',
        metadata: { name },
      });
    } catch (err) {
      // Lost a race, or the namespace is going away.
      if (!(err instanceof ApiError && [403, 404, 409].includes(err.code))) throw err;
    }
  }

  return {
    sync() {
      for (const ns of store.list(kinds.namespace).items)
        if (!ns.metadata.deletionTimestamp) ensure(ns.metadata.name ?? '', 'default');
    },
    ensure,
  };
}
