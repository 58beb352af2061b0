import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import type { KubernetesObject } from '@kubernetes/client-node';
import { parse as parseYaml } from 'yaml';
import { startInformer, type Informer, type InformerEventType } from '../../operator/src/runtime/informer.js';
import { waitFor } from '../helpers/poll.js';
import { startApiServer, type ApiServer, type RequestRecord } from '@cartero/k8s-testbed/apiserver/server.js';
import type { KObject } from '@cartero/k8s-testbed/apiserver/objects.js';
import { resourceKey } from '@cartero/k8s-testbed/apiserver/resources.js';
import type { StoreEvent } from '@cartero/k8s-testbed/apiserver/store.js';
import { createNamespace, kubeConfig, startProxy, storeOf, type TestProxy } from './support.js';

interface ConfigMap extends KubernetesObject {
  data?: Record<string, string>;
}

interface Seen {
  type: InformerEventType;
  name: string;
  rv: string;
  uid: string;
}

function recorder() {
  const events: Seen[] = [];
  const onEvent = (type: InformerEventType, obj: KubernetesObject) =>
    events.push({
      type,
      name: obj.metadata?.name ?? '',
      rv: obj.metadata?.resourceVersion ?? '',
      uid: obj.metadata?.uid ?? '',
    });
  return { events, onEvent };
}

const query = (r: RequestRecord) => new URL(r.path, 'http://x').searchParams;

function requestsFor(api: ApiServer, path: string, verb: string): RequestRecord[] {
  return api.requests.filter((r) => r.verb === verb && r.path.split('?')[0] === path);
}

describe('informer', () => {
  let api: ApiServer;
  let proxy: TestProxy;
  const informers: Informer<KubernetesObject>[] = [];

  before(async () => {
    api = await startApiServer();
    proxy = await startProxy(api.url);
  });
  after(async () => {
    for (const inf of informers) inf.stop();
    await proxy.stop();
    await api.stop();
  });

  it('lists, then reports additions, updates and deletions; get() and list() follow the cache', async () => {
    createNamespace(api, 'basic');
    const cms = storeOf(api, '', 'v1', 'configmaps');
    cms.create('basic', { metadata: { name: 'a' }, data: { v: '1' } });
    cms.create('basic', { metadata: { name: 'b' }, data: { v: '1' } });
    const path = '/api/v1/namespaces/basic/configmaps';
    const { events, onEvent } = recorder();
    const inf = startInformer<ConfigMap>({ kc: kubeConfig(proxy.url, api.token), path, onEvent });
    informers.push(inf);
    await inf.synced();
    assert.deepEqual(
      events.map((e) => [e.type, e.name]),
      [
        ['ADDED', 'a'],
        ['ADDED', 'b'],
      ],
    );
    assert.equal(inf.get('basic', 'a')?.data?.v, '1');
    assert.equal(inf.get('basic', 'a')?.kind, 'ConfigMap');
    assert.equal(inf.get(undefined, 'a'), undefined);

    cms.create('basic', { metadata: { name: 'c' }, data: { v: '1' } });
    await waitFor(() => inf.get('basic', 'c'), { what: 'c in the cache' });
    const a = cms.get('basic', 'a');
    const updated = cms.update('basic', 'a', { ...a, data: { v: '2' } });
    await waitFor(() => inf.get('basic', 'a')?.data?.v === '2', { what: 'the update of a' });
    cms.delete('basic', 'b');
    await waitFor(() => inf.get('basic', 'b') === undefined, { what: 'b gone' });
    assert.deepEqual(
      events.map((e) => [e.type, e.name]),
      [
        ['ADDED', 'a'],
        ['ADDED', 'b'],
        ['ADDED', 'c'],
        ['MODIFIED', 'a'],
        ['DELETED', 'b'],
      ],
    );
    assert.equal(events[3].rv, updated.metadata.resourceVersion);
    assert.deepEqual(
      inf
        .list()
        .map((o) => o.metadata?.name)
        .sort(),
      ['a', 'c'],
    );

    const lists = requestsFor(api, path, 'list');
    const watches = requestsFor(api, path, 'watch');
    assert.equal(lists.length, 1);
    assert.equal(watches.length, 1);
    const w = query(watches[0]);
    assert.equal(w.get('allowWatchBookmarks'), 'true');
    assert.ok(Number(w.get('timeoutSeconds')) >= 300 && Number(w.get('timeoutSeconds')) < 600);
    assert.equal(query(lists[0]).get('limit'), '500');

    inf.stop();
    await waitFor(() => proxy.streams() === 0, { what: 'the watch connection closed on stop()' });
  });

  it('rejects synced() when stopped before the first list', async () => {
    const inf = startInformer({
      kc: kubeConfig(proxy.url, api.token),
      path: '/api/v1/configmaps',
      onEvent() {},
    });
    inf.stop();
    await assert.rejects(inf.synced(), /stopped before it synced/);
  });

  it('watches custom resources across namespaces with a label selector (objects leaving and entering it)', async () => {
    const crd = parseYaml(await readFile('crds/smtprelay.yaml', 'utf8')) as KObject;
    storeOf(api, 'apiextensions.k8s.io', 'v1', 'customresourcedefinitions').create('', crd);
    await waitFor(() => api.registry.find('cartero.io', 'v1alpha1', 'smtprelays'), {
      what: 'the CRD served',
    });
    createNamespace(api, 'tenant-1');
    createNamespace(api, 'tenant-2');
    const relays = storeOf(api, 'cartero.io', 'v1alpha1', 'smtprelays');
    const relay = (name: string, tier: string) => ({
      metadata: { name, labels: { tier } },
      spec: { replicas: 1 },
    });
    relays.create('tenant-1', relay('edge-1', 'edge'));
    relays.create('tenant-2', relay('core-1', 'core'));
    const { events, onEvent } = recorder();
    const path = '/apis/cartero.io/v1alpha1/smtprelays';
    const inf = startInformer({
      kc: kubeConfig(proxy.url, api.token),
      path,
      labelSelector: 'tier=edge',
      onEvent,
    });
    informers.push(inf);
    await inf.synced();
    assert.deepEqual(
      inf.list().map((o) => `${o.metadata?.namespace}/${o.metadata?.name}`),
      ['tenant-1/edge-1'],
    );
    assert.equal(inf.get('tenant-1', 'edge-1')?.kind, 'SmtpRelay');
    relays.create('tenant-2', relay('edge-2', 'edge'));
    const core = relays.get('tenant-2', 'core-1');
    relays.update('tenant-2', 'core-1', {
      ...core,
      metadata: { ...core.metadata, labels: { tier: 'edge' } },
    });
    const edge1 = relays.get('tenant-1', 'edge-1');
    relays.update('tenant-1', 'edge-1', {
      ...edge1,
      metadata: { ...edge1.metadata, labels: { tier: 'core' } },
    });
    await waitFor(() => events.length === 4, { what: 'four events' });
    assert.deepEqual(
      events.map((e) => [e.type, e.name]),
      [
        ['ADDED', 'edge-1'],
        ['ADDED', 'edge-2'],
        ['ADDED', 'core-1'],
        ['DELETED', 'edge-1'],
      ],
    );
    assert.equal(query(requestsFor(api, path, 'watch')[0]).get('labelSelector'), 'tier=edge');
  });

  it('resumes a watch the server closes (timeoutSeconds) or that breaks, without losing or repeating events', async () => {
    createNamespace(api, 'churn');
    const cms = storeOf(api, '', 'v1', 'configmaps');
    const truth: { type: string; name: string; rv: string }[] = [];
    const unsubscribe = api.store.subscribe((e: StoreEvent) => {
      if (e.key === resourceKey('', 'configmaps') && e.namespace === 'churn')
        truth.push({ type: e.type, name: e.object.metadata.name ?? '', rv: String(e.rv) });
    });
    cms.create('churn', { metadata: { name: 'seed' }, data: { n: '0' } });
    const path = '/api/v1/namespaces/churn/configmaps';
    const { events, onEvent } = recorder();
    const inf = startInformer({
      kc: kubeConfig(proxy.url, api.token),
      path,
      onEvent,
      watchTimeoutSeconds: 1,
      initialBackoffMs: 50,
    });
    informers.push(inf);
    await inf.synced();
    // Writes every 30 ms for about 3.5 s: several watches end on their timeout meanwhile; one breaks.
    let dropped = 0;
    for (let i = 1; i <= 110; i++) {
      const name = `cm-${i % 7}`;
      try {
        const cur = cms.get('churn', name);
        if (i % 5 === 0) cms.delete('churn', name);
        else cms.update('churn', name, { ...cur, data: { n: String(i) } });
      } catch {
        cms.create('churn', { metadata: { name }, data: { n: String(i) } });
      }
      if (i === 60) dropped = proxy.dropStreams();
      await new Promise((resolve) => setTimeout(resolve, 30));
    }
    unsubscribe();
    const last = truth[truth.length - 1].rv;
    await waitFor(() => events.some((e) => e.rv === last), {
      what: 'the last change seen',
      timeoutMs: 5_000,
    });
    assert.ok(dropped >= 1, 'the watch connection was broken');
    assert.deepEqual(
      events.slice(1).map((e) => ({ type: e.type, name: e.name, rv: e.rv })),
      truth.slice(1),
      'every change exactly once, in order',
    );
    const watches = requestsFor(api, path, 'watch');
    assert.ok(watches.length >= 4, `${watches.length} watches`);
    assert.equal(
      requestsFor(api, path, 'list').length,
      1,
      'resumed from the last resourceVersion, never relisted',
    );
    const rvs = watches.map((w) => Number(query(w).get('resourceVersion')));
    assert.deepEqual(
      rvs,
      [...rvs].sort((x, y) => x - y),
      'each watch resumes where the previous one ended',
    );
    assert.deepEqual(
      inf
        .list()
        .map((o) => o.metadata?.resourceVersion)
        .sort(),
      cms
        .list('churn')
        .map((o) => o.metadata.resourceVersion)
        .sort(),
    );
  });

  it('restarts a watch that delivered nothing for watchdogMs (a silently dead connection), not a busy one', async () => {
    createNamespace(api, 'quiet');
    const cms = storeOf(api, '', 'v1', 'configmaps');
    cms.create('quiet', { metadata: { name: 'busy' }, data: { n: '0' } });
    const path = '/api/v1/namespaces/quiet/configmaps';
    const { events, onEvent } = recorder();
    const inf = startInformer<ConfigMap>({
      kc: kubeConfig(proxy.url, api.token),
      path,
      onEvent,
      watchdogMs: 400,
    });
    informers.push(inf);
    await inf.synced();
    await waitFor(() => requestsFor(api, path, 'watch').length === 1 && proxy.streams() >= 1);
    // Busy: a change every 100 ms for 1.2 s keeps the watch alive.
    for (let i = 1; i <= 12; i++) {
      const cur = cms.get('quiet', 'busy');
      cms.update('quiet', 'busy', { ...cur, data: { n: String(i) } });
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await waitFor(() => inf.get('quiet', 'busy')?.data?.n === '12');
    assert.equal(requestsFor(api, path, 'watch').length, 1, 'a busy watch is left alone');
    // Silent: the connection stays open but delivers nothing.
    const resumeFrom = inf.get('quiet', 'busy')?.metadata?.resourceVersion;
    assert.ok(proxy.freeze() >= 1);
    const t0 = performance.now();
    cms.create('quiet', { metadata: { name: 'late' } });
    await waitFor(() => inf.get('quiet', 'late'), { what: 'the change after the freeze', timeoutMs: 5_000 });
    const waited = performance.now() - t0;
    assert.ok(waited >= 250, `seen after ${Math.round(waited)} ms, through a new watch`);
    const watches = requestsFor(api, path, 'watch');
    assert.equal(watches.length, 2);
    assert.equal(query(watches[1]).get('resourceVersion'), resumeFrom);
    assert.equal(requestsFor(api, path, 'list').length, 1);
    assert.deepEqual(
      events.slice(-1).map((e) => [e.type, e.name]),
      [['ADDED', 'late']],
    );
  });

  it('logs and survives an event handler that throws', async () => {
    createNamespace(api, 'throws');
    const cms = storeOf(api, '', 'v1', 'configmaps');
    const errors: string[] = [];
    const log = {
      debug() {},
      info() {},
      warn() {},
      error: (_obj: object, msg?: string) => void errors.push(msg ?? ''),
    };
    const seen: string[] = [];
    const inf = startInformer({
      kc: kubeConfig(proxy.url, api.token),
      path: '/api/v1/namespaces/throws/configmaps',
      log,
      onEvent: (_type, obj) => {
        seen.push(obj.metadata?.name ?? '');
        if (obj.metadata?.name === 'bad') throw new Error('handler bug');
      },
    });
    informers.push(inf);
    await inf.synced();
    cms.create('throws', { metadata: { name: 'bad' } });
    cms.create('throws', { metadata: { name: 'good' } });
    await waitFor(() => seen.includes('good'));
    assert.ok(inf.get('throws', 'bad'));
    assert.deepEqual(errors, ['informer event handler threw']);
  });
});

describe('informer after 410 Gone', () => {
  let api: ApiServer;
  let proxy: TestProxy;
  let inf: Informer<ConfigMap> | undefined;

  before(async () => {
    api = await startApiServer({ eventLogSize: 20 });
    proxy = await startProxy(api.url);
  });
  after(async () => {
    inf?.stop();
    await proxy.stop();
    await api.stop();
  });

  it('relists and reports only what changed while it was disconnected', async () => {
    createNamespace(api, 'gone');
    createNamespace(api, 'noise');
    const cms = storeOf(api, '', 'v1', 'configmaps');
    for (const name of ['a', 'b', 'c', 'd']) cms.create('gone', { metadata: { name }, data: { v: '1' } });
    const path = '/api/v1/namespaces/gone/configmaps';
    const { events, onEvent } = recorder();
    const warnings: string[] = [];
    const infos: string[] = [];
    inf = startInformer<ConfigMap>({
      kc: kubeConfig(proxy.url, api.token),
      path,
      onEvent,
      initialBackoffMs: 50,
      maxBackoffMs: 200,
      log: {
        debug() {},
        info: (_o, msg) => void infos.push(msg ?? ''),
        warn: (_o, msg) => void warnings.push(msg ?? ''),
        error() {},
      },
    });
    await inf.synced();
    await waitFor(() => proxy.streams() === 1, { what: 'the watch open' });
    const oldC = cms.get('gone', 'c');
    const resumeFrom = api.store.resourceVersion;

    proxy.mode = 'refuse';
    proxy.dropStreams();
    await waitFor(() => proxy.refused() >= 2, { what: 'reconnects refused' });
    cms.delete('gone', 'a');
    const b = cms.get('gone', 'b');
    cms.update('gone', 'b', { ...b, data: { v: '2' } });
    cms.delete('gone', 'c');
    const newC = cms.create('gone', { metadata: { name: 'c' }, data: { v: 'new' } });
    cms.create('gone', { metadata: { name: 'e' } });
    cms.create('noise', { metadata: { name: 'n' }, data: { i: '0' } });
    for (let i = 1; i <= 25; i++) {
      const n = cms.get('noise', 'n');
      cms.update('noise', 'n', { ...n, data: { i: String(i) } });
    }
    assert.ok(api.store.oldestWatchable > Number(resumeFrom), 'the resume point fell out of the event log');

    const before = events.length;
    proxy.mode = 'pass';
    await waitFor(() => inf?.get('gone', 'e'), { what: 'the relist', timeoutMs: 5_000 });
    const after = events.slice(before);
    assert.deepEqual(
      after.map((e) => [e.type, e.name, e.uid]).sort(),
      [
        ['ADDED', 'c', newC.metadata.uid],
        ['ADDED', 'e', cms.get('gone', 'e').metadata.uid],
        ['DELETED', 'a', after.find((e) => e.name === 'a')?.uid],
        ['DELETED', 'c', oldC.metadata.uid],
        ['MODIFIED', 'b', b.metadata.uid],
      ].sort(),
      'no event for d, which did not change',
    );
    assert.deepEqual(
      inf
        .list()
        .map((o) => `${o.metadata?.name}@${o.metadata?.resourceVersion}`)
        .sort(),
      cms
        .list('gone')
        .map((o) => `${o.metadata.name}@${o.metadata.resourceVersion}`)
        .sort(),
    );
    const watches = requestsFor(api, path, 'watch');
    assert.equal(
      query(watches[watches.length - 2]).get('resourceVersion'),
      resumeFrom,
      'tried to resume first',
    );
    assert.equal(requestsFor(api, path, 'list').length, 2, 'then relisted once');
    assert.ok(infos.includes('watch expired (410); relisting'));
    assert.ok(warnings.includes('watch failed; restarting after back-off'));
  });
});
