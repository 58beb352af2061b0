/**
 * Conformance of the test API server with the real @kubernetes/client-node 1.4.0 (the operator's
 * client): typed CRUD, optimistic concurrency, every patch type, server-side apply, the generic
 * KubernetesObjectApi, CRDs and custom resources with the status subresource, Leases, and the
 * identity of the client's requests. Informers and watches are in client-node-informer.test.ts.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  ApiextensionsV1Api,
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  EventsV1Api,
  KubernetesObjectApi,
  PatchStrategy,
  setHeaderOptions,
  V1MicroTime,
  type KubeConfig,
  type EventsV1Event,
  type KubernetesObject,
  type V1ConfigMap,
  type V1CustomResourceDefinition,
  type V1Lease,
} from '@kubernetes/client-node';
import { startApiServer, type ApiServer } from './apiserver/server.js';
import { apiFailure, kubeConfigFrom, kubeConfigWithToken, managers, ownedBy } from './client-node-helpers.js';

const asMerge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
const asStrategic = setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch);
const asJsonPatch = setHeaderOptions('Content-Type', PatchStrategy.JsonPatch);
const asApply = setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply);

const GROUP = 'cartero.test';
const VERSION = 'v1alpha1';
const PLURAL = 'relays';

const relayCrd: V1CustomResourceDefinition = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: `${PLURAL}.${GROUP}` },
  spec: {
    group: GROUP,
    scope: 'Namespaced',
    names: { plural: PLURAL, singular: 'relay', kind: 'Relay', shortNames: ['rl'] },
    versions: [
      {
        name: VERSION,
        served: true,
        storage: true,
        subresources: { status: {} },
        schema: {
          openAPIV3Schema: {
            type: 'object',
            properties: {
              spec: {
                type: 'object',
                properties: {
                  // client-node names JSON schema keywords that clash with JS words with a leading underscore.
                  replicas: { type: 'integer', minimum: 0, _default: 1 },
                  hostname: { type: 'string' },
                  tenants: {
                    type: 'array',
                    items: { type: 'string' },
                  },
                },
              },
              status: {
                type: 'object',
                properties: {
                  observedGeneration: { type: 'integer' },
                  readyReplicas: { type: 'integer' },
                  phase: { type: 'string' },
                },
              },
            },
          },
        },
      },
    ],
  },
};

interface Relay extends KubernetesObject {
  spec?: { replicas?: number; hostname?: string; tenants?: string[] };
  status?: { observedGeneration?: number; readyReplicas?: number; phase?: string };
}

describe('@kubernetes/client-node 1.4.0 against the test API server', () => {
  let server: ApiServer;
  let kc: KubeConfig;
  let core: CoreV1Api;

  before(async () => {
    server = await startApiServer({ tokens: { 'operator-token': 'system:serviceaccount:cartero:operator' } });
    kc = kubeConfigFrom(server.kubeconfig);
    core = kc.makeApiClient(CoreV1Api);
    for (const name of ['cn-crud', 'cn-patch', 'cn-ssa', 'cn-crd', 'cn-lease', 'cn-who'])
      await core.createNamespace({ body: { metadata: { name } } });
  });

  after(async () => {
    await server.stop();
  });

  describe('CoreV1Api', () => {
    const namespace = 'cn-crud';

    it('creates, reads, replaces and deletes a ConfigMap; a stale replace is a 409 ApiException', async () => {
      const created = await core.createNamespacedConfigMap({
        namespace,
        body: { metadata: { name: 'settings', labels: { app: 'relay' } }, data: { a: '1' } },
      });
      assert.equal(created.metadata?.namespace, namespace);
      assert.match(created.metadata?.uid ?? '', /^[0-9a-f-]{36}$/);
      assert.ok(created.metadata?.creationTimestamp instanceof Date, 'timestamps are deserialized to Date');
      const rv1 = created.metadata?.resourceVersion ?? '';
      assert.ok(rv1);

      const read = await core.readNamespacedConfigMap({ name: 'settings', namespace });
      assert.deepEqual(read.data, { a: '1' });
      assert.equal(read.metadata?.resourceVersion, rv1);

      read.data = { a: '2' };
      const replaced = await core.replaceNamespacedConfigMap({ name: 'settings', namespace, body: read });
      assert.deepEqual(replaced.data, { a: '2' });
      assert.notEqual(replaced.metadata?.resourceVersion, rv1);
      assert.equal(replaced.metadata?.uid, created.metadata?.uid);

      const stale: V1ConfigMap = { ...created, data: { a: 'stale' } };
      const { err, status } = await apiFailure(
        core.replaceNamespacedConfigMap({ name: 'settings', namespace, body: stale }),
        409,
      );
      assert.equal(status?.reason, 'Conflict');
      assert.equal(status?.kind, 'Status');
      assert.match(status?.message ?? '', /the object has been modified/);
      assert.equal(status?.details?.name, 'settings');
      assert.equal(typeof err.body, 'string', 'ApiException.body is the raw response text');
      assert.match(err.message, /^HTTP-Code: 409\nMessage: Unknown API Status Code!\nBody: /);
      assert.equal((await core.readNamespacedConfigMap({ name: 'settings', namespace })).data?.a, '2');

      const dup = await apiFailure(
        core.createNamespacedConfigMap({ namespace, body: { metadata: { name: 'settings' } } }),
        409,
      );
      assert.equal(dup.status?.reason, 'AlreadyExists');

      await core.deleteNamespacedConfigMap({ name: 'settings', namespace });
      const gone = await apiFailure(core.readNamespacedConfigMap({ name: 'settings', namespace }), 404);
      assert.equal(gone.status?.reason, 'NotFound');
      assert.equal(gone.status?.details?.kind, 'configmaps');
    });

    it('lists with a labelSelector (equality and set-based)', async () => {
      const labels: Record<string, Record<string, string>> = {
        a: { app: 'relay', tier: 'edge' },
        b: { app: 'relay', tier: 'core' },
        c: { app: 'mx' },
      };
      for (const [name, l] of Object.entries(labels))
        await core.createNamespacedConfigMap({ namespace, body: { metadata: { name, labels: l } } });
      const names = async (labelSelector: string) =>
        (await core.listNamespacedConfigMap({ namespace, labelSelector })).items
          .map((i) => i.metadata?.name)
          .sort();
      assert.deepEqual(await names('app=relay'), ['a', 'b']);
      assert.deepEqual(await names('app=relay,tier!=edge'), ['b']);
      assert.deepEqual(await names('tier in (edge,core)'), ['a', 'b']);
      assert.deepEqual(await names('!tier'), ['c']);
      const list = await core.listNamespacedConfigMap({ namespace });
      assert.ok(list.metadata?.resourceVersion, 'the list carries a resourceVersion to watch from');
      assert.equal(list.kind, 'ConfigMapList');
      const paged = await core.listNamespacedConfigMap({ namespace, limit: 2 });
      assert.equal(paged.items.length, 2);
      assert.ok(paged.metadata?._continue, 'the continue token is `_continue` in client-node');
      const rest = await core.listNamespacedConfigMap({
        namespace,
        limit: 2,
        _continue: paged.metadata?._continue,
      });
      assert.deepEqual(
        [...paged.items, ...rest.items].map((i) => i.metadata?.name),
        ['a', 'b', 'c'],
      );
    });
  });

  describe('patches', () => {
    const namespace = 'cn-patch';

    it('merge patch, JSON patch and strategic merge patch through setHeaderOptions', async () => {
      await core.createNamespacedConfigMap({
        namespace,
        body: { metadata: { name: 'p', labels: { keep: 'yes', drop: 'yes' } }, data: { a: '1', b: '2' } },
      });
      const merged = await core.patchNamespacedConfigMap(
        { name: 'p', namespace, body: { metadata: { labels: { drop: null } }, data: { b: null, c: '3' } } },
        asMerge,
      );
      assert.deepEqual(merged.data, { a: '1', c: '3' });
      assert.deepEqual(merged.metadata?.labels, { keep: 'yes' });

      const patched = await core.patchNamespacedConfigMap(
        {
          name: 'p',
          namespace,
          body: [
            { op: 'test', path: '/data/a', value: '1' },
            { op: 'replace', path: '/data/a', value: '10' },
            { op: 'add', path: '/data/d', value: '4' },
          ],
        },
        asJsonPatch,
      );
      assert.deepEqual(patched.data, { a: '10', c: '3', d: '4' });
      const failedTest = await apiFailure(
        core.patchNamespacedConfigMap(
          { name: 'p', namespace, body: [{ op: 'test', path: '/data/a', value: 'nope' }] },
          asJsonPatch,
        ),
        422,
      );
      assert.ok(failedTest.status?.message);

      // Without options the generated client sends application/json-patch+json (the first type it
      // knows), so an object body is refused: the Content-Type must always be chosen.
      const noType = await apiFailure(
        core.patchNamespacedConfigMap({ name: 'p', namespace, body: { data: { x: '1' } } }),
        400,
      );
      assert.equal(noType.status?.reason, 'BadRequest');

      const smp = await core.patchNamespacedConfigMap(
        {
          name: 'p',
          namespace,
          body: { data: { e: '5' }, metadata: { labels: { $patch: 'replace', only: 'me' } } },
        },
        asStrategic,
      );
      assert.equal(smp.data?.e, '5');
      assert.deepEqual(smp.metadata?.labels, { only: 'me' });
    });

    it('strategic merge patch merges lists by their patch merge key; merge patch replaces them', async () => {
      const apps = kc.makeApiClient(AppsV1Api);
      const container = (name: string, image: string) => ({ name, image });
      await apps.createNamespacedDeployment({
        namespace,
        body: {
          metadata: { name: 'd' },
          spec: {
            selector: { matchLabels: { app: 'd' } },
            template: {
              metadata: { labels: { app: 'd' } },
              spec: { containers: [container('relay', 'relay:1'), container('sidecar', 'side:1')] },
            },
          },
        },
      });
      const smp = await apps.patchNamespacedDeployment(
        {
          name: 'd',
          namespace,
          body: { spec: { template: { spec: { containers: [container('relay', 'relay:2')] } } } },
        },
        asStrategic,
      );
      assert.deepEqual(
        smp.spec?.template.spec?.containers.map((c) => `${c.name}=${c.image}`),
        ['relay=relay:2', 'sidecar=side:1'],
      );
      const merge = await apps.patchNamespacedDeployment(
        {
          name: 'd',
          namespace,
          body: { spec: { template: { spec: { containers: [container('relay', 'relay:3')] } } } },
        },
        asMerge,
      );
      assert.deepEqual(
        merge.spec?.template.spec?.containers.map((c) => `${c.name}=${c.image}`),
        ['relay=relay:3'],
      );
      assert.equal(merge.metadata?.generation, 3, 'each spec change bumps generation');
    });
  });

  describe('server-side apply', () => {
    const namespace = 'cn-ssa';
    const cm = (data: Record<string, string>): V1ConfigMap => ({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'applied', namespace },
      data,
    });

    it('applies, detects a conflict naming the other manager, and takes the field over with force', async () => {
      const first = await core.patchNamespacedConfigMap(
        { name: 'applied', namespace, body: cm({ a: '1', b: '1' }), fieldManager: 'cartero-operator' },
        asApply,
      );
      assert.deepEqual(first.data, { a: '1', b: '1' });
      assert.deepEqual(managers(first), ['cartero-operator/Apply']);
      assert.deepEqual(ownedBy(first, 'cartero-operator'), { 'f:data': { 'f:a': {}, 'f:b': {} } });
      const entry = first.metadata?.managedFields?.[0];
      assert.equal(entry?.fieldsType, 'FieldsV1');
      assert.equal(entry?.apiVersion, 'v1');
      assert.ok(entry?.time instanceof Date);

      // Re-applying the same intent is a no-op: same resourceVersion.
      const again = await core.patchNamespacedConfigMap(
        { name: 'applied', namespace, body: cm({ a: '1', b: '1' }), fieldManager: 'cartero-operator' },
        asApply,
      );
      assert.equal(again.metadata?.resourceVersion, first.metadata?.resourceVersion);

      const { status } = await apiFailure(
        core.patchNamespacedConfigMap(
          { name: 'applied', namespace, body: cm({ a: '2' }), fieldManager: 'intruder' },
          asApply,
        ),
        409,
      );
      assert.equal(status?.reason, 'Conflict');
      assert.match(
        status?.message ?? '',
        /^Apply failed with 1 conflict: conflict with "cartero-operator": \.data\.a$/,
      );
      assert.deepEqual(status?.details?.causes, [
        { reason: 'FieldManagerConflict', message: 'conflict with "cartero-operator"', field: '.data.a' },
      ]);

      const forced = await core.patchNamespacedConfigMap(
        { name: 'applied', namespace, body: cm({ a: '2' }), fieldManager: 'intruder', force: true },
        asApply,
      );
      assert.deepEqual(forced.data, { a: '2', b: '1' });
      assert.deepEqual(ownedBy(forced, 'intruder'), { 'f:data': { 'f:a': {} } });
      assert.deepEqual(ownedBy(forced, 'cartero-operator'), { 'f:data': { 'f:b': {} } });

      // The operator re-applies without `a`: it no longer owns it, so `a` stays (intruder owns it).
      const reapplied = await core.patchNamespacedConfigMap(
        { name: 'applied', namespace, body: cm({ b: '1' }), fieldManager: 'cartero-operator' },
        asApply,
      );
      assert.deepEqual(reapplied.data, { a: '2', b: '1' });

      // An Update (merge patch) by another manager is recorded as operation Update.
      const updated = await core.patchNamespacedConfigMap(
        { name: 'applied', namespace, body: { data: { c: '3' } }, fieldManager: 'hand-edit' },
        asMerge,
      );
      assert.deepEqual(managers(updated), ['cartero-operator/Apply', 'hand-edit/Update', 'intruder/Apply']);
    });

    it('requires a fieldManager for apply', async () => {
      const { status } = await apiFailure(
        core.patchNamespacedConfigMap({ name: 'nomanager', namespace, body: cm({ a: '1' }) }, asApply),
        400,
      );
      assert.match(status?.message ?? '', /fieldManager/);
    });
  });

  describe('CRDs and custom resources', () => {
    const namespace = 'cn-crd';
    let custom: CustomObjectsApi;
    const ref = { group: GROUP, version: VERSION, namespace, plural: PLURAL };

    before(async () => {
      const ext = kc.makeApiClient(ApiextensionsV1Api);
      const crd = await ext.createCustomResourceDefinition({ body: relayCrd });
      assert.equal(crd.metadata?.name, 'relays.cartero.test');
      const established = await ext.readCustomResourceDefinition({ name: 'relays.cartero.test' });
      assert.ok(
        established.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True'),
        'the CRD is Established',
      );
      assert.equal(established.status?.acceptedNames?.kind, 'Relay');
      custom = kc.makeApiClient(CustomObjectsApi);
    });

    it('CustomObjectsApi: create, get, list by label, merge patch; schema defaults apply', async () => {
      const created = (await custom.createNamespacedCustomObject({
        ...ref,
        body: {
          apiVersion: `${GROUP}/${VERSION}`,
          kind: 'Relay',
          metadata: { name: 'r1', labels: { tier: 'edge' } },
          spec: { hostname: 'mx1.example.test' },
          status: { phase: 'ignored on create' },
        },
      })) as Relay;
      assert.equal(created.spec?.replicas, 1, 'the schema default was applied');
      assert.equal(created.status, undefined, 'status is dropped on create (status subresource)');
      assert.equal(created.metadata?.generation, 1);
      assert.equal(typeof created.metadata?.creationTimestamp, 'string', 'custom objects are plain JSON');

      await custom.createNamespacedCustomObject({
        ...ref,
        body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'Relay', metadata: { name: 'r2' }, spec: {} },
      });
      const got = (await custom.getNamespacedCustomObject({ ...ref, name: 'r1' })) as Relay;
      assert.equal(got.spec?.hostname, 'mx1.example.test');
      const listed = (await custom.listNamespacedCustomObject({ ...ref, labelSelector: 'tier=edge' })) as {
        items: Relay[];
      };
      assert.deepEqual(
        listed.items.map((i) => i.metadata?.name),
        ['r1'],
      );
      const patched = (await custom.patchNamespacedCustomObject(
        { ...ref, name: 'r1', body: { spec: { replicas: 3 } } },
        asMerge,
      )) as Relay;
      assert.equal(patched.spec?.replicas, 3);
      assert.equal(patched.spec?.hostname, 'mx1.example.test');
      assert.equal(patched.metadata?.generation, 2);
      const smp = await apiFailure(
        custom.patchNamespacedCustomObject(
          { ...ref, name: 'r1', body: { spec: { replicas: 4 } } },
          asStrategic,
        ),
        415,
      );
      assert.equal(smp.status?.reason, 'UnsupportedMediaType');
    });

    it('status writes leave spec alone, spec writes leave status alone; generation bumps on spec only', async () => {
      const r = (await custom.createNamespacedCustomObject({
        ...ref,
        body: {
          apiVersion: `${GROUP}/${VERSION}`,
          kind: 'Relay',
          metadata: { name: 'st' },
          spec: { replicas: 2, hostname: 'a.test' },
        },
      })) as Relay;
      assert.equal(r.metadata?.generation, 1);

      const s1 = (await custom.patchNamespacedCustomObjectStatus(
        {
          ...ref,
          name: 'st',
          body: {
            spec: { replicas: 99 },
            status: { observedGeneration: 1, readyReplicas: 2, phase: 'Ready' },
          },
        },
        asMerge,
      )) as Relay;
      assert.deepEqual(s1.status, { observedGeneration: 1, readyReplicas: 2, phase: 'Ready' });
      assert.equal(s1.spec?.replicas, 2, 'a status patch does not change spec');
      assert.equal(s1.metadata?.generation, 1, 'a status write does not bump generation');
      assert.notEqual(s1.metadata?.resourceVersion, r.metadata?.resourceVersion);
      // client-node sends no User-Agent of its own: writes without fieldManager are node-fetch's.
      assert.deepEqual(managers(s1), ['node-fetch/Update', 'node-fetch/Update/status']);

      const s1Replace = { ...s1, spec: { replicas: 50 }, status: { ...s1.status, readyReplicas: 1 } };
      const s2 = (await custom.replaceNamespacedCustomObjectStatus({
        ...ref,
        name: 'st',
        body: s1Replace,
      })) as Relay;
      assert.equal(s2.status?.readyReplicas, 1);
      assert.equal(s2.spec?.replicas, 2, 'a status replace does not change spec');
      assert.equal(s2.metadata?.generation, 1);

      const staleStatus = await apiFailure(
        custom.replaceNamespacedCustomObjectStatus({ ...ref, name: 'st', body: s1Replace }),
        409,
      );
      assert.equal(staleStatus.status?.reason, 'Conflict');

      const m1 = (await custom.patchNamespacedCustomObject(
        { ...ref, name: 'st', body: { spec: { replicas: 3 }, status: { phase: 'Broken' } } },
        asMerge,
      )) as Relay;
      assert.equal(m1.spec?.replicas, 3);
      assert.equal(m1.status?.phase, 'Ready', 'a main-resource patch does not change status');
      assert.equal(m1.metadata?.generation, 2);

      const m2 = (await custom.replaceNamespacedCustomObject({
        ...ref,
        name: 'st',
        body: { ...m1, status: { phase: 'Broken' }, spec: { ...m1.spec, hostname: 'b.test' } },
      })) as Relay;
      assert.equal(m2.status?.phase, 'Ready');
      assert.equal(m2.metadata?.generation, 3);

      const labelled = (await custom.patchNamespacedCustomObject(
        { ...ref, name: 'st', body: { metadata: { labels: { touched: 'yes' } } } },
        asMerge,
      )) as Relay;
      assert.equal(labelled.metadata?.generation, 3, 'a metadata change does not bump generation');

      const sa = (await custom.patchNamespacedCustomObjectStatus(
        {
          ...ref,
          name: 'st',
          body: {
            apiVersion: `${GROUP}/${VERSION}`,
            kind: 'Relay',
            metadata: { name: 'st', namespace },
            status: { observedGeneration: 3, phase: 'Ready', readyReplicas: 3 },
          },
          fieldManager: 'cartero-status',
          force: true,
        },
        asApply,
      )) as Relay;
      assert.equal(sa.status?.observedGeneration, 3);
      assert.equal(sa.spec?.replicas, 3);
      // The forced apply took over every status field node-fetch's status writes owned.
      assert.deepEqual(managers(sa), ['cartero-status/Apply/status', 'node-fetch/Update']);
      assert.deepEqual(ownedBy(sa, 'cartero-status'), {
        'f:status': { 'f:observedGeneration': {}, 'f:phase': {}, 'f:readyReplicas': {} },
      });
    });

    it('KubernetesObjectApi: apply (creates), patch, read, list and delete a custom resource', async () => {
      const objects = KubernetesObjectApi.makeApiClient(kc);
      const spec: Relay = {
        apiVersion: `${GROUP}/${VERSION}`,
        kind: 'Relay',
        metadata: { name: 'generic', namespace },
        spec: { replicas: 2, hostname: 'g.test', tenants: ['t1'] },
      };
      const applied = (await objects.patch(
        spec,
        undefined,
        undefined,
        'cartero-operator',
        true,
        PatchStrategy.ServerSideApply,
      )) as Relay;
      assert.equal(applied.spec?.hostname, 'g.test');
      assert.deepEqual(managers(applied), ['cartero-operator/Apply']);
      const created = server.requests.filter((r) => r.verb === 'patch' && r.name === 'generic').at(-1);
      assert.equal(created?.code, 201, 'server-side apply of a missing object creates it');

      const patched = (await objects.patch(
        {
          apiVersion: spec.apiVersion,
          kind: 'Relay',
          metadata: { name: 'generic', namespace },
          spec: { replicas: 5 },
        },
        undefined,
        undefined,
        'scaler',
        undefined,
        PatchStrategy.MergePatch,
      )) as Relay;
      assert.equal(patched.spec?.replicas, 5);
      assert.deepEqual(patched.spec?.tenants, ['t1']);

      // KubernetesObjectApi.patch defaults to strategic merge patch, which custom resources refuse.
      await apiFailure(
        objects.patch({
          apiVersion: spec.apiVersion,
          kind: 'Relay',
          metadata: { name: 'generic', namespace },
        }),
        415,
      );

      const read = (await objects.read({
        apiVersion: spec.apiVersion,
        kind: 'Relay',
        metadata: { name: 'generic', namespace },
      })) as Relay;
      assert.equal(read.spec?.replicas, 5);
      assert.equal(read.metadata?.uid, applied.metadata?.uid);

      const conflict = await apiFailure(
        objects.patch(
          { ...spec, spec: { ...spec.spec, replicas: 2 } },
          undefined,
          undefined,
          'cartero-operator',
          false,
          PatchStrategy.ServerSideApply,
        ),
        409,
      );
      assert.match(conflict.status?.message ?? '', /conflict with "scaler"/);

      const list = await objects.list(spec.apiVersion ?? '', 'Relay', namespace);
      assert.ok(list.items.some((i) => i.metadata?.name === 'generic'));
      await objects.delete({
        apiVersion: spec.apiVersion,
        kind: 'Relay',
        metadata: { name: 'generic', namespace },
      });
      await apiFailure(
        objects.read({
          apiVersion: spec.apiVersion,
          kind: 'Relay',
          metadata: { name: 'generic', namespace },
        }),
        404,
      );
    });
  });

  describe('CoordinationV1Api Leases', () => {
    const namespace = 'cn-lease';

    it('creates and renews a Lease; MicroTimes keep their microseconds; a concurrent update gets 409', async () => {
      const leases = kc.makeApiClient(CoordinationV1Api);
      const acquired = new V1MicroTime('2025-01-02T03:04:05.123Z');
      assert.equal(JSON.stringify(acquired), '"2025-01-02T03:04:05.123000Z"');
      const created = await leases.createNamespacedLease({
        namespace,
        body: {
          metadata: { name: 'cartero-operator' },
          spec: {
            holderIdentity: 'pod-a',
            leaseDurationSeconds: 15,
            acquireTime: acquired,
            renewTime: acquired,
            leaseTransitions: 0,
          },
        },
      });
      // client-node 1.4.0 does not turn MicroTime strings back into V1MicroTime (or Date).
      assert.equal(created.spec?.renewTime as unknown, '2025-01-02T03:04:05.123000Z');

      // A time with real microseconds, as another client (client-go) writes it, is kept to the microsecond.
      const micro = '2025-01-02T03:04:06.654321Z';
      const renewed = await leases.replaceNamespacedLease({
        name: 'cartero-operator',
        namespace,
        body: { ...created, spec: { ...created.spec, renewTime: micro as unknown as V1MicroTime } },
      });
      assert.equal(renewed.spec?.renewTime as unknown, micro);
      const read = await leases.readNamespacedLease({ name: 'cartero-operator', namespace });
      assert.equal(read.spec?.renewTime as unknown, micro);
      assert.equal(read.spec?.acquireTime as unknown, '2025-01-02T03:04:05.123000Z');

      // Two candidates read the same version; the second write loses.
      const a: V1Lease = await leases.readNamespacedLease({ name: 'cartero-operator', namespace });
      const b: V1Lease = await leases.readNamespacedLease({ name: 'cartero-operator', namespace });
      const now = new V1MicroTime();
      await leases.replaceNamespacedLease({
        name: 'cartero-operator',
        namespace,
        body: { ...a, spec: { ...a.spec, renewTime: now } },
      });
      const lost = await apiFailure(
        leases.replaceNamespacedLease({
          name: 'cartero-operator',
          namespace,
          body: { ...b, spec: { ...b.spec, holderIdentity: 'pod-b', renewTime: now, leaseTransitions: 1 } },
        }),
        409,
      );
      assert.equal(lost.status?.reason, 'Conflict');
      assert.match(lost.status?.message ?? '', /leases\.coordination\.k8s\.io "cartero-operator"/);
      const final = await leases.readNamespacedLease({ name: 'cartero-operator', namespace });
      assert.equal(final.spec?.holderIdentity, 'pod-a');
      assert.match(String(final.spec?.renewTime), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    });

    it('client-node 1.4.0 ships no leader election: the operator brings its own on a Lease', async () => {
      const exported = Object.keys(await import('@kubernetes/client-node'));
      assert.ok(exported.includes('CoordinationV1Api'));
      assert.deepEqual(
        exported.filter((name) => /leader/i.test(name)),
        [],
      );
    });

    it('refuses Lease times without exactly six fractional digits (a plain Date), as kube-apiserver does', async () => {
      const leases = kc.makeApiClient(CoordinationV1Api);
      const { status } = await apiFailure(
        leases.createNamespacedLease({
          namespace,
          body: {
            metadata: { name: 'millis' },
            spec: { holderIdentity: 'x', renewTime: new Date('2025-01-02T03:04:05.123Z') },
          },
        }),
        400,
      );
      assert.equal(status?.reason, 'BadRequest');
      assert.match(status?.message ?? '', /Lease in version "v1" cannot be handled as a Lease/);
      assert.match(status?.message ?? '', /cannot parse "\.123Z" as "\.000000"/);
      await apiFailure(leases.readNamespacedLease({ name: 'millis', namespace }), 404);
    });
  });

  describe('EventsV1Api', () => {
    it('records an Event with a V1MicroTime eventTime; a plain Date is refused as for Leases', async () => {
      const events = kc.makeApiClient(EventsV1Api);
      const event = (name: string, eventTime: V1MicroTime): EventsV1Event => ({
        metadata: { name, namespace: 'cn-lease' },
        eventTime,
        type: 'Normal',
        reason: 'ScaleDownWaiting',
        action: 'Drain',
        note: 'waiting for relay-2 to hand off its queue',
        reportingController: 'cartero.io/operator',
        reportingInstance: 'cartero-operator-0',
        regarding: { apiVersion: `${GROUP}/${VERSION}`, kind: 'Relay', name: 'r1', namespace: 'cn-lease' },
      });
      const created = await events.createNamespacedEvent({
        namespace: 'cn-lease',
        body: event('e1', new V1MicroTime('2025-01-02T03:04:05.678Z')),
      });
      assert.equal(created.eventTime as unknown, '2025-01-02T03:04:05.678000Z');
      const { status } = await apiFailure(
        events.createNamespacedEvent({ namespace: 'cn-lease', body: event('e2', new Date() as V1MicroTime) }),
        400,
      );
      assert.match(
        status?.message ?? '',
        /^Event in version "v1" cannot be handled as a Event: parsing time/,
      );
    });
  });

  describe('request identity', () => {
    it("sends the kubeconfig's bearer token over http; the request log names its user", async () => {
      const before = server.requests.length;
      await core.listNamespacedConfigMap({ namespace: 'cn-who' });
      const mine = server.requests.slice(before).filter((r) => r.namespace === 'cn-who');
      assert.deepEqual(
        mine.map((r) => `${r.user} ${r.verb} ${r.resource}`),
        ['admin list configmaps'],
      );

      const operator = kubeConfigWithToken(server.url, 'operator-token').makeApiClient(CoreV1Api);
      await operator.createNamespacedConfigMap({ namespace: 'cn-who', body: { metadata: { name: 'x' } } });
      const rec = server.requests.filter((r) => r.namespace === 'cn-who' && r.verb === 'create').at(-1);
      assert.equal(rec?.user, 'system:serviceaccount:cartero:operator');
      assert.equal(rec?.code, 201);

      const stranger = kubeConfigWithToken(server.url, 'not-a-token').makeApiClient(CoreV1Api);
      const { err, status } = await apiFailure(
        stranger.listNamespacedConfigMap({ namespace: 'cn-who' }),
        401,
      );
      assert.equal(status, undefined, 'client-node drops the body of a 401');
      assert.match(err.message, /Unauthorized/);
    });
  });
});
