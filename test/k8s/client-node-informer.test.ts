/**
 * @kubernetes/client-node 1.4.0 informers (makeInformer = ListWatch) and the raw Watch class against
 * the test API server: events, reconnects after the server closes a watch, relist after 410 Gone,
 * the `error` event (the informer does not restart by itself), bookmarks and initial events.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  ADD,
  ApiextensionsV1Api,
  CONNECT,
  CoreV1Api,
  CustomObjectsApi,
  DELETE,
  ERROR,
  ListWatch,
  makeInformer,
  UPDATE,
  Watch,
  type Informer,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  type ObjectCache,
  type V1ConfigMap,
  type V1CustomResourceDefinition,
} from '@kubernetes/client-node';
import { waitFor } from './helpers/poll.js';
import type { KObject } from './apiserver/objects.js';
import { startApiServer, type ApiServer } from './apiserver/server.js';
import { unusedPort } from './helpers/ports.js';
import { kubeConfigFrom, kubeConfigWithToken } from './client-node-helpers.js';

const pause = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** makeInformer returns a ListWatch, typed without latestResourceVersion(). */
const rvOf = (informer: Informer<V1ConfigMap>) =>
  (informer as ListWatch<V1ConfigMap>).latestResourceVersion();

/** An informer with every callback recorded as `<event> <name>[=<data.v>]`. */
interface Recorded<T extends KubernetesObject> {
  informer: Informer<T> & ObjectCache<T>;
  log: string[];
  errors: unknown[];
  connects: () => number;
  objects: T[];
}

function record<T extends KubernetesObject & { data?: Record<string, string> }>(
  informer: Informer<T> & ObjectCache<T>,
): Recorded<T> {
  const log: string[] = [];
  const errors: unknown[] = [];
  const objects: T[] = [];
  let connects = 0;
  const note = (verb: string) => (obj: T) => {
    objects.push(obj);
    const v = obj.data?.v;
    log.push(`${verb} ${obj.metadata?.name}${v === undefined ? '' : `=${v}`}`);
  };
  informer.on(ADD, note('add'));
  informer.on(UPDATE, note('update'));
  informer.on(DELETE, note('delete'));
  informer.on(ERROR, (err) => errors.push(err));
  informer.on(CONNECT, () => connects++);
  return { informer, log, errors, connects: () => connects, objects };
}

describe('client-node 1.4.0 informers and watches', () => {
  let server: ApiServer;
  let kc: KubeConfig;
  let core: CoreV1Api;
  const cmType = () => server.registry.find('', 'v1', 'configmaps')!;
  const watchesOf = (namespace: string, resource = 'configmaps') =>
    server.requests.filter((r) => r.verb === 'watch' && r.namespace === namespace && r.resource === resource);
  const listsOf = (namespace: string, resource = 'configmaps') =>
    server.requests.filter((r) => r.verb === 'list' && r.namespace === namespace && r.resource === resource);
  const cm = (name: string, v: string, labels?: Record<string, string>): V1ConfigMap => ({
    metadata: { name, labels },
    data: { v },
  });

  before(async () => {
    server = await startApiServer({ bookmarkIntervalMs: 150 });
    kc = kubeConfigFrom(server.kubeconfig);
    core = kc.makeApiClient(CoreV1Api);
    for (const name of ['inf-events', 'inf-close', 'inf-gone', 'inf-error', 'inf-watch'])
      await core.createNamespace({ body: { metadata: { name } } });
  });

  after(async () => {
    await server.stop();
  });

  it('makeInformer lists, then reports add, update and delete from the watch; labelSelector transitions', async () => {
    const namespace = 'inf-events';
    await core.createNamespacedConfigMap({ namespace, body: cm('pre', '0', { app: 'relay' }) });
    await core.createNamespacedConfigMap({ namespace, body: cm('other', '0', { app: 'mx' }) });
    const r = record(
      makeInformer(
        kc,
        `/api/v1/namespaces/${namespace}/configmaps`,
        () => core.listNamespacedConfigMap({ namespace, labelSelector: 'app=relay' }),
        'app=relay',
      ),
    );
    await r.informer.start();
    assert.deepEqual(r.log, ['add pre=0'], 'start() resolves once the list is in the cache');
    assert.equal(r.connects(), 1);
    await waitFor(() => watchesOf(namespace).length === 1, { what: 'the watch request' });
    const watch = new URL(watchesOf(namespace)[0].path, server.url);
    const listRv = rvOf(r.informer);
    assert.equal(watch.searchParams.get('resourceVersion'), listRv, 'the watch starts at the list');
    assert.equal(watch.searchParams.get('labelSelector'), 'app=relay');
    assert.equal(watch.searchParams.get('timeoutSeconds'), null, 'the informer asks for no watch timeout');
    assert.equal(watch.searchParams.get('allowWatchBookmarks'), null, 'nor for bookmarks');

    await core.createNamespacedConfigMap({ namespace, body: cm('a', '1', { app: 'relay' }) });
    // JSON patch is the generated client's default Content-Type: no options needed for these.
    await core.patchNamespacedConfigMap({
      name: 'a',
      namespace,
      body: [{ op: 'replace', path: '/data/v', value: '2' }],
    });
    await core.deleteNamespacedConfigMap({ name: 'a', namespace });
    // Selector transitions: leaving the selector is a delete, entering it an add.
    await core.patchNamespacedConfigMap({
      name: 'pre',
      namespace,
      body: [{ op: 'replace', path: '/metadata/labels/app', value: 'mx' }],
    });
    await core.patchNamespacedConfigMap({
      name: 'other',
      namespace,
      body: [{ op: 'replace', path: '/metadata/labels/app', value: 'relay' }],
    });
    await waitFor(() => r.log.length >= 6, { what: 'six informer events' });
    assert.deepEqual(r.log, [
      'add pre=0',
      'add a=1',
      'update a=2',
      'delete a=2',
      'delete pre=0',
      'add other=0',
    ]);
    assert.deepEqual(
      r.informer.list(namespace).map((o) => o.metadata?.name),
      ['other'],
    );
    assert.equal(r.informer.get('other', namespace)?.metadata?.labels?.app, 'relay');
    assert.equal(rvOf(r.informer), r.informer.get('other', namespace)?.metadata?.resourceVersion);

    // The cache holds list items as typed models (Date timestamps) and watch objects as plain JSON.
    assert.ok(r.objects[0].metadata?.creationTimestamp instanceof Date, 'from the list: a Date');
    assert.equal(typeof r.objects[1].metadata?.creationTimestamp, 'string', 'from the watch: a string');
    assert.deepEqual(r.errors, []);
    await r.informer.stop();
  });

  it('re-watches from its resourceVersion when the server closes the stream, without relisting', async () => {
    const namespace = 'inf-close';
    await core.createNamespacedConfigMap({ namespace, body: cm('one', '1') });
    const r = record(
      makeInformer(kc, `/api/v1/namespaces/${namespace}/configmaps`, () =>
        core.listNamespacedConfigMap({ namespace }),
      ),
    );
    await r.informer.start();
    await waitFor(() => watchesOf(namespace).length === 1, { what: 'the first watch' });
    const rv = rvOf(r.informer);

    for (let round = 1; round <= 3; round++) {
      assert.ok(server.closeWatches() >= 1);
      // Written while no watch is open: the next watch replays it from the informer's resourceVersion.
      server.store.create(cmType(), namespace, cm(`while-closed-${round}`, String(round)) as KObject);
      await waitFor(() => r.log.includes(`add while-closed-${round}=${round}`), {
        what: `the change made while closed (round ${round})`,
      });
      assert.equal(r.connects(), 1 + round, 'a CONNECT event per re-watch');
    }
    assert.equal(listsOf(namespace).length, 1, 'no relist: the watch resumed from its resourceVersion');
    const resumed = new URL(watchesOf(namespace)[1].path, server.url);
    assert.equal(resumed.searchParams.get('resourceVersion'), rv);

    await core.createNamespacedConfigMap({ namespace, body: cm('after', '9') });
    await waitFor(() => r.log.includes('add after=9'), { what: 'an event on the fourth watch' });
    assert.deepEqual(r.errors, []);
    await r.informer.stop();
  });

  it('a dropped connection is an error (Premature close): the informer stops until start() again', async () => {
    const namespace = 'inf-close';
    const r = record(
      makeInformer(kc, `/api/v1/namespaces/${namespace}/configmaps`, () =>
        core.listNamespacedConfigMap({ namespace }),
      ),
    );
    await r.informer.start();
    const watches = watchesOf(namespace).length;
    const lists = listsOf(namespace).length;
    assert.equal(server.closeWatches('reset'), 1);
    await waitFor(() => r.errors.length === 1, { what: 'the error event' });
    const err = r.errors[0] as Error & { code?: string };
    assert.equal(err.message, 'Premature close');
    assert.equal(err.code, 'ERR_STREAM_PREMATURE_CLOSE');
    await core.createNamespacedConfigMap({ namespace, body: cm('while-down', '1') });
    await pause(300);
    assert.equal(watchesOf(namespace).length, watches, 'no re-watch of its own');
    assert.ok(!r.log.includes('add while-down=1'));

    await r.informer.start();
    await waitFor(() => r.log.includes('add while-down=1'), { what: 'the catch-up after start()' });
    assert.equal(listsOf(namespace).length, lists, 'start() re-watched from the kept resourceVersion');
    await r.informer.stop();
  });

  it('relists after 410 Gone: the expired watch ends, the informer lists again and reports the difference', async () => {
    const namespace = 'inf-gone';
    for (const [name, v] of [
      ['keep', '1'],
      ['change', '1'],
      ['remove', '1'],
    ])
      await core.createNamespacedConfigMap({ namespace, body: cm(name, v) });
    const r = record(
      makeInformer(kc, `/api/v1/namespaces/${namespace}/configmaps`, () =>
        core.listNamespacedConfigMap({ namespace }),
      ),
    );
    await r.informer.start();
    await waitFor(() => watchesOf(namespace).length === 1, { what: 'the first watch' });
    assert.deepEqual(r.log, ['add change=1', 'add keep=1', 'add remove=1'], 'lists are in name order');

    // Close the watch, change things while it is closed, and compact history past the informer's
    // resourceVersion: its next watch is answered with an ERROR event carrying a 410 Status.
    const t = cmType();
    server.closeWatches();
    server.store.delete(t, namespace, 'remove');
    const changed = server.store.get(t, namespace, 'change');
    server.store.update(t, namespace, 'change', { ...changed, data: { v: '2' } });
    server.store.create(t, namespace, cm('new', '1') as KObject);
    server.store.compact();

    await waitFor(() => listsOf(namespace).length === 2, { what: 'the relist' });
    await waitFor(() => r.log.length >= 6, { what: 'the differences' });
    assert.deepEqual(r.log.slice(3).sort(), ['add new=1', 'delete remove=1', 'update change=2']);
    assert.equal(
      r.log[3],
      'delete remove=1',
      'deletions are reported first (the list is compared with the cache)',
    );
    assert.deepEqual(r.errors, [], 'a 410 is not reported as an error');
    assert.equal(r.connects(), 3, 'CONNECT for the expired watch, then for the relist');
    const expired = watchesOf(namespace)[1];
    assert.equal(expired.code, 200, 'the 410 comes as an ERROR event in a 200 stream');
    await waitFor(() => watchesOf(namespace).length === 3, { what: 'the watch after the relist' });
    assert.deepEqual(
      r.informer
        .list(namespace)
        .map((o) => `${o.metadata?.name}=${o.data?.v}`)
        .sort(),
      ['change=2', 'keep=1', 'new=1'],
    );
    await core.createNamespacedConfigMap({ namespace, body: cm('later', '1') });
    await waitFor(() => r.log.includes('add later=1'), { what: 'events after the relist' });
    await r.informer.stop();
  });

  it('after an error the informer stops: the caller must start() it again', async () => {
    const namespace = 'inf-error';
    const ext = kc.makeApiClient(ApiextensionsV1Api);
    const custom = kc.makeApiClient(CustomObjectsApi);
    const crd: V1CustomResourceDefinition = {
      metadata: { name: 'pools.inf.test' },
      spec: {
        group: 'inf.test',
        scope: 'Namespaced',
        names: { plural: 'pools', singular: 'pool', kind: 'Pool' },
        versions: [
          {
            name: 'v1',
            served: true,
            storage: true,
            schema: { openAPIV3Schema: { type: 'object', x_kubernetes_preserve_unknown_fields: true } },
          },
        ],
      },
    };
    const ref = { group: 'inf.test', version: 'v1', namespace, plural: 'pools' };
    const pool = (name: string) => ({
      apiVersion: 'inf.test/v1',
      kind: 'Pool',
      metadata: { name },
      data: { v: '1' },
    });
    await ext.createCustomResourceDefinition({ body: crd });
    await custom.createNamespacedCustomObject({ ...ref, body: pool('p1') });

    type Pool = KubernetesObject & { data?: Record<string, string> };
    const r = record<Pool>(
      makeInformer(
        kc,
        `/apis/inf.test/v1/namespaces/${namespace}/pools`,
        () => custom.listNamespacedCustomObject(ref) as Promise<KubernetesListObject<Pool>>,
      ),
    );
    await r.informer.start();
    await waitFor(() => watchesOf(namespace, 'pools').length === 1, { what: 'the watch' });
    assert.deepEqual(r.log, ['add p1=1']);

    // The CRD goes away: its custom resources are deleted (watchers see that), the server ends the
    // watch, the re-watch gets 404, the informer reports it and stops.
    await ext.deleteCustomResourceDefinition({ name: 'pools.inf.test' });
    await waitFor(() => r.errors.length === 1, { what: 'the error event' });
    assert.deepEqual(r.log, ['add p1=1', 'delete p1=1']);
    assert.equal(r.connects(), 2, 'it re-watched once after the stream ended');
    const err = r.errors[0] as Error & { statusCode?: number };
    assert.ok(err instanceof Error);
    assert.equal(
      err.statusCode,
      404,
      'a watch refused with an HTTP error: Error(statusText) with statusCode',
    );
    assert.equal(err.message, 'Not Found');
    const requestsAfterError = watchesOf(namespace, 'pools').length + listsOf(namespace, 'pools').length;
    await pause(500);
    assert.equal(
      watchesOf(namespace, 'pools').length + listsOf(namespace, 'pools').length,
      requestsAfterError,
      'no retry of its own',
    );

    // The caller restarts it (with its own backoff). It keeps its resourceVersion, so it re-watches
    // from there (no list) and catches up through the event history.
    const lists = listsOf(namespace, 'pools').length;
    await ext.createCustomResourceDefinition({ body: crd });
    await custom.createNamespacedCustomObject({ ...ref, body: pool('p2') });
    await r.informer.start();
    await waitFor(() => r.log.length >= 3, { what: 'events after start() again' });
    assert.deepEqual(r.log, ['add p1=1', 'delete p1=1', 'add p2=1']);
    assert.equal(listsOf(namespace, 'pools').length, lists, 'no relist on start() after a watch error');
    assert.equal(r.errors.length, 1);

    // A failing list is reported the same way, and also ends the informer.
    let failList = true;
    const flaky = record(
      makeInformer(kc, `/api/v1/namespaces/${namespace}/configmaps`, async () => {
        if (failList) throw new Error('list failed');
        return core.listNamespacedConfigMap({ namespace });
      }),
    );
    await flaky.informer.start();
    assert.equal((flaky.errors[0] as Error).message, 'list failed');
    assert.equal(watchesOf(namespace).length, 0, 'no watch without a list');
    failList = false;
    await flaky.informer.start();
    await waitFor(() => watchesOf(namespace).length === 1, { what: 'the watch after start() again' });

    // No server at all: the list (a typed API call) fails with node-fetch's FetchError, not an ApiException.
    const nowhere = kubeConfigWithToken(`http://127.0.0.1:${await unusedPort()}`, 'x');
    const nowhereCore = nowhere.makeApiClient(CoreV1Api);
    const refused = record(
      makeInformer(nowhere, `/api/v1/namespaces/${namespace}/configmaps`, () =>
        nowhereCore.listNamespacedConfigMap({ namespace }),
      ),
    );
    await refused.informer.start();
    const refusal = refused.errors[0] as Error & { code?: string; type?: string };
    assert.equal(refusal.name, 'FetchError');
    assert.equal(refusal.code, 'ECONNREFUSED');
    assert.equal(refused.errors.length, 1);

    // stop() aborts the watch, and the abort is reported as an error event (an AbortError): an error
    // handler that restarts the informer must leave a stopped one alone.
    await r.informer.stop();
    await flaky.informer.stop();
    await waitFor(() => r.errors.length === 2 && flaky.errors.length === 2, { what: 'the abort errors' });
    for (const e of [r.errors[1], flaky.errors[1]]) {
      assert.equal((e as Error).name, 'AbortError');
      assert.equal((e as { type?: string }).type, 'aborted');
    }
    await pause(200);
    assert.equal(watchesOf(namespace).length, 1, 'a stopped informer stays stopped');
  });

  it('a ListWatch over a Watch that adds timeoutSeconds and bookmarks re-watches by itself and keeps its resourceVersion fresh', async () => {
    // makeInformer's watches never time out (client-node sets no timeoutSeconds and no client-side
    // timeout), so a silent watch would hang forever; this is the watchdog pattern the operator can use.
    class TimedWatch extends Watch {
      override watch(
        path: string,
        query: Record<string, string | number | boolean | undefined>,
        callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
        done: (err: unknown) => void,
      ): Promise<AbortController> {
        return super.watch(path, { ...query, timeoutSeconds: 1, allowWatchBookmarks: true }, callback, done);
      }
    }
    const namespace = 'inf-timed';
    await core.createNamespace({ body: { metadata: { name: namespace } } });
    const informer = new ListWatch<V1ConfigMap>(
      `/api/v1/namespaces/${namespace}/configmaps`,
      new TimedWatch(kc),
      () => core.listNamespacedConfigMap({ namespace }),
      false,
    );
    const r = record(informer);
    await informer.start();
    const listRv = Number(informer.latestResourceVersion());
    // Changes elsewhere move the server's resourceVersion; bookmarks carry it to this informer.
    await core.createNamespacedConfigMap({ namespace: 'default', body: cm('elsewhere', '1') });
    const serverRv = Number(server.store.resourceVersion);
    assert.ok(serverRv > listRv);
    await waitFor(() => Number(informer.latestResourceVersion()) >= serverRv, {
      what: 'a bookmark advancing the informer',
    });
    await waitFor(() => watchesOf(namespace).length >= 3, {
      what: 'two timeouts and re-watches',
      timeoutMs: 5000,
    });
    assert.equal(listsOf(namespace).length, 1, 'timeouts do not relist');
    // Compaction no longer hurts: the informer resumes from a current resourceVersion.
    server.store.compact();
    server.closeWatches();
    await core.createNamespacedConfigMap({ namespace, body: cm('fresh', '1') });
    await waitFor(() => r.log.includes('add fresh=1'), { what: 'the event after compaction' });
    assert.equal(listsOf(namespace).length, 1, 'no relist after compaction: the bookmark RV is still valid');
    assert.deepEqual(r.errors, []);
    await informer.stop();
  });

  describe('the raw Watch class', () => {
    const namespace = 'inf-watch';
    interface Seen {
      type: string;
      obj: KubernetesObject & { code?: number; reason?: string };
    }
    const open = async (query: Record<string, string | number | boolean>) => {
      const events: Seen[] = [];
      let done: { err: unknown } | undefined;
      const controller = await new Watch(kc).watch(
        `/api/v1/namespaces/${namespace}/configmaps`,
        query,
        (type, obj: Seen['obj']) => events.push({ type, obj }),
        (err: unknown) => (done = { err }),
      );
      return { events, controller, done: () => done };
    };

    it('streams events and periodic bookmarks with allowWatchBookmarks', async () => {
      const { resourceVersion } = (await core.listNamespacedConfigMap({ namespace })).metadata ?? {};
      const w = await open({ allowWatchBookmarks: true, resourceVersion: resourceVersion ?? '' });
      const created = await core.createNamespacedConfigMap({ namespace, body: cm('w1', '1') });
      await waitFor(() => w.events.some((e) => e.type === 'BOOKMARK'), { what: 'a bookmark' });
      const added = w.events.find((e) => e.type === 'ADDED');
      assert.equal(added?.obj.metadata?.name, 'w1');
      const bookmark = w.events.find((e) => e.type === 'BOOKMARK');
      assert.equal(bookmark?.obj.kind, 'ConfigMap');
      assert.ok(
        Number(bookmark?.obj.metadata?.resourceVersion) >= Number(created.metadata?.resourceVersion),
        'a bookmark carries a resourceVersion to resume from',
      );
      w.controller.abort();
      await waitFor(() => w.done(), { what: 'done after abort' });
      assert.equal((w.done()?.err as Error).name, 'AbortError', 'abort() ends with done(AbortError)');
    });

    it('sendInitialEvents ends the initial ADDED events with the initial-events-end bookmark', async () => {
      const w = await open({
        sendInitialEvents: true,
        resourceVersionMatch: 'NotOlderThan',
        allowWatchBookmarks: true,
      });
      await waitFor(() => w.events.some((e) => e.type === 'BOOKMARK'), {
        what: 'the initial-events-end bookmark',
      });
      const first = w.events.findIndex((e) => e.type === 'BOOKMARK');
      assert.ok(w.events.slice(0, first).every((e) => e.type === 'ADDED'));
      assert.ok(w.events.slice(0, first).some((e) => e.obj.metadata?.name === 'w1'));
      assert.deepEqual(w.events[first].obj.metadata?.annotations, { 'k8s.io/initial-events-end': 'true' });
      w.controller.abort();
    });

    it('timeoutSeconds ends the stream with done(null); an expired resourceVersion is an ERROR event', async () => {
      const started = Date.now();
      const w = await open({ timeoutSeconds: 1, resourceVersion: server.store.resourceVersion });
      await waitFor(() => w.done(), { what: 'the end of the watch', timeoutMs: 5000 });
      assert.equal(w.done()?.err, null, 'a clean end of the stream is done(null)');
      assert.ok(Date.now() - started >= 900);

      await core.createNamespacedConfigMap({ namespace, body: cm('w2', '1') });
      server.store.compact();
      const old = await open({ resourceVersion: '1' });
      await waitFor(() => old.done(), { what: 'the end of the expired watch' });
      assert.equal(old.done()?.err, null);
      assert.equal(old.events.length, 1);
      assert.equal(old.events[0].type, 'ERROR');
      assert.equal(old.events[0].obj.code, 410);
      assert.equal(old.events[0].obj.reason, 'Expired');
    });

    it('a refused watch calls done(err) with the HTTP status in err.statusCode', async () => {
      let done: unknown;
      await new Watch(kc).watch(
        '/apis/nothing.test/v1/namespaces/x/things',
        {},
        () => {},
        (err: unknown) => (done = err),
      );
      await waitFor(() => done, { what: 'done' });
      assert.equal((done as { statusCode?: number }).statusCode, 404);
    });
  });
});
