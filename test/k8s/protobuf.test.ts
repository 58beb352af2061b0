import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import {
  decodeK8sProtobuf,
  encodeK8sProtobufForTest,
  isK8sProtobuf,
  K8sProtobufDecodeError,
  K8sProtobufUnsupportedKindError,
} from './apiserver/protobuf.js';

/** A Helm v3 release Secret as `helm install` writes it: data.release is base64(gzip(release JSON)). */
function helmReleaseSecret(name: string, version: number, status: string): Record<string, unknown> {
  const release = {
    name,
    info: { status, description: 'Install complete' },
    chart: { metadata: { name: 'cartero', version: '0.1.0' }, templates: [] as unknown[] },
    manifest: 'x'.repeat(50_000),
    noise: randomBytes(40_000).toString('hex'), // keeps gzip from shrinking the blob to nothing
    version,
    namespace: 'mail',
  };
  const helmEncoded = Buffer.from(gzipSync(Buffer.from(JSON.stringify(release))).toString('base64'));
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      name: `sh.helm.release.v1.${name}.v${version}`,
      namespace: 'mail',
      labels: { name, owner: 'helm', status, version: String(version) },
      creationTimestamp: null,
    },
    data: { release: helmEncoded.toString('base64') },
    type: 'helm.sh/release.v1',
  };
}

function roundTrip(obj: Record<string, unknown>): Record<string, unknown> {
  return decodeK8sProtobuf(encodeK8sProtobufForTest(obj));
}

/** Builds protobuf bytes by hand, independent of the module's tables. */
const varint = (n: number): number[] => {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
};
const len = (fieldNo: number, payload: number[] | string): number[] => {
  const bytes = typeof payload === 'string' ? [...Buffer.from(payload, 'utf8')] : payload;
  return [...varint((fieldNo << 3) | 2), ...varint(bytes.length), ...bytes];
};
const vint = (fieldNo: number, n: number): number[] => [...varint(fieldNo << 3), ...varint(n)];
const envelope = (apiVersion: string, kind: string, raw: number[]): Buffer =>
  Buffer.from([
    0x6b,
    0x38,
    0x73,
    0x00,
    ...len(1, [...len(1, apiVersion), ...len(2, kind)]),
    ...len(2, raw),
    ...len(3, ''),
    ...len(4, ''),
  ]);

describe('isK8sProtobuf', () => {
  it('matches the protobuf media type with or without parameters, in any case', () => {
    assert.equal(isK8sProtobuf('application/vnd.kubernetes.protobuf'), true);
    assert.equal(isK8sProtobuf('Application/VND.Kubernetes.Protobuf; charset=utf-8'), true);
    assert.equal(isK8sProtobuf(' application/vnd.kubernetes.protobuf ;stream=watch'), true);
  });

  it('rejects everything else', () => {
    assert.equal(isK8sProtobuf(undefined), false);
    assert.equal(isK8sProtobuf(''), false);
    assert.equal(isK8sProtobuf('application/json'), false);
    assert.equal(isK8sProtobuf('application/vnd.kubernetes.protobuf+json'), false);
    assert.equal(isK8sProtobuf('application/merge-patch+json'), false);
  });
});

/**
 * Request bodies captured from kubectl v1.32.4 (client-go sends built-in types as protobuf), by pointing it
 * at a logging HTTP server:
 *   kubectl create secret generic x --from-literal=a=b --type=helm.sh/release.v1
 *   kubectl create configmap cm --from-literal=k=v
 *   kubectl create secret generic sh.helm.release.v1.web.v1 -n mail --from-literal=release=HHH…(150) \
 *     --type=helm.sh/release.v1
 */
const KUBECTL_SECRET =
  '6b3873000a0c0a0276311206536563726574122f0a110a017812001a0022002a00320038004200' +
  '12060a01611201621a1268656c6d2e73682f72656c656173652e76311a002200';
const KUBECTL_CONFIGMAP =
  '6b3873000a0f0a0276311209436f6e6669674d6170121c0a120a02636d12001a0022002a00320038004200' +
  '12060a016b1201761a002200';
const KUBECTL_HELM_SECRET =
  '6b3873000a0c0a027631120653656372657412e8010a2d0a1973682e68656c6d2e72656c656173652e76312e7765622e7631' +
  '12001a046d61696c22002a0032003800420012a2010a0772656c65617365129601' +
  '48'.repeat(150) +
  '1a1268656c6d2e73682f72656c656173652e76311a002200';

describe('decodeK8sProtobuf on bodies kubectl sent', () => {
  it('a Secret, as the JSON API would carry it', () => {
    assert.deepEqual(decodeK8sProtobuf(Buffer.from(KUBECTL_SECRET, 'hex')), {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'x', creationTimestamp: null },
      data: { a: 'Yg==' },
      type: 'helm.sh/release.v1',
    });
  });

  it('a ConfigMap', () => {
    assert.deepEqual(decodeK8sProtobuf(Buffer.from(KUBECTL_CONFIGMAP, 'hex')), {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'cm', creationTimestamp: null },
      data: { k: 'v' },
    });
  });

  it('a Helm-style release Secret with multi-byte lengths', () => {
    assert.deepEqual(decodeK8sProtobuf(Buffer.from(KUBECTL_HELM_SECRET, 'hex')), {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'sh.helm.release.v1.web.v1', namespace: 'mail', creationTimestamp: null },
      data: { release: Buffer.from('H'.repeat(150)).toString('base64') },
      type: 'helm.sh/release.v1',
    });
  });
});

describe('decodeK8sProtobuf on hand-built bytes (field numbers from the upstream .proto files)', () => {
  it('decodes a Secret as go-to-protobuf writes it, empty fields included', () => {
    const objectMeta = [
      ...len(1, 'sh.helm.release.v1.web.v1'), // name
      ...len(2, ''), // generateName
      ...len(3, 'mail'), // namespace
      ...len(4, ''), // selfLink
      ...len(5, ''), // uid
      ...len(6, ''), // resourceVersion
      ...vint(7, 0), // generation
      ...len(8, []), // creationTimestamp (zero time: no bytes)
      ...len(11, [...len(1, 'owner'), ...len(2, 'helm')]), // labels
      ...len(11, [...len(1, 'status'), ...len(2, 'deployed')]),
      ...len(12, [...len(1, 'note'), ...len(2, '')]), // annotations, empty value
    ];
    const secret = [
      ...len(1, objectMeta),
      ...len(2, [...len(1, 'release'), ...len(2, [0x00, 0xff, 0x10])]), // data
      ...len(2, [...len(1, 'empty')]), // a bytes map value left out entirely
      ...len(3, 'helm.sh/release.v1'), // type
    ];
    assert.deepEqual(decodeK8sProtobuf(envelope('v1', 'Secret', secret)), {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: {
        name: 'sh.helm.release.v1.web.v1',
        namespace: 'mail',
        creationTimestamp: null,
        labels: { owner: 'helm', status: 'deployed' },
        annotations: { note: '' },
      },
      data: { release: 'AP8Q', empty: '' },
      type: 'helm.sh/release.v1',
    });
  });

  it('decodes timestamps, int64, owner references and finalizers', () => {
    const objectMeta = [
      ...len(1, 'cfg'),
      ...len(5, '6f1c1c2e-0000-4000-8000-000000000001'),
      ...len(6, '42'),
      ...vint(7, 3),
      ...len(8, [...vint(1, 1_700_000_000), ...vint(2, 123_000_000)]), // nanos are dropped, as metav1.Time does
      ...len(9, [...vint(1, 1_700_000_600)]),
      ...vint(10, 0), // deletionGracePeriodSeconds is a pointer: 0 is kept
      ...len(13, [
        ...len(1, 'Deployment'),
        ...len(3, 'web'),
        ...len(4, 'u-1'),
        ...len(5, 'apps/v1'),
        ...vint(6, 1),
      ]),
      ...len(14, 'example.com/cleanup'),
      ...len(14, 'foregroundDeletion'),
    ];
    const configMap = [...len(1, objectMeta), ...len(2, [...len(1, 'k'), ...len(2, 'v')]), ...vint(4, 1)];
    assert.deepEqual(decodeK8sProtobuf(envelope('v1', 'ConfigMap', configMap)), {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: {
        name: 'cfg',
        uid: '6f1c1c2e-0000-4000-8000-000000000001',
        resourceVersion: '42',
        generation: 3,
        creationTimestamp: '2023-11-14T22:13:20Z',
        deletionTimestamp: '2023-11-14T22:23:20Z',
        deletionGracePeriodSeconds: 0,
        ownerReferences: [
          { apiVersion: 'apps/v1', kind: 'Deployment', name: 'web', uid: 'u-1', controller: true },
        ],
        finalizers: ['example.com/cleanup', 'foregroundDeletion'],
      },
      immutable: true,
      data: { k: 'v' },
    });
  });

  it('decodes DeleteOptions, in meta.k8s.io/v1 and in v1', () => {
    const opts = [
      ...vint(1, 0),
      ...len(2, [...len(1, 'uid-1'), ...len(2, '7')]),
      ...len(4, 'Foreground'),
      ...len(5, 'All'),
    ];
    for (const apiVersion of ['meta.k8s.io/v1', 'v1']) {
      assert.deepEqual(decodeK8sProtobuf(envelope(apiVersion, 'DeleteOptions', opts)), {
        apiVersion,
        kind: 'DeleteOptions',
        gracePeriodSeconds: 0,
        preconditions: { uid: 'uid-1', resourceVersion: '7' },
        propagationPolicy: 'Foreground',
        dryRun: ['All'],
      });
    }
  });

  it('skips fields it does not know, of every wire type', () => {
    const secret = [
      ...vint(99, 300), // varint
      ...[...varint((98 << 3) | 1), 1, 2, 3, 4, 5, 6, 7, 8], // fixed64
      ...[...varint((97 << 3) | 5), 1, 2, 3, 4], // fixed32
      ...len(96, 'future field'),
      ...len(3, 'Opaque'),
    ];
    assert.deepEqual(decodeK8sProtobuf(envelope('v1', 'Secret', secret)), {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'Opaque',
    });
  });

  it('keeps negative int64 values (ten-byte varints)', () => {
    const minusOne = [...varint(1 << 3), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert.deepEqual(decodeK8sProtobuf(envelope('meta.k8s.io/v1', 'DeleteOptions', minusOne)), {
      apiVersion: 'meta.k8s.io/v1',
      kind: 'DeleteOptions',
      gracePeriodSeconds: -1,
    });
  });
});

describe('round trips through encodeK8sProtobufForTest', () => {
  it('Helm release Secrets, one per release revision and status', () => {
    for (const [version, status] of [
      [1, 'superseded'],
      [2, 'deployed'],
      [3, 'pending-upgrade'],
    ] as const) {
      const secret = helmReleaseSecret('cartero', version, status);
      const body = encodeK8sProtobufForTest(secret);
      assert.ok(body.length > 50_000, `the release blob is large (${body.length} bytes)`);
      assert.deepEqual(decodeK8sProtobuf(body), secret);
    }
  });

  it('a Secret with every field the table knows', () => {
    const secret = {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: {
        name: 'creds',
        generateName: 'creds-',
        namespace: 'mail',
        selfLink: '/api/v1/namespaces/mail/secrets/creds',
        uid: 'a3c4e1f0-1111-4222-8333-944455556666',
        resourceVersion: '1001',
        generation: 2,
        creationTimestamp: '2026-01-02T03:04:05Z',
        deletionTimestamp: '2026-01-02T03:05:05Z',
        deletionGracePeriodSeconds: 30,
        labels: { 'app.kubernetes.io/name': 'cartero', tier: 'relay' },
        annotations: { 'meta.helm.sh/release-name': 'cartero', über: 'ñandú ✉' },
        ownerReferences: [
          {
            apiVersion: 'cartero.dev/v1alpha1',
            kind: 'RelayPool',
            name: 'outbound',
            uid: 'owner-uid',
            controller: true,
            blockOwnerDeletion: false,
          },
        ],
        finalizers: ['cartero.dev/drain'],
        managedFields: [
          {
            manager: 'helm',
            operation: 'Update',
            apiVersion: 'v1',
            time: '2026-01-02T03:04:05Z',
            fieldsType: 'FieldsV1',
            fieldsV1: { 'f:data': { '.': {}, 'f:release': {} }, 'f:type': {} },
          },
        ],
      },
      immutable: false,
      data: { 'tls.key': randomBytes(2048).toString('base64'), empty: '' },
      stringData: { password: 'hunter2', blank: '' },
      type: 'kubernetes.io/tls',
    };
    assert.deepEqual(roundTrip(secret), secret);
  });

  it('ConfigMaps with data and binaryData', () => {
    const configMap = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'relay-config', namespace: 'mail', labels: { app: 'cartero' } },
      immutable: true,
      data: { 'relay.yaml': 'listen: 0.0.0.0:25\npools:\n  - name: default\n', empty: '' },
      binaryData: {
        'ca.der': randomBytes(1500).toString('base64'),
        'zero.bin': Buffer.alloc(16).toString('base64'),
      },
    };
    assert.deepEqual(roundTrip(configMap), configMap);
  });

  it('DeleteOptions with propagationPolicy, preconditions and dryRun', () => {
    for (const opts of [
      { apiVersion: 'meta.k8s.io/v1', kind: 'DeleteOptions', propagationPolicy: 'Background' },
      { apiVersion: 'v1', kind: 'DeleteOptions', propagationPolicy: 'Foreground', gracePeriodSeconds: 0 },
      {
        apiVersion: 'meta.k8s.io/v1',
        kind: 'DeleteOptions',
        gracePeriodSeconds: 30,
        preconditions: { uid: 'u', resourceVersion: '9' },
        orphanDependents: false,
        dryRun: ['All'],
      },
    ]) {
      assert.deepEqual(roundTrip(opts), opts);
    }
  });

  it('drops the zero values Go leaves out of JSON (omitempty), keeps pointer fields', () => {
    const decoded = roundTrip({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'x', namespace: '', generation: 0, deletionGracePeriodSeconds: 0 },
      type: '',
    });
    assert.deepEqual(decoded, {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'x', deletionGracePeriodSeconds: 0 },
    });
  });

  it('writes the envelope client-go writes: magic, typeMeta, raw, empty contentEncoding and contentType', () => {
    const body = encodeK8sProtobufForTest({ apiVersion: 'v1', kind: 'Secret', type: 'Opaque' });
    assert.deepEqual(body, envelope('v1', 'Secret', len(3, 'Opaque')));
  });

  it('the test encoder refuses fields it has no number for', () => {
    assert.throws(
      () => encodeK8sProtobufForTest({ apiVersion: 'v1', kind: 'Secret', metadata: { nmae: 'typo' } }),
      /ObjectMeta has no protobuf field for "nmae"/,
    );
    assert.throws(
      () => encodeK8sProtobufForTest({ apiVersion: 'v1', kind: 'Pod' }),
      /no protobuf table for v1 Pod/,
    );
  });
});

describe('decodeK8sProtobuf errors', () => {
  const body = encodeK8sProtobufForTest(helmReleaseSecret('web', 1, 'deployed'));

  it('rejects a body without the k8s magic', () => {
    for (const bad of [
      Buffer.alloc(0),
      Buffer.from('k8s'),
      Buffer.from('{"apiVersion":"v1","kind":"Secret"}'),
      Buffer.concat([Buffer.from([0x6b, 0x38, 0x73, 0x01]), body.subarray(4)]),
    ]) {
      assert.throws(
        () => decodeK8sProtobuf(bad),
        (err: unknown) => err instanceof K8sProtobufDecodeError && /magic "k8s\\0"/.test(err.message),
      );
    }
    assert.throws(
      () => decodeK8sProtobuf(Buffer.from([0x6b, 0x38, 0x73, 0x00])),
      /empty body after the magic/,
    );
  });

  it('rejects truncated bodies, wherever they are cut inside the object', () => {
    // The raw field starts after magic (4) + typeMeta field; every cut from its key to the end must fail.
    const typeMetaFieldLen = 2 + body[5];
    const rawKeyAt = 4 + typeMetaFieldLen;
    assert.equal(body[rawKeyAt], 0x12, 'raw is field 2, length-delimited');
    const cuts = [
      rawKeyAt + 1,
      rawKeyAt + 2,
      rawKeyAt + 10,
      Math.floor(body.length / 2),
      body.length - 5,
      body.length - 1,
    ];
    for (const cut of cuts) {
      assert.throws(
        () => decodeK8sProtobuf(body.subarray(0, cut)),
        (err: unknown) => err instanceof K8sProtobufDecodeError && /truncated/.test(err.message),
        `cut at ${cut} of ${body.length}`,
      );
    }
  });

  it('rejects a nested message whose length runs past its parent', () => {
    // metadata declares 10 bytes but the Secret ends after 2 of them.
    const secret = [...varint((1 << 3) | 2), 10, ...len(1, 'x').slice(0, 2)];
    assert.throws(() => decodeK8sProtobuf(envelope('v1', 'Secret', secret)), /Secret: truncated/);
  });

  it('rejects wrong wire types and group/reserved wire types', () => {
    assert.throws(
      () => decodeK8sProtobuf(envelope('v1', 'Secret', vint(3, 1))),
      /Secret\.type \(field 3\): wire type 0, expected 2/,
    );
    assert.throws(
      () => decodeK8sProtobuf(envelope('v1', 'Secret', [...varint((3 << 3) | 3)])),
      /unsupported wire type 3/,
    );
    assert.throws(() => decodeK8sProtobuf(envelope('v1', 'Secret', [0x0f, 0x00])), /unsupported wire type 7/);
    assert.throws(() => decodeK8sProtobuf(envelope('v1', 'Secret', [0x02, 0x00])), /invalid field number 0/);
  });

  it('rejects an over-long varint', () => {
    const eleven = [0x08, ...Array(10).fill(0xff), 0x01];
    assert.throws(
      () => decodeK8sProtobuf(envelope('meta.k8s.io/v1', 'DeleteOptions', eleven)),
      /varint longer than 10 bytes/,
    );
  });

  it('names an unknown kind (the server answers 415)', () => {
    for (const [apiVersion, kind] of [
      ['v1', 'Pod'],
      ['apps/v1', 'Secret'],
      ['v1', 'SecretList'],
    ]) {
      assert.throws(
        () => decodeK8sProtobuf(envelope(apiVersion, kind, [])),
        (err: unknown) =>
          err instanceof K8sProtobufUnsupportedKindError &&
          err.kind === kind &&
          err.apiVersion === apiVersion &&
          err.message.includes(`"${kind}"`),
      );
    }
  });

  it('rejects an envelope without kind or apiVersion, or with an encoding it cannot read', () => {
    assert.throws(() => decodeK8sProtobuf(envelope('v1', '', [])), /typeMeta has no kind/);
    assert.throws(() => decodeK8sProtobuf(envelope('', 'Secret', [])), /typeMeta has no apiVersion/);
    const gzipped = Buffer.from([
      0x6b,
      0x38,
      0x73,
      0x00,
      ...len(1, [...len(1, 'v1'), ...len(2, 'Secret')]),
      ...len(3, 'gzip'),
    ]);
    assert.throws(() => decodeK8sProtobuf(gzipped), /contentEncoding "gzip"/);
  });
});
