import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor } from './helpers/poll.js';
import { ApiError } from './apiserver/errors.js';
import type { KObject } from './apiserver/objects.js';
import { Registry, type ResourceType } from './apiserver/resources.js';
import { FieldSelector, LabelSelector } from './apiserver/selectors.js';
import { Store } from './apiserver/store.js';
import { builtinAdmission } from './apiserver/strategies.js';

function setup(logSize?: number) {
  const registry = new Registry();
  const store = new Store(logSize);
  store.admit.push(builtinAdmission());
  const t = (plural: string, group = '', version = 'v1'): ResourceType => {
    const found = registry.find(group, version, plural);
    assert.ok(found, plural);
    return found;
  };
  for (const r of registry.all()) store.register(r);
  store.create(t('namespaces'), '', { metadata: { name: 'default' } });
  return { store, t };
}

const cm = (name: string, extra: Partial<KObject['metadata']> = {}): KObject => ({
  metadata: { name, ...extra },
});

function code(fn: () => unknown): number | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof ApiError) return err.code;
    throw err;
  }
  return undefined;
}

describe('label and field selectors', () => {
  const labels = { app: 'relay', tier: 'edge' };
  it('matches equality, set-based and existence requirements', () => {
    const yes = [
      'app=relay',
      'app==relay',
      'app!=mx',
      'tier in (edge, core)',
      'tier notin (core)',
      'app',
      '!missing',
      'app=relay,tier',
    ];
    const no = [
      'app=mx',
      'app!=relay',
      'tier in (core)',
      'tier notin (edge)',
      'missing',
      '!app',
      'app=relay,missing',
    ];
    for (const s of yes) assert.ok(LabelSelector.parse(s).matches(labels), s);
    for (const s of no) assert.ok(!LabelSelector.parse(s).matches(labels), s);
    assert.ok(LabelSelector.parse('').matches(undefined));
    assert.ok(LabelSelector.parse('x notin (a)').matches(undefined));
  });

  it('rejects malformed selectors with 400', () => {
    assert.equal(
      code(() => LabelSelector.parse('a in b')),
      400,
    );
    assert.equal(
      code(() => FieldSelector.parse('metadata.name')),
      400,
    );
  });

  it('matches field selectors on metadata', () => {
    const obj = { metadata: { name: 'a', namespace: 'ns' } };
    assert.ok(FieldSelector.parse('metadata.name=a,metadata.namespace==ns').matches(obj));
    assert.ok(!FieldSelector.parse('metadata.name!=a').matches(obj));
    assert.equal(FieldSelector.parse('metadata.name=a').name, 'a');
  });
});

describe('store', () => {
  it('keeps resourceVersion, uid and generation, and skips no-op writes', () => {
    const { store, t } = setup();
    const a = store.create(t('configmaps'), 'default', { ...cm('a'), data: { x: '1' } });
    assert.equal(a.metadata.generation, 1);
    const same = store.update(t('configmaps'), 'default', 'a', a);
    assert.equal(same.metadata.resourceVersion, a.metadata.resourceVersion);
    const b = store.update(t('configmaps'), 'default', 'a', {
      ...a,
      metadata: { ...a.metadata, labels: { l: 'v' } },
    });
    assert.equal(b.metadata.generation, 1, 'metadata changes do not bump generation');
    assert.ok(Number(b.metadata.resourceVersion) > Number(a.metadata.resourceVersion));
    const c = store.update(t('configmaps'), 'default', 'a', { ...b, data: { x: '2' } });
    assert.equal(c.metadata.generation, 2);
    assert.equal(
      code(() => store.update(t('configmaps'), 'default', 'a', { ...b, data: { x: '3' } })),
      409,
    );
    assert.equal(
      code(() => store.create(t('configmaps'), 'missing', cm('z'))),
      404,
    );
    assert.equal(
      code(() => store.create(t('configmaps'), 'default', cm('Bad_Name'))),
      422,
    );
  });

  it('ignores status on the main endpoint and spec on /status', () => {
    const { store, t } = setup();
    const sts = t('statefulsets', 'apps');
    const s = store.create(sts, 'default', { ...cm('s'), spec: { replicas: 1 }, status: { replicas: 9 } });
    assert.equal(s.status, undefined);
    const st = store.update(
      sts,
      'default',
      's',
      { ...s, spec: { replicas: 5 }, status: { replicas: 1 } },
      { subresource: 'status' },
    );
    assert.deepEqual([st.spec, st.status], [{ replicas: 1 }, { replicas: 1 }]);
    const main = store.update(sts, 'default', 's', { ...st, spec: { replicas: 2 }, status: { replicas: 7 } });
    assert.deepEqual(
      [main.spec, main.status, main.metadata.generation],
      [{ replicas: 2 }, { replicas: 1 }, 2],
    );
  });

  it('refuses changes to immutable fields', () => {
    const { store, t } = setup();
    const c = store.create(t('configmaps'), 'default', {
      ...cm('frozen'),
      immutable: true,
      data: { a: '1' },
    });
    assert.equal(
      code(() => store.update(t('configmaps'), 'default', 'frozen', { ...c, data: { a: '2' } })),
      422,
    );
    const sts = t('statefulsets', 'apps');
    const s = store.create(sts, 'default', {
      ...cm('s'),
      spec: { replicas: 1, serviceName: 'a', selector: { matchLabels: { a: 'b' } } },
    });
    assert.equal(
      code(() =>
        store.update(sts, 'default', 's', { ...s, spec: { ...(s.spec as object), serviceName: 'b' } }),
      ),
      422,
    );
    const ok = store.update(sts, 'default', 's', { ...s, spec: { ...(s.spec as object), replicas: 3 } });
    assert.equal(ok.metadata.generation, 2);
  });

  it('holds deletion for finalizers and forbids new ones meanwhile', () => {
    const { store, t } = setup();
    const a = store.create(t('configmaps'), 'default', cm('a', { finalizers: ['x/y'] }));
    const marked = store.delete(t('configmaps'), 'default', 'a');
    assert.ok(marked.metadata.deletionTimestamp);
    assert.equal(marked.metadata.generation, 2);
    assert.equal(
      code(() =>
        store.update(t('configmaps'), 'default', 'a', {
          ...marked,
          metadata: { ...marked.metadata, finalizers: ['x/y', 'z'] },
        }),
      ),
      422,
    );
    store.update(t('configmaps'), 'default', 'a', {
      ...marked,
      metadata: { ...marked.metadata, finalizers: [] },
    });
    assert.equal(
      code(() => store.get(t('configmaps'), 'default', 'a')),
      404,
    );
    assert.ok(a.metadata.uid);
  });

  it('orphans dependents, or deletes them in the foreground before the owner', async () => {
    const { store, t } = setup();
    const ref = (o: KObject) => [
      { apiVersion: 'v1', kind: 'ConfigMap', name: o.metadata.name ?? '', uid: o.metadata.uid ?? '' },
    ];
    const o1 = store.create(t('configmaps'), 'default', cm('o1'));
    store.create(t('secrets'), 'default', cm('d1', { ownerReferences: ref(o1) }));
    store.delete(t('configmaps'), 'default', 'o1', { propagationPolicy: 'Orphan' });
    const d1 = store.get(t('secrets'), 'default', 'd1');
    assert.equal(d1.metadata.ownerReferences, undefined);

    const o2 = store.create(t('configmaps'), 'default', cm('o2'));
    store.create(t('secrets'), 'default', cm('d2', { ownerReferences: ref(o2), finalizers: ['hold'] }));
    const marked = store.delete(t('configmaps'), 'default', 'o2', { propagationPolicy: 'Foreground' });
    assert.deepEqual(marked.metadata.finalizers, ['foregroundDeletion']);
    await waitFor(() => store.get(t('secrets'), 'default', 'd2').metadata.deletionTimestamp, {
      what: 'd2 marked',
    });
    assert.ok(store.get(t('configmaps'), 'default', 'o2'), 'owner waits for its dependent');
    const d2 = store.get(t('secrets'), 'default', 'd2');
    store.update(t('secrets'), 'default', 'd2', { ...d2, metadata: { ...d2.metadata, finalizers: [] } });
    await waitFor(() => code(() => store.get(t('configmaps'), 'default', 'o2')) === 404, { what: 'o2 gone' });
  });

  it('terminates a namespace: content first, then the namespace', async () => {
    const { store, t } = setup();
    store.create(t('namespaces'), '', cm('gone'));
    store.create(t('configmaps'), 'gone', cm('a'));
    const ns = store.delete(t('namespaces'), '', 'gone');
    assert.equal((ns.status as { phase: string }).phase, 'Terminating');
    assert.equal(
      code(() => store.create(t('configmaps'), 'gone', cm('b'))),
      403,
    );
    await waitFor(() => code(() => store.get(t('namespaces'), '', 'gone')) === 404, {
      what: 'namespace removed',
    });
    assert.equal(
      code(() => store.get(t('configmaps'), 'gone', 'a')),
      404,
    );
  });

  it('replays events and expires a resourceVersion older than the log', () => {
    const { store, t } = setup(5);
    const start = Number(store.resourceVersion);
    for (let i = 0; i < 3; i++) store.create(t('configmaps'), 'default', cm(`c${i}`));
    assert.deepEqual(
      store.eventsSince(start).map((e) => e.type),
      ['ADDED', 'ADDED', 'ADDED'],
    );
    for (let i = 3; i < 10; i++) store.create(t('configmaps'), 'default', cm(`c${i}`));
    assert.equal(
      code(() => store.eventsSince(start)),
      410,
    );
    assert.equal(store.eventsSince(Number(store.resourceVersion)).length, 0);
  });
});
