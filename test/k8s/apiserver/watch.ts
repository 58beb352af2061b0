/** Watch: a chunked stream of one JSON event per line, replayed from a resourceVersion or from the current state. */
import { ApiError, badRequest } from './errors.js';
import type { KObject } from './objects.js';
import { apiVersionOf, resourceKey } from './resources.js';
import { FieldSelector, LabelSelector } from './selectors.js';
import type { StoreEvent } from './store.js';
import type { Call } from './handlers.js';

const BOOKMARK_INTERVAL_MS = 30_000;

interface WatchParams {
  labels: LabelSelector;
  fields: FieldSelector;
  resourceVersion?: number;
  sendInitialEvents: boolean;
  bookmarks: boolean;
  timeoutMs?: number;
}

function parseParams(call: Call): WatchParams {
  const q = call.query;
  const rvText = q.get('resourceVersion') ?? '';
  if (rvText !== '' && !/^\d+$/.test(rvText)) throw badRequest(`invalid resource version: "${rvText}"`);
  const fieldText = [q.get('fieldSelector'), call.rr.name ? `metadata.name=${call.rr.name}` : '']
    .filter((s) => s)
    .join(',');
  const sendInitialEvents = q.get('sendInitialEvents') === 'true';
  if (sendInitialEvents && q.get('resourceVersionMatch') !== 'NotOlderThan')
    throw badRequest('sendInitialEvents requires resourceVersionMatch=NotOlderThan');
  const timeout = Number(q.get('timeoutSeconds') ?? 0);
  return {
    labels: LabelSelector.parse(q.get('labelSelector')),
    fields: FieldSelector.parse(fieldText),
    resourceVersion: rvText === '' || rvText === '0' ? undefined : Number(rvText),
    sendInitialEvents,
    bookmarks: q.get('allowWatchBookmarks') === 'true',
    timeoutMs: timeout > 0 ? timeout * 1000 : undefined,
  };
}

export function handleWatch(call: Call): void {
  const { ctx, req, res, rr, t } = call;
  const p = parseParams(call);
  const key = resourceKey(t.group, t.plural);
  const apiVersion = apiVersionOf(t.group, rr.version);
  const inScope = (o: KObject) => !t.namespaced || !rr.namespace || o.metadata.namespace === rr.namespace;
  const matches = (o: KObject | undefined) =>
    !!o && inScope(o) && p.labels.matches(o.metadata.labels) && p.fields.matches(o);

  res.writeHead(200, {
    'Content-Type': 'application/json',
    'Cache-Control': 'no-cache, private',
    'Transfer-Encoding': 'chunked',
  });
  res.flushHeaders();
  const send = (type: string, object: unknown) => res.write(`${JSON.stringify({ type, object })}\n`);
  const renderer = /as=Table/.test(req.headers.accept ?? '') ? ctx.tableRenderer : undefined;
  const sendObject = (type: string, o: KObject) => {
    const obj = { ...o, apiVersion, kind: t.kind };
    send(type, renderer ? renderer(t, rr.version, obj, call.query) : obj);
  };
  const bookmark = (annotations?: Record<string, string>) =>
    send('BOOKMARK', {
      kind: t.kind,
      apiVersion,
      metadata: { resourceVersion: ctx.store.resourceVersion, ...(annotations ? { annotations } : {}) },
    });

  const timers: NodeJS.Timeout[] = [];
  let unsubscribe = () => {};
  let ended = false;
  const finish = (reset?: boolean) => {
    if (ended) return;
    ended = true;
    unsubscribe();
    for (const timer of timers) clearTimeout(timer);
    ctx.watches.delete(finish);
    if (reset) res.destroy();
    else if (!res.writableEnded) res.end();
  };
  const deliver = (e: StoreEvent) => {
    if (ended) return;
    if (!ctx.registry.find(t.group, rr.version, t.plural)) {
      finish(); // the CRD went away: end the stream, as a real server does
      return;
    }
    if (e.key !== key) return;
    const now = matches(e.object);
    const before = e.type === 'MODIFIED' ? matches(e.prev) : now;
    if (now && before) sendObject(e.type, e.object);
    else if (now) sendObject('ADDED', e.object);
    else if (before) sendObject('DELETED', e.object);
  };

  let backlog: StoreEvent[] = [];
  if (p.resourceVersion === undefined || p.sendInitialEvents) {
    const { items } = ctx.store.list(t, {
      namespace: rr.namespace,
      labelSelector: p.labels,
      fieldSelector: p.fields,
    });
    for (const o of items) sendObject('ADDED', o);
    if (p.sendInitialEvents && p.bookmarks) bookmark({ 'k8s.io/initial-events-end': 'true' });
  } else {
    try {
      backlog = ctx.store.eventsSince(p.resourceVersion);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      send('ERROR', err.toStatus());
      res.end();
      return;
    }
  }
  ctx.watches.add(finish);
  if (p.timeoutMs) timers.push(setTimeout(() => finish(), p.timeoutMs));
  if (p.bookmarks)
    timers.push(setInterval(() => bookmark(), ctx.bookmarkIntervalMs ?? BOOKMARK_INTERVAL_MS).unref());
  req.on('close', () => finish());
  res.on('close', () => finish());
  unsubscribe = ctx.store.subscribe(deliver);
  for (const e of backlog) deliver(e);
}
