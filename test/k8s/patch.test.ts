import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  PatchError,
  applyConflictStatus,
  fromFieldsV1,
  jsonPatch,
  managedFieldsOf,
  mergePatch,
  mergeRulesFor,
  serverSideApply,
  strategicMergePatch,
  supportsStrategicMerge,
  toFieldsV1,
  updateManagedFields,
  type KindInfo,
} from './apiserver/patch.js';

type Obj = Record<string, unknown>;

const DEPLOYMENT: KindInfo = { group: 'apps', version: 'v1', kind: 'Deployment' };
const CONFIGMAP: KindInfo = { group: '', version: 'v1', kind: 'ConfigMap' };
const SERVICE: KindInfo = { group: '', version: 'v1', kind: 'Service' };
const POD: KindInfo = { group: '', version: 'v1', kind: 'Pod' };
const RELAY: KindInfo = { group: 'cartero.example.com', version: 'v1alpha1', kind: 'SmtpRelay' };

const T1 = '2026-01-01T00:00:00Z';
const T2 = '2026-01-02T00:00:00Z';
const T3 = '2026-01-03T00:00:00Z';

/** A Deployment as kubectl or helm would send it. */
function deployment(overrides: { image?: string; replicas?: number; env?: Obj[]; labels?: Obj } = {}): Obj {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'relay', namespace: 'mail', labels: overrides.labels ?? { app: 'relay' } },
    spec: {
      replicas: overrides.replicas ?? 2,
      selector: { matchLabels: { app: 'relay' } },
      template: {
        metadata: { labels: { app: 'relay' } },
        spec: {
          containers: [
            {
              name: 'relay',
              image: overrides.image ?? 'cartero/relay:1.0',
              args: ['--config', '/etc/relay/config.yaml'],
              env: overrides.env ?? [
                { name: 'LOG_LEVEL', value: 'info' },
                { name: 'POOL', value: 'default' },
              ],
              ports: [
                { name: 'smtp', containerPort: 2525 },
                { name: 'metrics', containerPort: 9090 },
              ],
              volumeMounts: [{ name: 'config', mountPath: '/etc/relay' }],
            },
          ],
          volumes: [{ name: 'config', configMap: { name: 'relay-config' } }],
        },
      },
    },
  };
}

function containers(obj: Obj): Obj[] {
  const spec = (obj.spec as Obj).template as Obj;
  return (spec.spec as Obj).containers as Obj[];
}

function metadata(obj: Obj): Obj {
  return obj.metadata as Obj;
}

function managers(obj: Obj): string[] {
  return managedFieldsOf(obj).map((entry) => `${entry.manager}/${entry.operation}`);
}

function throwsPatchError(fn: () => unknown, code: number, reason: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof PatchError, `expected PatchError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.equal(err.reason, reason);
    return true;
  });
}

describe('mergePatch (RFC 7386)', () => {
  it('passes the RFC 7386 appendix examples', () => {
    const cases: [unknown, unknown, unknown][] = [
      [{ a: 'b' }, { a: 'c' }, { a: 'c' }],
      [{ a: 'b' }, { b: 'c' }, { a: 'b', b: 'c' }],
      [{ a: 'b' }, { a: null }, {}],
      [{ a: 'b', b: 'c' }, { a: null }, { b: 'c' }],
      [{ a: ['b'] }, { a: 'c' }, { a: 'c' }],
      [{ a: 'c' }, { a: ['b'] }, { a: ['b'] }],
      [{ a: { b: 'c' } }, { a: { b: 'd', c: null } }, { a: { b: 'd' } }],
      [{ a: [{ b: 'c' }] }, { a: [1] }, { a: [1] }],
      [
        ['a', 'b'],
        ['c', 'd'],
        ['c', 'd'],
      ],
      [{ a: 'b' }, ['c'], ['c']],
      [{ a: 'foo' }, null, null],
      [{ a: 'foo' }, 'bar', 'bar'],
      [{ e: null }, { a: 1 }, { e: null, a: 1 }],
      [[1, 2], { a: 'b', c: null }, { a: 'b' }],
      [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }],
    ];
    for (const [target, patch, expected] of cases) {
      assert.deepEqual(mergePatch(target, patch), expected, JSON.stringify({ target, patch }));
    }
  });

  it('does not mutate its inputs', () => {
    const target = { data: { a: '1' } };
    const patch = { data: { b: '2' } };
    mergePatch(target, patch);
    assert.deepEqual(target, { data: { a: '1' } });
    assert.deepEqual(patch, { data: { b: '2' } });
  });
});

describe('jsonPatch (RFC 6902)', () => {
  const doc = { metadata: { labels: { 'app.kubernetes.io/name': 'relay' } }, list: ['a', 'b'] };

  it('adds, removes and replaces, with pointer escaping and "-" append', () => {
    const result = jsonPatch(doc, [
      { op: 'add', path: '/metadata/labels/tier~1role', value: 'edge' },
      { op: 'add', path: '/metadata/annotations', value: { 'a~b': '1' } },
      { op: 'replace', path: '/metadata/annotations/a~0b', value: '2' },
      { op: 'remove', path: '/metadata/labels/app.kubernetes.io~1name' },
      { op: 'add', path: '/list/-', value: 'c' },
      { op: 'add', path: '/list/0', value: 'z' },
      { op: 'remove', path: '/list/1' },
    ]);
    assert.deepEqual(result, {
      metadata: { labels: { 'tier/role': 'edge' }, annotations: { 'a~b': '2' } },
      list: ['z', 'b', 'c'],
    });
    assert.deepEqual(doc.list, ['a', 'b'], 'input untouched');
  });

  it('moves, copies and tests', () => {
    const result = jsonPatch(doc, [
      { op: 'test', path: '/list/1', value: 'b' },
      { op: 'copy', from: '/list', path: '/copy' },
      { op: 'move', from: '/list/0', path: '/first' },
      { op: 'test', path: '/copy', value: ['a', 'b'] },
    ]);
    assert.deepEqual(result, { ...doc, list: ['b'], copy: ['a', 'b'], first: 'a' });
  });

  it('replaces the whole document with an empty path', () => {
    assert.deepEqual(jsonPatch(doc, [{ op: 'replace', path: '', value: { x: 1 } }]), { x: 1 });
  });

  it('fails a test op with 422 and leaves the input alone', () => {
    const input = { spec: { replicas: 1 } };
    throwsPatchError(
      () =>
        jsonPatch(input, [
          { op: 'replace', path: '/spec/replicas', value: 5 },
          { op: 'test', path: '/spec/replicas', value: 3 },
        ]),
      422,
      'Invalid',
    );
    assert.deepEqual(input, { spec: { replicas: 1 } });
  });

  it('rejects a non-list body (400) and bad operations or paths (422), as Kubernetes does', () => {
    throwsPatchError(() => jsonPatch(doc, [{ op: 'remove', path: '/nope' }]), 422, 'Invalid');
    throwsPatchError(() => jsonPatch(doc, [{ op: 'replace', path: '/nope', value: 1 }]), 422, 'Invalid');
    throwsPatchError(() => jsonPatch(doc, [{ op: 'add', path: '/a/b', value: 1 }]), 422, 'Invalid');
    throwsPatchError(() => jsonPatch(doc, [{ op: 'add', path: '/list/5', value: 1 }]), 422, 'Invalid');
    throwsPatchError(() => jsonPatch(doc, [{ op: 'add', path: '/list/01', value: 1 }]), 422, 'Invalid');
    throwsPatchError(
      () => jsonPatch(doc, [{ op: 'move', from: '/metadata', path: '/metadata/x' }]),
      422,
      'Invalid',
    );
    throwsPatchError(() => jsonPatch(doc, { op: 'add' }), 400, 'BadRequest');
    throwsPatchError(() => jsonPatch(doc, [{ op: 'frobnicate', path: '/x' }]), 422, 'Invalid');
    throwsPatchError(() => jsonPatch(doc, [{ op: 'add', path: '/x' }]), 422, 'Invalid');
    throwsPatchError(() => jsonPatch(doc, [{ op: 'add', path: 'x', value: 1 }]), 422, 'Invalid');
  });
});

describe('strategicMergePatch', () => {
  it('merges containers, env and ports by key and replaces args', () => {
    const patched = strategicMergePatch(
      deployment(),
      {
        spec: {
          template: {
            spec: {
              containers: [
                {
                  name: 'relay',
                  image: 'cartero/relay:1.1',
                  args: ['--verbose'],
                  env: [
                    { name: 'POOL', value: 'bulk' },
                    { name: 'NEW', value: 'x' },
                  ],
                  ports: [{ containerPort: 9090, name: 'prom' }],
                },
                { name: 'sidecar', image: 'busybox' },
              ],
            },
          },
        },
      },
      DEPLOYMENT,
    );
    const [relay, sidecar] = containers(patched);
    assert.equal(relay.image, 'cartero/relay:1.1');
    assert.deepEqual(relay.args, ['--verbose']);
    assert.deepEqual(relay.env, [
      { name: 'LOG_LEVEL', value: 'info' },
      { name: 'POOL', value: 'bulk' },
      { name: 'NEW', value: 'x' },
    ]);
    assert.deepEqual(relay.ports, [
      { name: 'smtp', containerPort: 2525 },
      { name: 'prom', containerPort: 9090 },
    ]);
    assert.deepEqual(relay.volumeMounts, [{ name: 'config', mountPath: '/etc/relay' }]);
    assert.deepEqual(sidecar, { name: 'sidecar', image: 'busybox' });
  });

  it('deletes keys with null and list items with $patch: delete', () => {
    const patched = strategicMergePatch(
      deployment(),
      {
        metadata: { labels: { app: null, tier: 'edge' } },
        spec: {
          template: {
            spec: {
              containers: [
                { name: 'relay', env: [{ name: 'LOG_LEVEL', $patch: 'delete' }], volumeMounts: null },
              ],
              volumes: [{ name: 'config', $patch: 'delete' }],
            },
          },
        },
      },
      DEPLOYMENT,
    );
    assert.deepEqual(metadata(patched).labels, { tier: 'edge' });
    const [relay] = containers(patched);
    assert.deepEqual(relay.env, [{ name: 'POOL', value: 'default' }]);
    assert.equal('volumeMounts' in relay, false);
    assert.deepEqual(((patched.spec as Obj).template as Obj).spec, { containers: [relay], volumes: [] });
  });

  it('replaces a list or a map with $patch: replace', () => {
    const patched = strategicMergePatch(
      deployment(),
      {
        spec: {
          selector: { $patch: 'replace', matchLabels: { app: 'other' } },
          template: {
            spec: {
              containers: [{ name: 'relay', env: [{ $patch: 'replace' }, { name: 'ONLY', value: '1' }] }],
            },
          },
        },
      },
      DEPLOYMENT,
    );
    assert.deepEqual((patched.spec as Obj).selector, { matchLabels: { app: 'other' } });
    assert.deepEqual(containers(patched)[0].env, [{ name: 'ONLY', value: '1' }]);
    const oneItem = strategicMergePatch(
      deployment(),
      { spec: { template: { spec: { containers: [{ name: 'relay', $patch: 'replace', image: 'x' }] } } } },
      DEPLOYMENT,
    );
    assert.deepEqual(containers(oneItem), [{ name: 'relay', image: 'x' }], 'replaces that item only');
    const finalizers = strategicMergePatch(
      { metadata: { finalizers: ['a', 'b'] } },
      { metadata: { finalizers: [{ $patch: 'replace' }, 'c'] } },
      POD,
    );
    assert.deepEqual(metadata(finalizers).finalizers, ['c']);
  });

  it('honours $setElementOrder, $deleteFromPrimitiveList and $retainKeys', () => {
    const target = {
      metadata: { name: 'p', finalizers: ['a', 'b', 'c'] },
      spec: {
        containers: [
          { name: 'one', image: 'x' },
          { name: 'two', image: 'y' },
        ],
        strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1 } },
      },
    };
    const patched = strategicMergePatch(
      target,
      {
        metadata: { ['$deleteFromPrimitiveList/finalizers']: ['b'], finalizers: ['d'] },
        spec: {
          ['$setElementOrder/containers']: [{ name: 'three' }, { name: 'two' }, { name: 'one' }],
          containers: [{ name: 'three', image: 'z' }],
          strategy: { $retainKeys: ['type'], type: 'Recreate' },
        },
      },
      POD,
    );
    assert.deepEqual(metadata(patched).finalizers, ['a', 'c', 'd']);
    const spec = patched.spec as Obj;
    assert.deepEqual(
      (spec.containers as Obj[]).map((c) => c.name),
      ['three', 'two', 'one'],
    );
    assert.deepEqual(spec.strategy, { type: 'Recreate' });
  });

  it('merges Service ports by port, conditions by type and ownerReferences by uid', () => {
    const service = {
      metadata: { name: 's', ownerReferences: [{ uid: 'u1', name: 'owner', kind: 'SmtpRelay' }] },
      spec: { ports: [{ port: 25, targetPort: 2525 }], selector: { app: 'relay' } },
      status: { conditions: [{ type: 'Ready', status: 'False' }] },
    };
    const patched = strategicMergePatch(
      service,
      {
        metadata: { ownerReferences: [{ uid: 'u2', name: 'other', kind: 'SmtpRelay' }] },
        spec: { ports: [{ port: 25, targetPort: 2526 }, { port: 587 }] },
        status: { conditions: [{ type: 'Ready', status: 'True' }] },
      },
      SERVICE,
    );
    assert.deepEqual((patched.metadata as Obj).ownerReferences, [
      { uid: 'u1', name: 'owner', kind: 'SmtpRelay' },
      { uid: 'u2', name: 'other', kind: 'SmtpRelay' },
    ]);
    assert.deepEqual((patched.spec as Obj).ports, [{ port: 25, targetPort: 2526 }, { port: 587 }]);
    assert.deepEqual((patched.status as Obj).conditions, [{ type: 'Ready', status: 'True' }]);
    assert.deepEqual(service.spec.ports, [{ port: 25, targetPort: 2525 }], 'input untouched');
  });

  it('replaces tolerations and merge-patches ConfigMap data', () => {
    const pod = { spec: { tolerations: [{ key: 'a' }], containers: [] } };
    const patched = strategicMergePatch(pod, { spec: { tolerations: [{ key: 'b' }] } }, POD);
    assert.deepEqual((patched.spec as Obj).tolerations, [{ key: 'b' }]);
    const cm = strategicMergePatch({ data: { a: '1', b: '2' } }, { data: { b: null, c: '3' } }, CONFIGMAP);
    assert.deepEqual(cm, { data: { a: '1', c: '3' } });
  });

  it('applies a three-way patch as kubectl apply computes it', () => {
    const live = deployment();
    (live.spec as Obj).strategy = { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1 } };
    const patch = {
      metadata: { annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{}' } },
      spec: {
        strategy: { $retainKeys: ['type'], type: 'Recreate', rollingUpdate: null },
        template: {
          spec: {
            '$setElementOrder/containers': [{ name: 'relay' }],
            containers: [
              {
                '$setElementOrder/env': [{ name: 'POOL' }, { name: 'LOG_LEVEL' }],
                env: [{ name: 'POOL', value: 'bulk' }],
                '$setElementOrder/ports': [{ containerPort: 2525 }],
                ports: [{ $patch: 'delete', containerPort: 9090 }],
                name: 'relay',
              },
            ],
          },
        },
      },
    };
    const patched = strategicMergePatch(live, patch, DEPLOYMENT);
    assert.deepEqual((patched.spec as Obj).strategy, { type: 'Recreate' });
    const [relay] = containers(patched);
    assert.deepEqual(relay.env, [
      { name: 'POOL', value: 'bulk' },
      { name: 'LOG_LEVEL', value: 'info' },
    ]);
    assert.deepEqual(relay.ports, [{ name: 'smtp', containerPort: 2525 }]);
    assert.equal(
      Object.keys(relay).some((key) => key.startsWith('$')),
      false,
      'no directive leaks',
    );
    assert.deepEqual(
      live,
      (() => {
        const fresh = deployment();
        (fresh.spec as Obj).strategy = { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1 } };
        return fresh;
      })(),
    );
  });

  it('covers every PodSpec holder and exposes the table', () => {
    const cron: KindInfo = { group: 'batch', version: 'v1', kind: 'CronJob' };
    const rules = mergeRulesFor(cron).lists;
    assert.equal(rules['spec.jobTemplate.spec.template.spec.containers[].env']?.mergeKey, 'name');
    assert.equal(rules['metadata.finalizers']?.set, true);
    assert.deepEqual(mergeRulesFor(DEPLOYMENT).atomicMaps, ['spec.selector']);
    assert.deepEqual(Object.keys(mergeRulesFor(RELAY).lists).sort(), [
      'metadata.finalizers',
      'metadata.ownerReferences',
    ]);
  });

  it('falls back to JSON merge patch for custom resources', () => {
    assert.equal(supportsStrategicMerge(RELAY), false);
    assert.equal(supportsStrategicMerge(DEPLOYMENT), true);
    const cr = { spec: { pools: [{ name: 'a', size: 1 }] }, status: { conditions: [{ type: 'Ready' }] } };
    const patched = strategicMergePatch(cr, { spec: { pools: [{ name: 'b' }] } }, RELAY);
    assert.deepEqual(patched, {
      spec: { pools: [{ name: 'b' }] },
      status: { conditions: [{ type: 'Ready' }] },
    });
  });

  it('rejects list items without their merge key', () => {
    throwsPatchError(
      () =>
        strategicMergePatch(
          deployment(),
          { spec: { template: { spec: { containers: [{ image: 'x' }] } } } },
          DEPLOYMENT,
        ),
      400,
      'BadRequest',
    );
  });
});

describe('FieldsV1', () => {
  it('round-trips a set with members that have children', () => {
    const fields = {
      'f:metadata': { 'f:labels': { 'f:app': {} } },
      'f:spec': { 'f:containers': { 'k:{"name":"relay"}': { '.': {}, 'f:image': {}, 'f:name': {} } } },
    };
    assert.deepEqual(toFieldsV1(fromFieldsV1(fields)), fields);
  });
});

describe('serverSideApply', () => {
  it('creates an object owned by the applier, in FieldsV1', () => {
    const { object, conflicts } = serverSideApply(undefined, deployment(), {
      manager: 'kubectl',
      force: false,
      kind: DEPLOYMENT,
      now: T1,
    });
    assert.deepEqual(conflicts, []);
    const [entry] = managedFieldsOf(object);
    assert.deepEqual(
      { ...entry, fieldsV1: undefined },
      {
        manager: 'kubectl',
        operation: 'Apply',
        apiVersion: 'apps/v1',
        time: T1,
        fieldsType: 'FieldsV1',
        fieldsV1: undefined,
      },
    );
    const spec = entry.fieldsV1['f:spec'];
    assert.deepEqual(entry.fieldsV1['f:metadata'], { 'f:labels': { 'f:app': {} } });
    assert.deepEqual(spec['f:selector'], {}, 'LabelSelector is atomic');
    assert.deepEqual(spec['f:replicas'], {});
    const relay = spec['f:template']['f:spec']['f:containers']['k:{"name":"relay"}'];
    assert.deepEqual(Object.keys(relay), [
      '.',
      'f:args',
      'f:env',
      'f:image',
      'f:name',
      'f:ports',
      'f:volumeMounts',
    ]);
    assert.deepEqual(relay['f:args'], {}, 'args is atomic');
    assert.deepEqual(relay['f:env']['k:{"name":"POOL"}'], { '.': {}, 'f:name': {}, 'f:value': {} });
    assert.deepEqual(Object.keys(relay['f:ports']), [
      'k:{"containerPort":2525,"protocol":"TCP"}',
      'k:{"containerPort":9090,"protocol":"TCP"}',
    ]);
    assert.deepEqual(relay['f:volumeMounts']['k:{"mountPath":"/etc/relay"}'], {
      '.': {},
      'f:mountPath': {},
      'f:name': {},
    });
    const { managedFields: _, ...meta } = metadata(object);
    assert.deepEqual({ ...object, metadata: meta }, deployment());
  });

  it('is idempotent: applying the same config again changes nothing', () => {
    const opts = { manager: 'kubectl', force: false, kind: DEPLOYMENT, now: T1 };
    const first = serverSideApply(undefined, deployment(), opts).object;
    const second = serverSideApply(first, deployment(), { ...opts, now: T2 });
    assert.deepEqual(second.conflicts, []);
    assert.deepEqual(second.object, first);
    const third = serverSideApply(second.object, deployment({ replicas: 3 }), { ...opts, now: T3 });
    assert.equal((third.object.spec as Obj).replicas, 3);
    assert.equal(managedFieldsOf(third.object)[0].time, T3);
  });

  it('keeps server-set metadata and fields nobody applied', () => {
    const live = serverSideApply(undefined, deployment(), {
      manager: 'helm',
      force: false,
      kind: DEPLOYMENT,
      now: T1,
    }).object;
    Object.assign(metadata(live), { uid: 'u-1', resourceVersion: '7', creationTimestamp: T1 });
    live.status = { replicas: 2 };
    const { object } = serverSideApply(live, deployment({ image: 'cartero/relay:2.0' }), {
      manager: 'helm',
      force: false,
      kind: DEPLOYMENT,
      now: T2,
    });
    assert.equal(metadata(object).uid, 'u-1');
    assert.equal(metadata(object).resourceVersion, '7');
    assert.deepEqual(object.status, { replicas: 2 });
    assert.equal(containers(object)[0].image, 'cartero/relay:2.0');
  });

  it('removes fields the manager stopped applying', () => {
    const opts = { manager: 'kubectl', force: false, kind: DEPLOYMENT, now: T1 };
    const first = serverSideApply(
      undefined,
      deployment({ labels: { app: 'relay', tier: 'edge' } }),
      opts,
    ).object;
    const smaller = deployment({ env: [{ name: 'POOL', value: 'default' }] });
    const { object } = serverSideApply(first, smaller, { ...opts, now: T2 });
    assert.deepEqual(metadata(object).labels, { app: 'relay' });
    assert.deepEqual(containers(object)[0].env, [{ name: 'POOL', value: 'default' }]);
    const fields = managedFieldsOf(object)[0].fieldsV1;
    assert.deepEqual(fields['f:metadata'], { 'f:labels': { 'f:app': {} } });
  });

  it('removes a whole map once its last applied field goes', () => {
    const opts = { manager: 'kubectl', force: false, kind: CONFIGMAP, now: T1 };
    const cm = (data: Obj | undefined): Obj => ({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'c', ...(data ? { annotations: data } : {}) },
      data: { a: '1' },
    });
    const first = serverSideApply(undefined, cm({ note: 'x' }), opts).object;
    const { object } = serverSideApply(first, cm(undefined), opts);
    assert.equal('annotations' in metadata(object), false);
    const noData = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'c' } };
    const emptied = serverSideApply(object, noData, opts).object;
    assert.equal('data' in emptied, false);
    assert.equal('managedFields' in metadata(emptied), false, 'an apply that owns nothing leaves no entry');
    const emptyData = serverSideApply(object, { ...noData, data: {} }, opts).object;
    assert.deepEqual(emptyData.data, {}, 'an applied empty map stays');
  });

  it('keeps fields another manager still owns', () => {
    const cm = (data: Obj): Obj => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'c' }, data });
    const a = serverSideApply(undefined, cm({ shared: '1', mine: 'a' }), {
      manager: 'a',
      force: false,
      kind: CONFIGMAP,
      now: T1,
    }).object;
    const b = serverSideApply(a, cm({ shared: '1' }), {
      manager: 'b',
      force: false,
      kind: CONFIGMAP,
      now: T2,
    });
    assert.deepEqual(b.conflicts, [], 'same value: shared ownership, no conflict');
    const after = serverSideApply(b.object, cm({}), {
      manager: 'a',
      force: false,
      kind: CONFIGMAP,
      now: T3,
    }).object;
    assert.deepEqual(after.data, { shared: '1' });
    assert.deepEqual(managers(after), ['a/Apply', 'b/Apply']);
  });

  it('reports conflicts with an Update manager and moves ownership on force', () => {
    const opts = { manager: 'kubectl', force: false, kind: DEPLOYMENT, now: T1 };
    const applied = serverSideApply(undefined, deployment(), opts).object;
    const scaled = structuredClone(applied);
    (scaled.spec as Obj).replicas = 5;
    const updated = updateManagedFields(applied, scaled, 'kube-controller-manager', 'Update', DEPLOYMENT, T2);
    assert.deepEqual(managers(updated), ['kubectl/Apply', 'kube-controller-manager/Update']);
    const hpaFields = managedFieldsOf(updated)[1].fieldsV1;
    assert.deepEqual(hpaFields, { 'f:spec': { 'f:replicas': {} } });
    assert.equal(
      'f:replicas' in managedFieldsOf(updated)[0].fieldsV1['f:spec'],
      false,
      'kubectl lost replicas',
    );

    const conflicted = serverSideApply(updated, deployment({ replicas: 2, image: 'cartero/relay:1.1' }), {
      ...opts,
      now: T3,
    });
    assert.deepEqual(conflicted.conflicts, [
      {
        manager: 'kube-controller-manager',
        field: '.spec.replicas',
        by: `"kube-controller-manager" using apps/v1 at ${T2}`,
      },
    ]);
    const status = applyConflictStatus(conflicted.conflicts);
    assert.equal(status.code, 409);
    assert.equal(status.reason, 'Conflict');
    assert.equal(
      status.message,
      `Apply failed with 1 conflict: conflict with "kube-controller-manager" using apps/v1 at ${T2}: .spec.replicas`,
    );
    assert.deepEqual((status.details as Obj).causes, [
      {
        reason: 'FieldManagerConflict',
        message: `conflict with "kube-controller-manager" using apps/v1 at ${T2}`,
        field: '.spec.replicas',
      },
    ]);
    assert.deepEqual(conflicted.object, updated, 'nothing applied on conflict');

    const sameValue = serverSideApply(updated, deployment({ replicas: 5 }), { ...opts, now: T3 });
    assert.deepEqual(sameValue.conflicts, [], 'applying the live value does not conflict');

    const forced = serverSideApply(updated, deployment({ replicas: 2, image: 'cartero/relay:1.1' }), {
      ...opts,
      force: true,
      now: T3,
    });
    assert.deepEqual(forced.conflicts, []);
    assert.equal((forced.object.spec as Obj).replicas, 2);
    assert.equal(containers(forced.object)[0].image, 'cartero/relay:1.1');
    assert.deepEqual(managers(forced.object), ['kubectl/Apply'], 'the controller owns nothing any more');
  });

  it('reports conflicts between two appliers on keyed list items', () => {
    const first = serverSideApply(undefined, deployment(), {
      manager: 'helm',
      force: false,
      kind: DEPLOYMENT,
      now: T1,
    });
    const { conflicts } = serverSideApply(
      first.object,
      deployment({ env: [{ name: 'POOL', value: 'bulk' }] }),
      { manager: 'kubectl', force: false, kind: DEPLOYMENT, now: T2 },
    );
    assert.deepEqual(conflicts, [
      {
        manager: 'helm',
        field: '.spec.template.spec.containers[name="relay"].env[name="POOL"].value',
        by: '"helm"',
      },
    ]);
  });

  it('lists every conflict, grouped by manager, and mutates nothing', () => {
    const first = serverSideApply(undefined, deployment(), {
      manager: 'helm',
      force: false,
      kind: DEPLOYMENT,
      now: T1,
    });
    const snapshot = structuredClone(first.object);
    const changed = deployment({ replicas: 4, image: 'cartero/relay:9' });
    const { conflicts } = serverSideApply(first.object, changed, {
      manager: 'kubectl',
      force: false,
      kind: DEPLOYMENT,
      now: T2,
    });
    assert.deepEqual(first.object, snapshot);
    assert.deepEqual(changed, deployment({ replicas: 4, image: 'cartero/relay:9' }));
    assert.deepEqual(conflicts.map((c) => c.field).sort(), [
      '.spec.replicas',
      '.spec.template.spec.containers[name="relay"].image',
    ]);
    const message = applyConflictStatus(conflicts).message as string;
    assert.match(message, /^Apply failed with 2 conflicts: conflicts with "helm":\n- \.spec/);
  });

  it('lets two appliers own different items of a keyed list', () => {
    const sidecar = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'relay', namespace: 'mail' },
      spec: { template: { spec: { containers: [{ name: 'sidecar', image: 'envoy' }] } } },
    };
    const base = serverSideApply(undefined, deployment(), {
      manager: 'helm',
      force: false,
      kind: DEPLOYMENT,
      now: T1,
    });
    const both = serverSideApply(base.object, sidecar, {
      manager: 'mesh',
      force: false,
      kind: DEPLOYMENT,
      now: T2,
    });
    assert.deepEqual(both.conflicts, []);
    assert.deepEqual(
      containers(both.object).map((c) => c.name),
      ['relay', 'sidecar'],
    );
    const again = serverSideApply(both.object, deployment({ image: 'cartero/relay:1.2' }), {
      manager: 'helm',
      force: false,
      kind: DEPLOYMENT,
      now: T3,
    });
    assert.deepEqual(
      containers(again.object).map((c) => [c.name, c.image]),
      [
        ['relay', 'cartero/relay:1.2'],
        ['sidecar', 'envoy'],
      ],
    );
    const withoutSidecar = { ...sidecar, spec: { template: { spec: { containers: [] } } } };
    const removed = serverSideApply(again.object, withoutSidecar, {
      manager: 'mesh',
      force: false,
      kind: DEPLOYMENT,
      now: T3,
    });
    assert.deepEqual(
      containers(removed.object).map((c) => c.name),
      ['relay'],
    );
  });

  it('merges finalizers as a set', () => {
    const cm = (finalizers: string[]): Obj => ({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'c', finalizers },
    });
    const a = serverSideApply(undefined, cm(['a.example/one']), {
      manager: 'a',
      force: false,
      kind: CONFIGMAP,
      now: T1,
    });
    assert.deepEqual(managedFieldsOf(a.object)[0].fieldsV1, {
      'f:metadata': { 'f:finalizers': { 'v:"a.example/one"': {} } },
    });
    const b = serverSideApply(a.object, cm(['b.example/two']), {
      manager: 'b',
      force: false,
      kind: CONFIGMAP,
      now: T2,
    });
    assert.deepEqual(metadata(b.object).finalizers, ['a.example/one', 'b.example/two']);
    const a2 = serverSideApply(b.object, cm([]), { manager: 'a', force: false, kind: CONFIGMAP, now: T3 });
    assert.deepEqual(metadata(a2.object).finalizers, ['b.example/two']);
  });

  it('keys Service ports by port and protocol and keeps the selector atomic', () => {
    const svc = (ports: Obj[], selector: Obj): Obj => ({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'relay', namespace: 'mail' },
      spec: { selector, ports },
    });
    const opts = { manager: 'helm', force: false, kind: SERVICE, now: T1 };
    const first = serverSideApply(
      undefined,
      svc([{ name: 'smtp', port: 25, targetPort: 2525 }], { app: 'relay' }),
      opts,
    );
    const fields = managedFieldsOf(first.object)[0].fieldsV1['f:spec'];
    assert.deepEqual(fields['f:selector'], {});
    assert.deepEqual(Object.keys(fields['f:ports']), ['k:{"port":25,"protocol":"TCP"}']);
    const next = serverSideApply(
      first.object,
      svc([{ name: 'submission', port: 587, targetPort: 2587, protocol: 'TCP' }], {
        app: 'relay',
        tier: 'edge',
      }),
      opts,
    ).object;
    assert.deepEqual((next.spec as Obj).ports, [
      { name: 'submission', port: 587, targetPort: 2587, protocol: 'TCP' },
    ]);
    assert.deepEqual((next.spec as Obj).selector, { app: 'relay', tier: 'edge' });
  });

  it('applies custom resources with atomic lists', () => {
    const relay = (pools: Obj[], replicas = 1): Obj => ({
      apiVersion: 'cartero.example.com/v1alpha1',
      kind: 'SmtpRelay',
      metadata: { name: 'edge', namespace: 'mail' },
      spec: { replicas, pools },
    });
    const created = serverSideApply(undefined, relay([{ name: 'a' }, { name: 'b' }]), {
      manager: 'kubectl',
      force: false,
      kind: RELAY,
      now: T1,
    }).object;
    assert.deepEqual(managedFieldsOf(created)[0].fieldsV1, { 'f:spec': { 'f:pools': {}, 'f:replicas': {} } });
    assert.equal(managedFieldsOf(created)[0].apiVersion, 'cartero.example.com/v1alpha1');
    const next = serverSideApply(created, relay([{ name: 'c' }], 2), {
      manager: 'kubectl',
      force: false,
      kind: RELAY,
      now: T2,
    }).object;
    assert.deepEqual(next.spec, { replicas: 2, pools: [{ name: 'c' }] });
    const withStatus = { ...next, status: { ready: true } };
    const operator = updateManagedFields(next, withStatus, 'cartero-operator', 'Update', RELAY, T3);
    assert.deepEqual(managedFieldsOf(operator)[1].fieldsV1, { 'f:status': { 'f:ready': {} } });
    assert.deepEqual(
      serverSideApply(operator, relay([{ name: 'c' }], 2), {
        manager: 'kubectl',
        force: false,
        kind: RELAY,
        now: T3,
      }).object,
      operator,
      'status untouched, apply idempotent',
    );
  });
});

describe('updateManagedFields', () => {
  it('records a create as an Update of every field', () => {
    const cm = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'c', labels: { a: 'b' } },
      data: { k: 'v' },
    };
    const created = updateManagedFields(undefined, cm, 'cartero-operator', 'Update', CONFIGMAP, T1);
    assert.deepEqual(managedFieldsOf(created), [
      {
        manager: 'cartero-operator',
        operation: 'Update',
        apiVersion: 'v1',
        time: T1,
        fieldsType: 'FieldsV1',
        fieldsV1: { 'f:data': { 'f:k': {} }, 'f:metadata': { 'f:labels': { 'f:a': {} } } },
      },
    ]);
    assert.equal('managedFields' in cm.metadata, false, 'input untouched');
  });

  it('drops removed fields from every manager and leaves unchanged entries alone', () => {
    const cm = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'c' }, data: { k: 'v', j: 'w' } };
    const applied = serverSideApply(undefined, cm, {
      manager: 'kubectl',
      force: false,
      kind: CONFIGMAP,
      now: T1,
    }).object;
    const edited = structuredClone(applied);
    delete (edited.data as Obj).j;
    const updated = updateManagedFields(applied, edited, 'kubectl-edit', 'Update', CONFIGMAP, T2);
    assert.deepEqual(managers(updated), ['kubectl/Apply']);
    assert.deepEqual(managedFieldsOf(updated)[0].fieldsV1, { 'f:data': { 'f:k': {} } });
    assert.equal(managedFieldsOf(updated)[0].time, T1);
    const noop = updateManagedFields(updated, updated, 'kubectl-edit', 'Update', CONFIGMAP, T3);
    assert.deepEqual(noop, updated);
  });

  it('takes the managedFields a write asks for, and [{}] resets them', () => {
    const cm = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'c' }, data: { k: 'v' } };
    const applied = serverSideApply(undefined, cm, {
      manager: 'csa',
      force: false,
      kind: CONFIGMAP,
      now: T1,
    }).object;
    const reset = structuredClone(applied);
    metadata(reset).managedFields = [{}];
    assert.equal(
      'managedFields' in metadata(updateManagedFields(applied, reset, 'x', 'Update', CONFIGMAP, T2)),
      false,
    );
    const renamed = structuredClone(applied);
    metadata(renamed).managedFields = managedFieldsOf(applied).map((entry) => ({
      ...entry,
      manager: 'kubectl',
    }));
    assert.deepEqual(managers(updateManagedFields(applied, renamed, 'x', 'Update', CONFIGMAP, T2)), [
      'kubectl/Apply',
    ]);
  });

  it('tracks status writers separately by subresource', () => {
    const base = serverSideApply(undefined, deployment(), {
      manager: 'kubectl',
      force: false,
      kind: DEPLOYMENT,
      now: T1,
    });
    const withStatus = { ...structuredClone(base.object), status: { readyReplicas: 2 } };
    const updated = updateManagedFields(
      base.object,
      withStatus,
      'kube-controller-manager',
      'Update',
      DEPLOYMENT,
      T2,
      'status',
    );
    const entry = managedFieldsOf(updated)[1];
    assert.equal(entry.subresource, 'status');
    assert.deepEqual(entry.fieldsV1, { 'f:status': { 'f:readyReplicas': {} } });
  });
});

describe('serverSideApply validation and subresources', () => {
  const opts = { manager: 'kubectl', force: false, kind: DEPLOYMENT, now: T1 };

  it('rejects keyed list items without their key, duplicates, and managedFields', () => {
    const noName = deployment();
    delete containers(noName)[0].name;
    throwsPatchError(() => serverSideApply(undefined, noName, opts), 422, 'Invalid');
    throwsPatchError(
      () =>
        serverSideApply(
          undefined,
          deployment({
            env: [
              { name: 'A', value: '1' },
              { name: 'A', value: '2' },
            ],
          }),
          opts,
        ),
      422,
      'Invalid',
    );
    const withFields = deployment();
    metadata(withFields).managedFields = [{ manager: 'x' }];
    throwsPatchError(() => serverSideApply(undefined, withFields, opts), 400, 'BadRequest');
  });

  it('applies status only on the status subresource and ignores it on the main resource', () => {
    const withStatus = { ...deployment(), status: { readyReplicas: 1 } };
    const main = serverSideApply(undefined, withStatus, opts).object;
    assert.equal('status' in main, false);
    const status = serverSideApply(
      main,
      { ...deployment({ replicas: 9 }), status: { readyReplicas: 1 } },
      {
        ...opts,
        manager: 'controller',
        subresource: 'status',
      },
    );
    assert.deepEqual(status.conflicts, []);
    assert.deepEqual(status.object.status, { readyReplicas: 1 });
    assert.equal((status.object.spec as Obj).replicas, 2, 'spec untouched through /status');
    const entry = managedFieldsOf(status.object)[1];
    assert.deepEqual(
      { manager: entry.manager, subresource: entry.subresource },
      { manager: 'controller', subresource: 'status' },
    );
    assert.deepEqual(entry.fieldsV1, { 'f:status': { 'f:readyReplicas': {} } });
  });

  it('applies status of custom resources without a status subresource when asked', () => {
    const relay = {
      apiVersion: 'cartero.example.com/v1alpha1',
      kind: 'SmtpRelay',
      metadata: { name: 'edge' },
      spec: { replicas: 1 },
      status: { phase: 'Pending' },
    };
    const { object } = serverSideApply(undefined, relay, { ...opts, kind: RELAY, statusSubresource: false });
    assert.deepEqual(object.status, { phase: 'Pending' });
  });
});
