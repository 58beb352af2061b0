/**
 * An informer: list, then watch from the list's resourceVersion, keeping a cache and reporting
 * changes, built on client-node's `Watch` (the streaming request with the kubeconfig's auth and TLS).
 *
 * What client-node 1.4.0's own `ListWatch`/`makeInformer` lack and this adds:
 * - restart after any error (a failed list, a watch answered non-200, a stream that broke, an ERROR
 *   event) with exponential back-off (800 ms doubling to 30 s, jittered), resuming from the last
 *   resourceVersion seen (ListWatch stops for good after an error until `start()` is called again);
 * - a relist after 410 Gone/Expired, whether answered as an HTTP status or as an ERROR event in the
 *   stream, that reports only the difference to the cache: ADDED for new objects, MODIFIED for
 *   objects whose resourceVersion changed, DELETED for objects that vanished (and DELETED + ADDED for
 *   an object recreated under the same name, i.e. a new uid); nothing for unchanged objects;
 * - watch bookmarks (`allowWatchBookmarks`; ListWatch sends no such parameter) and a watchdog that
 *   restarts a watch that delivered nothing (no event, no bookmark) for `watchdogMs`;
 * - a server-side `timeoutSeconds` on every watch (random in [300, 600) s, as client-go's reflector),
 *   so a connection that dies silently is replaced even without the watchdog;
 * - handlers that throw are logged (client-node's Watch swallows exceptions thrown by its callback).
 */
import { Watch, type KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import { errorField, silentLogger, type RuntimeLogger } from './log.js';
import { requestJson } from './rest.js';

export type InformerEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface InformerOptions<T extends KubernetesObject> {
  kc: KubeConfig;
  /** The list path, e.g. `/apis/cartero.io/v1alpha1/smtprelays` or `/api/v1/namespaces/x/configmaps`. */
  path: string;
  labelSelector?: string;
  /** Called for every change after the cache has taken it (exceptions are logged, not thrown). */
  onEvent: (type: InformerEventType, obj: T) => void;
  /** Restart a watch that delivered nothing (no event, no bookmark) for this long (default 300 000). */
  watchdogMs?: number;
  /** The watch's server-side `timeoutSeconds` (default random in [300, 600)). */
  watchTimeoutSeconds?: number;
  /** First back-off after an error (default 800 ms), doubling up to `maxBackoffMs` (default 30 000). */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** Page size of lists (default 500). */
  pageSize?: number;
  log?: RuntimeLogger;
}

export interface Informer<T extends KubernetesObject> {
  /** The cached objects. */
  list(): T[];
  /** One cached object; `namespace` undefined (or '') for cluster-scoped objects. */
  get(namespace: string | undefined, name: string): T | undefined;
  /** Resolves once the first full list is in the cache (and its ADDED events were reported). */
  synced(): Promise<void>;
  stop(): void;
}

interface ListBody<T> {
  kind?: string;
  apiVersion?: string;
  metadata?: { resourceVersion?: string; continue?: string };
  items?: T[];
}

interface StatusObject {
  kind?: string;
  code?: number;
  reason?: string;
  message?: string;
}

function keyOf(obj: KubernetesObject): string {
  return `${obj.metadata?.namespace ?? ''}/${obj.metadata?.name ?? ''}`;
}

function statusCodeOf(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as { statusCode?: unknown; code?: unknown };
  if (typeof e.statusCode === 'number') return e.statusCode;
  if (typeof e.code === 'number') return e.code;
  return undefined;
}

/** A watch that ended this soon without delivering anything counts as a failure (back-off). */
const MIN_HEALTHY_WATCH_MS = 1_000;

class InformerImpl<T extends KubernetesObject> implements Informer<T> {
  private cache = new Map<string, T>();
  private resourceVersion = '';
  /** Incremented whenever the current list/watch attempt is retired; stale callbacks compare it. */
  private generation = 0;
  private stopped = false;
  private failures = 0;
  private retryTimer?: NodeJS.Timeout;
  private watchdogTimer?: NodeJS.Timeout;
  private lastActivity = 0;
  private controller?: AbortController;
  private listAbort?: AbortController;
  private readonly watch: Watch;
  private readonly log: RuntimeLogger;
  private readonly watchdogMs: number;
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly syncedPromise: Promise<void>;
  private resolveSynced!: () => void;
  private rejectSynced!: (err: Error) => void;
  private hasSynced = false;

  constructor(private readonly opts: InformerOptions<T>) {
    this.watch = new Watch(opts.kc);
    this.log = opts.log ?? silentLogger;
    this.watchdogMs = opts.watchdogMs ?? 300_000;
    this.initialBackoffMs = opts.initialBackoffMs ?? 800;
    this.maxBackoffMs = opts.maxBackoffMs ?? 30_000;
    this.syncedPromise = new Promise<void>((resolve, reject) => {
      this.resolveSynced = resolve;
      this.rejectSynced = reject;
    });
    this.syncedPromise.catch(() => {}); // stop() before sync rejects it; callers that await it see that
    this.connect();
  }

  list(): T[] {
    return [...this.cache.values()];
  }

  get(namespace: string | undefined, name: string): T | undefined {
    return this.cache.get(`${namespace ?? ''}/${name}`);
  }

  synced(): Promise<void> {
    return this.syncedPromise;
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.retire();
    clearTimeout(this.retryTimer);
    if (!this.hasSynced)
      this.rejectSynced(new Error(`informer for ${this.opts.path} stopped before it synced`));
  }

  /** Ends the current attempt: its late callbacks are ignored, its requests aborted. */
  private retire(): void {
    this.generation++;
    clearTimeout(this.watchdogTimer);
    this.watchdogTimer = undefined;
    this.controller?.abort();
    this.controller = undefined;
    this.listAbort?.abort();
    this.listAbort = undefined;
  }

  private emit(type: InformerEventType, obj: T): void {
    try {
      this.opts.onEvent(type, obj);
    } catch (err) {
      this.log.error(
        { path: this.opts.path, type, key: keyOf(obj), err: errorField(err) },
        'informer event handler threw',
      );
    }
  }

  /** Starts a new attempt: list if there is no resourceVersion to resume from, then watch. */
  private connect(): void {
    if (this.stopped) return;
    this.retire();
    const gen = this.generation;
    if (this.resourceVersion) {
      this.startWatch(gen);
      return;
    }
    this.relist(gen).then(
      (ok) => {
        if (ok && gen === this.generation && !this.stopped) this.startWatch(gen);
      },
      (err: unknown) => {
        if (gen !== this.generation || this.stopped) return;
        this.log.warn({ path: this.opts.path, err: errorField(err) }, 'informer list failed');
        this.retryLater();
      },
    );
  }

  private retryLater(): void {
    if (this.stopped) return;
    this.retire();
    this.failures++;
    const base = Math.min(this.initialBackoffMs * 2 ** Math.min(this.failures - 1, 30), this.maxBackoffMs);
    const delay = Math.min(base * (1 + Math.random() * 0.2), this.maxBackoffMs);
    this.log.debug(
      { path: this.opts.path, failures: this.failures, delayMs: Math.round(delay) },
      'informer backing off',
    );
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** Lists every page; replaces the cache and reports the difference. False if the attempt was retired. */
  private async relist(gen: number): Promise<boolean> {
    const abort = new AbortController();
    this.listAbort = abort;
    const items: T[] = [];
    let resourceVersion = '';
    let cont: string | undefined;
    let listKind: string | undefined;
    let apiVersion: string | undefined;
    do {
      const page = await requestJson<ListBody<T>>(this.opts.kc, 'GET', this.opts.path, {
        query: {
          labelSelector: this.opts.labelSelector,
          limit: String(this.opts.pageSize ?? 500),
          continue: cont,
        },
        signal: abort.signal,
      });
      if (gen !== this.generation || this.stopped) return false;
      if (!resourceVersion) resourceVersion = page.metadata?.resourceVersion ?? '';
      listKind ??= page.kind;
      apiVersion ??= page.apiVersion;
      items.push(...(page.items ?? []));
      cont = page.metadata?.continue || undefined;
    } while (cont);
    this.listAbort = undefined;
    // List items come without kind and apiVersion from a real API server; give them the watch's.
    const kind = listKind?.endsWith('List') ? listKind.slice(0, -4) : undefined;
    for (const item of items) {
      if (!item.kind && kind) item.kind = kind;
      if (!item.apiVersion && apiVersion) item.apiVersion = apiVersion;
    }
    this.replace(items);
    this.resourceVersion = resourceVersion;
    this.failures = 0;
    if (!this.hasSynced) {
      this.hasSynced = true;
      this.resolveSynced();
    }
    this.log.debug({ path: this.opts.path, items: items.length, resourceVersion }, 'informer listed');
    return true;
  }

  /** Swaps in a fresh list, reporting only what differs from the cache. */
  private replace(items: T[]): void {
    const old = this.cache;
    const next = new Map<string, T>();
    for (const item of items) next.set(keyOf(item), item);
    this.cache = next;
    for (const [key, before] of old) {
      const now = next.get(key);
      if (!now || now.metadata?.uid !== before.metadata?.uid) this.emit('DELETED', before);
    }
    for (const [key, now] of next) {
      const before = old.get(key);
      if (!before || before.metadata?.uid !== now.metadata?.uid) this.emit('ADDED', now);
      else if (before.metadata?.resourceVersion !== now.metadata?.resourceVersion) this.emit('MODIFIED', now);
    }
  }

  private startWatch(gen: number): void {
    const started = performance.now();
    let lines = 0;
    let expired = false;
    let streamError: StatusObject | undefined;
    this.lastActivity = started;
    this.armWatchdog(gen);
    const timeoutSeconds = this.opts.watchTimeoutSeconds ?? 300 + Math.floor(Math.random() * 300);
    const query: Record<string, string> = {
      resourceVersion: this.resourceVersion,
      allowWatchBookmarks: 'true',
      timeoutSeconds: String(timeoutSeconds),
    };
    if (this.opts.labelSelector) query.labelSelector = this.opts.labelSelector;

    const onDone = (err: unknown) => {
      if (gen !== this.generation || this.stopped) return;
      this.controller = undefined;
      clearTimeout(this.watchdogTimer);
      const code = statusCodeOf(err);
      if (expired || code === 410) {
        this.log.info(
          { path: this.opts.path, resourceVersion: this.resourceVersion },
          'watch expired (410); relisting',
        );
        this.resourceVersion = '';
        this.connect();
        return;
      }
      if (err || streamError) {
        this.log.warn(
          {
            path: this.opts.path,
            err: err ? errorField(err) : streamError,
            resourceVersion: this.resourceVersion,
          },
          'watch failed; restarting after back-off',
        );
        this.retryLater();
        return;
      }
      if (lines === 0 && performance.now() - started < MIN_HEALTHY_WATCH_MS) {
        this.log.warn({ path: this.opts.path }, 'watch closed at once; restarting after back-off');
        this.retryLater();
        return;
      }
      this.failures = 0;
      this.log.debug(
        { path: this.opts.path, resourceVersion: this.resourceVersion },
        'watch closed; resuming',
      );
      this.connect();
    };

    const onLine = (type: string, obj: unknown) => {
      if (gen !== this.generation || this.stopped) return;
      lines++;
      this.lastActivity = performance.now();
      try {
        if (type === 'ERROR') {
          const status = obj as StatusObject;
          if (status.code === 410) expired = true;
          else streamError = status;
          this.log.info(
            { path: this.opts.path, code: status.code, reason: status.reason, message: status.message },
            'watch reported an error',
          );
          // The server ends the stream after an ERROR event; act on it now rather than wait for that.
          onDone(undefined);
          return;
        }
        this.failures = 0; // the connection works: the next error starts the back-off afresh
        const o = obj as T;
        const rv = o.metadata?.resourceVersion;
        if (type === 'BOOKMARK') {
          if (rv) this.resourceVersion = rv;
          return;
        }
        if (type !== 'ADDED' && type !== 'MODIFIED' && type !== 'DELETED') return;
        this.apply(type, o);
        if (rv) this.resourceVersion = rv;
      } catch (err) {
        this.log.error(
          { path: this.opts.path, err: errorField(err) },
          'informer failed to handle a watch event',
        );
      }
    };

    this.watch.watch(this.opts.path, query, onLine, onDone).then(
      (controller) => {
        if (gen !== this.generation || this.stopped) controller.abort();
        else this.controller = controller;
      },
      (err: unknown) => onDone(err ?? new Error('watch failed')),
    );
  }

  private apply(type: InformerEventType, obj: T): void {
    const key = keyOf(obj);
    const before = this.cache.get(key);
    if (type === 'DELETED') {
      if (!before) return;
      this.cache.delete(key);
      this.emit('DELETED', obj);
      return;
    }
    if (before && before.metadata?.resourceVersion === obj.metadata?.resourceVersion) return;
    this.cache.set(key, obj);
    this.emit(before ? 'MODIFIED' : 'ADDED', obj);
  }

  /** Restarts the watch (keeping the resourceVersion) when nothing arrived for `watchdogMs`. */
  private armWatchdog(gen: number): void {
    clearTimeout(this.watchdogTimer);
    const due = this.lastActivity + this.watchdogMs - performance.now();
    this.watchdogTimer = setTimeout(
      () => {
        if (gen !== this.generation || this.stopped) return;
        const silentMs = performance.now() - this.lastActivity;
        if (silentMs < this.watchdogMs) {
          this.armWatchdog(gen);
          return;
        }
        this.log.warn(
          { path: this.opts.path, silentMs: Math.round(silentMs), resourceVersion: this.resourceVersion },
          'watch delivered nothing for too long; restarting it',
        );
        this.connect();
      },
      Math.max(0, due),
    );
  }
}

/** Lists and watches `path`, keeping a cache and reporting changes to `onEvent`. */
export function startInformer<T extends KubernetesObject>(opts: InformerOptions<T>): Informer<T> {
  return new InformerImpl<T>(opts);
}
