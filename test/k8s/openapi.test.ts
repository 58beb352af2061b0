import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BUILTIN_KINDS,
  celRulesOf,
  customResourceAdmission,
  definitionName,
  evalJsonPath,
  humanDuration,
  openApiV3GroupVersion,
  openApiV3Root,
  statusInvalid,
  toTable,
  validateCustomResource,
  warningHeader,
  type FieldError,
  type ServedKind,
} from './apiserver/openapi.js';
import { crdSchema } from './testing/schemas.js';

type Json = Record<string, unknown>;

// An SmtpRelay-like CRD version schema, as controller-gen would write it.
const SCHEMA: Json = crdSchema({
  spec: {
    type: 'object',
    required: ['hostname'],
    properties: {
      hostname: { type: 'string', minLength: 1, maxLength: 20, format: 'hostname' },
      replicas: { type: 'integer', format: 'int32', minimum: 0, maximum: 10, default: 1 },
      drainTimeout: { type: 'string', pattern: '^([0-9]+(ms|s|m|h))+$', default: '30s' },
      maxUnavailable: { 'x-kubernetes-int-or-string': true },
      notBefore: { type: 'string', format: 'date-time' },
      note: { type: 'string', nullable: true },
      queue: {
        type: 'object',
        default: {},
        properties: {
          maxMessages: { type: 'integer', default: 1000, minimum: 1 },
          retry: {
            type: 'object',
            default: {},
            properties: { attempts: { type: 'integer', default: 5 } },
          },
        },
      },
      listeners: {
        type: 'array',
        minItems: 1,
        maxItems: 3,
        'x-kubernetes-list-type': 'map',
        'x-kubernetes-list-map-keys': ['name'],
        items: {
          type: 'object',
          required: ['name', 'port'],
          properties: {
            name: { type: 'string' },
            port: { type: 'integer', minimum: 1, maximum: 65535 },
            tls: {
              type: 'object',
              properties: {
                mode: { type: 'string', enum: ['none', 'starttls', 'implicit'], default: 'starttls' },
              },
            },
          },
        },
        'x-kubernetes-validations': [{ rule: 'self.all(l, l.port != 0)', message: 'no port 0' }],
      },
      podTemplate: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true },
      labels: { type: 'object', additionalProperties: { type: 'string' } },
    },
    'x-kubernetes-validations': [
      { rule: 'self.replicas >= 0', fieldPath: '.replicas', reason: 'FieldValueInvalid' },
    ],
  },
  status: {
    type: 'object',
    properties: {
      readyReplicas: { type: 'integer' },
      conditions: {
        type: 'array',
        items: {
          type: 'object',
          properties: { type: { type: 'string' }, status: { type: 'string' }, reason: { type: 'string' } },
        },
      },
    },
  },
});

const SMTP_RELAY: ServedKind = {
  group: 'cartero.io',
  version: 'v1alpha1',
  kind: 'SmtpRelay',
  plural: 'smtprelays',
  namespaced: true,
  schema: SCHEMA,
  subresources: { status: true, scale: true },
  printerColumns: [
    { name: 'Replicas', type: 'integer', jsonPath: '.spec.replicas' },
    { name: 'Ready', type: 'string', jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
    { name: 'Hostname', type: 'string', jsonPath: '.spec.hostname', priority: 1 },
    { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
  ],
};

function relay(spec: Json, extra: Json = {}): Json {
  return {
    apiVersion: 'cartero.io/v1alpha1',
    kind: 'SmtpRelay',
    metadata: { name: 'edge', namespace: 'mail' },
    spec,
    ...extra,
  };
}

const validSpec = (): Json => ({ hostname: 'mx.example.com', listeners: [{ name: 'smtp', port: 25 }] });

function only(errors: FieldError[]): FieldError {
  assert.equal(errors.length, 1, JSON.stringify(errors));
  return errors[0];
}

test('defaults: absent fields, nested objects created by defaults, array items; input untouched', () => {
  const input = relay(validSpec());
  const before = JSON.stringify(input);
  const r = validateCustomResource(SCHEMA, input, 'Strict');
  assert.deepEqual(r.errors, []);
  assert.equal(JSON.stringify(input), before);
  const spec = r.object.spec as Json;
  assert.equal(spec.replicas, 1);
  assert.equal(spec.drainTimeout, '30s');
  assert.deepEqual(spec.queue, { maxMessages: 1000, retry: { attempts: 5 } });
  // tls has no default itself: its mode default applies only where tls exists
  assert.deepEqual(spec.listeners, [{ name: 'smtp', port: 25 }]);
  const r2 = validateCustomResource(
    SCHEMA,
    relay({ ...validSpec(), listeners: [{ name: 'a', port: 25, tls: {} }] }),
    'Strict',
  );
  assert.deepEqual((r2.object.spec as Json).listeners, [{ name: 'a', port: 25, tls: { mode: 'starttls' } }]);
  // explicit values win; a partly given object gets its missing defaults
  const r3 = validateCustomResource(
    SCHEMA,
    relay({ ...validSpec(), replicas: 0, queue: { maxMessages: 5 } }),
    'Strict',
  );
  assert.equal((r3.object.spec as Json).replicas, 0);
  assert.deepEqual((r3.object.spec as Json).queue, { maxMessages: 5, retry: { attempts: 5 } });
});

test('nulls: non-nullable null is defaulted or dropped, nullable null is kept', () => {
  const r = validateCustomResource(
    SCHEMA,
    relay({ ...validSpec(), replicas: null, notBefore: null, note: null }),
    'Strict',
  );
  assert.deepEqual(r.errors, []);
  const spec = r.object.spec as Json;
  assert.equal(spec.replicas, 1);
  assert.equal('notBefore' in spec, false);
  assert.equal(spec.note, null);
});

test('pruning of unknown fields in Strict, Warn and Ignore modes', () => {
  const input = relay(
    {
      ...validSpec(),
      foo: 1,
      listeners: [{ name: 'smtp', port: 25, bogus: true }],
      podTemplate: { anything: { goes: [1] } },
      labels: { a: 'b' },
    },
    { extra: 'x', metadata: { name: 'edge', namespace: 'mail', labels: { x: 'y' }, colour: 'red' } },
  );
  const unknown = ['extra', 'metadata.colour', 'spec.foo', 'spec.listeners[0].bogus'];

  const strict = validateCustomResource(SCHEMA, input, 'Strict');
  assert.deepEqual(strict.errors.map((e) => e.field).sort(), unknown);
  for (const e of strict.errors) {
    assert.equal(e.type, 'FieldValueUnknown');
    assert.equal(e.message, `unknown field "${e.field}"`);
  }
  assert.deepEqual(strict.warnings, []);

  const warn = validateCustomResource(SCHEMA, input, 'Warn');
  assert.deepEqual(warn.errors, []);
  assert.deepEqual(warn.warnings.sort(), unknown.map((u) => `unknown field "${u}"`).sort());

  const ignore = validateCustomResource(SCHEMA, input, 'Ignore');
  assert.deepEqual(ignore.errors, []);
  assert.deepEqual(ignore.warnings, []);

  for (const r of [strict, warn, ignore]) {
    const spec = r.object.spec as Json;
    assert.equal('foo' in spec, false);
    assert.equal('extra' in r.object, false);
    assert.deepEqual((r.object.metadata as Json).labels, { x: 'y' });
    assert.equal('colour' in (r.object.metadata as Json), false);
    assert.deepEqual(spec.listeners, [{ name: 'smtp', port: 25 }]);
    assert.deepEqual(
      spec.podTemplate,
      { anything: { goes: [1] } },
      'preserve-unknown-fields keeps everything',
    );
    assert.deepEqual(spec.labels, { a: 'b' });
    assert.equal(r.object.apiVersion, 'cartero.io/v1alpha1');
  }
});

test('each constraint gives the API server field path and message', () => {
  const cases: [Json, string, string, string][] = [
    [
      { replicas: -1 },
      'spec.replicas',
      'FieldValueInvalid',
      'Invalid value: -1: spec.replicas in body should be greater than or equal to 0',
    ],
    [
      { replicas: 11 },
      'spec.replicas',
      'FieldValueInvalid',
      'Invalid value: 11: spec.replicas in body should be less than or equal to 10',
    ],
    [
      { replicas: 'two' },
      'spec.replicas',
      'FieldValueTypeInvalid',
      'Invalid value: "string": spec.replicas in body must be of type integer: "string"',
    ],
    [
      { replicas: 1.5 },
      'spec.replicas',
      'FieldValueTypeInvalid',
      'Invalid value: "number": spec.replicas in body must be of type integer: "number"',
    ],
    [
      { listeners: [{ name: 'a', port: 25, tls: { mode: 'tls13' } }] },
      'spec.listeners[0].tls.mode',
      'FieldValueNotSupported',
      'Unsupported value: "tls13": supported values: "none", "starttls", "implicit"',
    ],
    [
      { listeners: [{ name: 'a', port: 70000 }] },
      'spec.listeners[0].port',
      'FieldValueInvalid',
      'Invalid value: 70000: spec.listeners[0].port in body should be less than or equal to 65535',
    ],
    [{ listeners: [{ name: 'a' }] }, 'spec.listeners[0].port', 'FieldValueRequired', 'Required value'],
    [
      { drainTimeout: '30 seconds' },
      'spec.drainTimeout',
      'FieldValueInvalid',
      `Invalid value: "30 seconds": spec.drainTimeout in body should match '^([0-9]+(ms|s|m|h))+$'`,
    ],
    [
      { notBefore: 'yesterday' },
      'spec.notBefore',
      'FieldValueInvalid',
      'Invalid value: "yesterday": spec.notBefore in body must be of type date-time: "yesterday"',
    ],
    [
      { hostname: 'a-very-long-hostname.example.com' },
      'spec.hostname',
      'FieldValueTooLong',
      'Too long: may not be more than 20 bytes',
    ],
    [
      { hostname: 'bad_host!' },
      'spec.hostname',
      'FieldValueInvalid',
      'Invalid value: "bad_host!": spec.hostname in body must be of type hostname: "bad_host!"',
    ],
    [
      { listeners: [] },
      'spec.listeners',
      'FieldValueInvalid',
      'Invalid value: []: spec.listeners in body should have at least 1 items',
    ],
    [
      {
        listeners: [
          { name: 'a', port: 1 },
          { name: 'b', port: 2 },
          { name: 'c', port: 3 },
          { name: 'd', port: 4 },
        ],
      },
      'spec.listeners',
      'FieldValueTooMany',
      'Too many: 4: must have at most 3 items',
    ],
    [
      {
        listeners: [
          { name: 'a', port: 1 },
          { name: 'a', port: 2 },
        ],
      },
      'spec.listeners[1]',
      'FieldValueDuplicate',
      'Duplicate value: {"name":"a"}',
    ],
    [
      { maxUnavailable: true },
      'spec.maxUnavailable',
      'FieldValueTypeInvalid',
      'Invalid value: "boolean": spec.maxUnavailable in body must be of type integer,string: "boolean"',
    ],
    [
      { labels: { a: 1 } },
      'spec.labels.a',
      'FieldValueTypeInvalid',
      'Invalid value: "integer": spec.labels.a in body must be of type string: "integer"',
    ],
    [
      { queue: { maxMessages: 0 } },
      'spec.queue.maxMessages',
      'FieldValueInvalid',
      'Invalid value: 0: spec.queue.maxMessages in body should be greater than or equal to 1',
    ],
  ];
  for (const [patch, field, type, message] of cases) {
    const r = validateCustomResource(SCHEMA, relay({ ...validSpec(), ...patch }), 'Strict');
    assert.deepEqual(only(r.errors), { field, type, message }, JSON.stringify(patch));
  }
  // minLength (an empty string is also not a hostname: both are reported, as go-openapi does)
  const empty = validateCustomResource(SCHEMA, relay({ ...validSpec(), hostname: '' }), 'Strict');
  assert.deepEqual(empty.errors[0], {
    field: 'spec.hostname',
    type: 'FieldValueInvalid',
    message: 'Invalid value: "": spec.hostname in body should be at least 1 chars long',
  });
  // the required field at spec level, and int-or-string's two good forms
  const missing = validateCustomResource(SCHEMA, relay({ listeners: [{ name: 'a', port: 1 }] }), 'Strict');
  assert.deepEqual(only(missing.errors), {
    field: 'spec.hostname',
    type: 'FieldValueRequired',
    message: 'Required value',
  });
  for (const v of [1, '25%']) {
    assert.deepEqual(
      validateCustomResource(SCHEMA, relay({ ...validSpec(), maxUnavailable: v }), 'Strict').errors,
      [],
    );
  }
  assert.deepEqual(
    validateCustomResource(
      SCHEMA,
      relay({ ...validSpec(), notBefore: '2026-11-29T10:00:00.123456Z' }),
      'Strict',
    ).errors,
    [],
  );
  // a wrong type on an object stops descent there
  const wrong = validateCustomResource(SCHEMA, relay('not an object' as unknown as Json), 'Strict');
  assert.equal(only(wrong.errors).field, 'spec');
});

test('several errors at once, status subtree validated too', () => {
  const r = validateCustomResource(
    SCHEMA,
    relay({ ...validSpec(), replicas: -1, drainTimeout: 'x' }, { status: { readyReplicas: 'many' } }),
    'Strict',
  );
  assert.deepEqual(r.errors.map((e) => e.field).sort(), [
    'spec.drainTimeout',
    'spec.replicas',
    'status.readyReplicas',
  ]);
});

test('metadata: name presence and format, namespace by scope', () => {
  const noName = validateCustomResource(
    SCHEMA,
    { ...relay(validSpec()), metadata: { namespace: 'mail' } },
    'Strict',
  );
  assert.deepEqual(only(noName.errors), {
    field: 'metadata.name',
    type: 'FieldValueRequired',
    message: 'Required value: name or generateName is required',
  });
  const gen = validateCustomResource(
    SCHEMA,
    { ...relay(validSpec()), metadata: { generateName: 'edge-' } },
    'Strict',
  );
  assert.deepEqual(gen.errors, []);
  const bad = validateCustomResource(
    SCHEMA,
    { ...relay(validSpec()), metadata: { name: 'Edge_1' } },
    'Strict',
  );
  assert.equal(only(bad.errors).field, 'metadata.name');
  assert.match(bad.errors[0].message, /^Invalid value: "Edge_1": a lowercase RFC 1123 subdomain/);
  const noNs = validateCustomResource(SCHEMA, { ...relay(validSpec()), metadata: { name: 'a' } }, 'Strict', {
    namespaced: true,
  });
  assert.deepEqual(only(noNs.errors), {
    field: 'metadata.namespace',
    type: 'FieldValueRequired',
    message: 'Required value',
  });
  const clusterNs = validateCustomResource(SCHEMA, relay(validSpec()), 'Strict', { namespaced: false });
  assert.equal(only(clusterNs.errors).type, 'FieldValueForbidden');
});

test('allOf / anyOf / oneOf / not are validation-only', () => {
  const schema: Json = {
    type: 'object',
    properties: {
      spec: {
        type: 'object',
        properties: { a: { type: 'string' }, b: { type: 'string' }, n: { type: 'integer' } },
        anyOf: [{ required: ['a'] }, { required: ['b'] }],
        not: { properties: { n: { enum: [13] } }, required: ['n'] },
      },
    },
  };
  const ok = validateCustomResource(schema, { metadata: { name: 'x' }, spec: { a: 'x' } }, 'Strict');
  assert.deepEqual(ok.errors, []);
  const none = validateCustomResource(schema, { metadata: { name: 'x' }, spec: { n: 1 } }, 'Strict');
  assert.ok(
    none.errors.some((e) => e.message.endsWith('spec in body must validate at least one schema (anyOf)')),
  );
  const thirteen = validateCustomResource(
    schema,
    { metadata: { name: 'x' }, spec: { a: 'x', n: 13 } },
    'Strict',
  );
  assert.equal(
    only(thirteen.errors).message.endsWith('spec in body must not validate the schema (not)'),
    true,
  );
});

test('CEL rules are listed (validateCustomResource leaves them to cel.ts)', () => {
  const rules = celRulesOf(SCHEMA);
  assert.deepEqual(rules, [
    { path: 'spec', rule: 'self.replicas >= 0', reason: 'FieldValueInvalid', fieldPath: '.replicas' },
    { path: 'spec.listeners', rule: 'self.all(l, l.port != 0)', message: 'no port 0' },
  ]);
});

test('statusInvalid: 422 Status body with causes', () => {
  const r = validateCustomResource(SCHEMA, relay({ ...validSpec(), replicas: -1 }), 'Strict');
  const s = statusInvalid('SmtpRelay.cartero.io', 'x', r.errors);
  assert.deepEqual(s, {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message:
      'SmtpRelay.cartero.io "x" is invalid: spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0',
    reason: 'Invalid',
    details: {
      name: 'x',
      group: 'cartero.io',
      kind: 'SmtpRelay',
      causes: [
        {
          reason: 'FieldValueInvalid',
          message: 'Invalid value: -1: spec.replicas in body should be greater than or equal to 0',
          field: 'spec.replicas',
        },
      ],
    },
    code: 422,
  });
  const two = statusInvalid(SMTP_RELAY, 'x', [
    { field: 'spec.a', type: 'FieldValueRequired', message: 'Required value' },
    { field: 'spec.b', type: 'FieldValueRequired', message: 'Required value' },
  ]);
  assert.equal(
    two.message,
    'SmtpRelay.cartero.io "x" is invalid: [spec.a: Required value, spec.b: Required value]',
  );
  const core = statusInvalid('ConfigMap', 'c', [
    { field: 'data', type: 'FieldValueInvalid', message: 'Invalid value: 1: no' },
  ]);
  assert.equal(core.message, 'ConfigMap "c" is invalid: data: Invalid value: 1: no');
  assert.equal('group' in (core.details as Json), false);
});

test('customResourceAdmission: 400 for unknown fields in Strict, 422 for schema errors, warnings in Warn', () => {
  const unknown = relay({ ...validSpec(), foo: 1 });
  const strict = customResourceAdmission(SMTP_RELAY, unknown, 'Strict');
  assert.equal(strict.ok, false);
  if (!strict.ok) {
    assert.equal(strict.code, 400);
    assert.equal(strict.status.reason, 'BadRequest');
    assert.equal(
      strict.status.message,
      'SmtpRelay in version "v1alpha1" cannot be handled as a SmtpRelay: strict decoding error: unknown field "spec.foo"',
    );
  }
  const warn = customResourceAdmission(SMTP_RELAY, unknown, 'Warn');
  assert.equal(warn.ok, true);
  assert.deepEqual(warn.warnings, ['unknown field "spec.foo"']);
  assert.equal(warningHeader(warn.warnings[0]), '299 - "unknown field \\"spec.foo\\""');
  if (warn.ok) assert.equal((warn.object.spec as Json).replicas, 1);
  const invalid = customResourceAdmission(SMTP_RELAY, relay({ ...validSpec(), replicas: -1 }), 'Warn');
  assert.equal(invalid.ok, false);
  if (!invalid.ok) {
    assert.equal(invalid.code, 422);
    assert.equal(invalid.status.reason, 'Invalid');
    assert.match(
      String(invalid.status.message),
      /^SmtpRelay\.cartero\.io "edge" is invalid: spec\.replicas:/,
    );
  }
});

test('customResourceAdmission works for built-in schemas too (top level modelled, specs open)', () => {
  const cm = BUILTIN_KINDS.find((k) => k.kind === 'ConfigMap') as ServedKind;
  const obj = {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: 'c', namespace: 'mail' },
    data: { a: '1' },
    foo: 1,
  };
  const strict = customResourceAdmission(cm, obj, 'Strict');
  assert.equal(strict.ok, false);
  if (!strict.ok) {
    assert.equal(
      strict.status.message,
      'ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "foo"',
    );
  }
  const pod = BUILTIN_KINDS.find((k) => k.kind === 'Pod') as ServedKind;
  const p = customResourceAdmission(
    pod,
    {
      metadata: { name: 'p', namespace: 'mail' },
      spec: { containers: [{ name: 'c', image: 'i' }], anything: 1 },
    },
    'Strict',
  );
  assert.equal(p.ok, true);
});

// ---------------------------------------------------------------------------------------------

const ALL = [...BUILTIN_KINDS, SMTP_RELAY];

function gvOf(k: ServedKind): string {
  return k.group === '' ? `api/${k.version}` : `apis/${k.group}/${k.version}`;
}

test('openApiV3Root lists every group/version with a hashed serverRelativeURL', () => {
  const root = openApiV3Root(ALL);
  const paths = root.paths as Record<string, { serverRelativeURL: string }>;
  const expected = [...new Set(ALL.map(gvOf))].sort();
  assert.deepEqual(Object.keys(paths).sort(), expected);
  for (const [p, v] of Object.entries(paths)) {
    assert.match(
      v.serverRelativeURL,
      new RegExp(`^/openapi/v3/${p.replace(/\./g, '\\.')}\\?hash=[0-9A-F]{128}$`),
    );
  }
  // the hash follows the document: adding a kind to a group changes it, others stay
  const more = openApiV3Root([...ALL, { ...SMTP_RELAY, kind: 'Tenant', plural: 'tenants' }])
    .paths as typeof paths;
  assert.notEqual(
    more['apis/cartero.io/v1alpha1'].serverRelativeURL,
    paths['apis/cartero.io/v1alpha1'].serverRelativeURL,
  );
  assert.equal(more['api/v1'].serverRelativeURL, paths['api/v1'].serverRelativeURL);
  assert.equal(openApiV3GroupVersion(ALL, 'nope.io', 'v1'), undefined);
});

type Op = Json & { parameters?: Json[]; requestBody?: { content: Json } };

test('group/version documents: schemas carry GVKs, every PATCH carries fieldValidation (what kubectl checks)', () => {
  for (const gv of new Set(ALL.map((k) => `${k.group}|${k.version}`))) {
    const [group, version] = gv.split('|');
    const doc = openApiV3GroupVersion(ALL, group, version) as Json;
    assert.equal(doc.openapi, '3.0.0');
    // round-trips through JSON (that is how it is served)
    assert.deepEqual(JSON.parse(JSON.stringify(doc)), doc);
    const schemas = (doc.components as Json).schemas as Record<string, Json>;
    const paths = doc.paths as Record<string, Record<string, Op>>;
    for (const k of ALL.filter((x) => x.group === group && x.version === version)) {
      const def = definitionName(k.group, k.version, k.kind);
      assert.deepEqual(
        schemas[def]['x-kubernetes-group-version-kind'],
        [{ group, kind: k.kind, version }],
        def,
      );
      assert.deepEqual(schemas[`${def}List`]['x-kubernetes-group-version-kind'], [
        { group, kind: `${k.kind}List`, version },
      ]);
      const props = schemas[def].properties as Json;
      assert.ok(props.metadata && props.apiVersion && props.kind, def);

      // the same search kubectl's query param verifier does
      const gvk = { group, version, kind: k.kind };
      const patches = Object.values(paths)
        .map((p) => p.patch)
        .filter(
          (op): op is Op =>
            !!op && JSON.stringify(op['x-kubernetes-group-version-kind']) === JSON.stringify(gvk),
        );
      assert.ok(patches.length >= 1, `no PATCH for ${def}`);
      for (const op of patches) {
        const names = (op.parameters ?? []).filter((p) => p.in === 'query').map((p) => p.name);
        for (const n of ['fieldValidation', 'dryRun', 'fieldManager', 'force'])
          assert.ok(names.includes(n), `${def} ${n}`);
        assert.equal(op['x-kubernetes-action'], 'patch');
        const content = Object.keys(op.requestBody?.content ?? {});
        assert.ok(content.includes('application/merge-patch+json'));
        assert.ok(content.includes('application/apply-patch+yaml'));
        // not advertised: kubectl then uses its compiled-in types for strategic merge patches
        assert.equal(content.includes('application/strategic-merge-patch+json'), false);
      }
      // every operation names a known action and GVK, every $ref resolves
      for (const item of Object.values(paths)) {
        for (const [verb, op] of Object.entries(item)) {
          if (verb === 'parameters') continue;
          assert.ok(['get', 'put', 'post', 'delete', 'patch'].includes(verb));
          assert.ok(op['x-kubernetes-group-version-kind'], `${verb} without GVK`);
        }
      }
    }
    for (const m of JSON.stringify(doc).matchAll(/"\$ref":"#\/components\/schemas\/([^"]+)"/g)) {
      assert.ok(schemas[m[1]], `dangling $ref ${m[1]}`);
    }
  }
  const apps = openApiV3GroupVersion(ALL, 'apps', 'v1') as Json;
  const appsPaths = apps.paths as Record<string, Record<string, Op>>;
  assert.ok(appsPaths['/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status'].patch);
  const scale = appsPaths['/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}/scale'].patch;
  assert.deepEqual(scale['x-kubernetes-group-version-kind'], {
    group: 'autoscaling',
    version: 'v1',
    kind: 'Scale',
  });
  assert.ok(appsPaths['/apis/apps/v1/deployments'].get, 'list for all namespaces');
  const corePaths = (openApiV3GroupVersion(ALL, '', 'v1') as Json).paths as Json;
  assert.ok(corePaths['/api/v1/namespaces/{name}'], 'cluster-scoped path has no namespace segment');
  const cr = openApiV3GroupVersion(ALL, 'cartero.io', 'v1alpha1') as Json;
  const crSchema = ((cr.components as Json).schemas as Record<string, Json>)['io.cartero.v1alpha1.SmtpRelay'];
  assert.deepEqual((crSchema.properties as Json).spec, SCHEMA.properties && (SCHEMA.properties as Json).spec);
});

test('built-in kinds are all there, with schemas', () => {
  assert.deepEqual(BUILTIN_KINDS.map((k) => k.kind).sort(), [
    'ConfigMap',
    'CustomResourceDefinition',
    'Deployment',
    'EndpointSlice',
    'Endpoints',
    'Event',
    'Lease',
    'Namespace',
    'PersistentVolumeClaim',
    'Pod',
    'PodDisruptionBudget',
    'ReplicaSet',
    'Secret',
    'Service',
    'ServiceAccount',
    'StatefulSet',
  ]);
  for (const k of BUILTIN_KINDS) assert.ok(k.schema, k.kind);
  // a built-in schema is usable for validation too: a Lease's spec is modelled
  const lease = BUILTIN_KINDS.find((k) => k.kind === 'Lease') as ServedKind;
  const r = validateCustomResource(
    lease.schema as Json,
    {
      metadata: { name: 'l' },
      spec: { holderIdentity: 'a', leaseDurationSeconds: 'x', renewTime: '2026-11-29T10:00:00.000001Z' },
    },
    'Strict',
  );
  assert.equal(only(r.errors).field, 'spec.leaseDurationSeconds');
});

// ---------------------------------------------------------------------------------------------

const NOW = Date.parse('2026-11-29T12:00:00Z');
const ago = (s: number): string => new Date(NOW - s * 1000).toISOString();

test('humanDuration matches kubectl', () => {
  const cases: [number, string][] = [
    [-5, '<invalid>'],
    [-1, '0s'],
    [0, '0s'],
    [59, '59s'],
    [119, '119s'],
    [120, '2m'],
    [125, '2m5s'],
    [5 * 60, '5m'],
    [10 * 60 + 5, '10m'],
    [179 * 60, '179m'],
    [3 * 3600, '3h'],
    [3 * 3600 + 25 * 60, '3h25m'],
    [8 * 3600, '8h'],
    [47 * 3600, '47h'],
    [2 * 86400, '2d'],
    [3 * 86400 + 5 * 3600, '3d5h'],
    [30 * 86400, '30d'],
    [800 * 86400, '2y70d'],
    [9 * 365 * 86400, '9y'],
  ];
  for (const [s, want] of cases) assert.equal(humanDuration(s * 1000), want, String(s));
});

test('JSONPath subset', () => {
  const o = {
    metadata: { labels: { 'app.kubernetes.io/name': 'relay' } },
    spec: { x: 3, list: [{ n: 'a' }, { n: 'b' }] },
    status: {
      conditions: [
        { type: 'Progressing', status: 'True' },
        { type: 'Ready', status: 'False', reason: 'Scaling' },
      ],
    },
  };
  assert.deepEqual(evalJsonPath('.spec.x', o), [3]);
  assert.deepEqual(evalJsonPath('{.spec.x}', o), [3]);
  assert.deepEqual(evalJsonPath('.spec.list[1].n', o), ['b']);
  assert.deepEqual(evalJsonPath('.spec.list[-1].n', o), ['b']);
  assert.deepEqual(evalJsonPath('.spec.list[*].n', o), ['a', 'b']);
  assert.deepEqual(evalJsonPath('.status.conditions[?(@.type=="Ready")].status', o), ['False']);
  assert.deepEqual(evalJsonPath(".status.conditions[?(@.type!='Ready')].type", o), ['Progressing']);
  assert.deepEqual(evalJsonPath('.status.conditions[?(@.reason)].type', o), ['Ready']);
  assert.deepEqual(evalJsonPath(".metadata.labels['app.kubernetes.io/name']", o), ['relay']);
  assert.deepEqual(evalJsonPath('.metadata.labels.app\\.kubernetes\\.io/name', o), ['relay']);
  assert.deepEqual(evalJsonPath('.spec.missing.deeper', o), []);
});

test('toTable for a CRD: Name then printer columns, filter and age, includeObject', () => {
  const objs = [
    {
      ...relay({ hostname: 'mx1.example.com', replicas: 3 }),
      metadata: { name: 'a', namespace: 'mail', creationTimestamp: ago(300) },
      status: { conditions: [{ type: 'Ready', status: 'True' }] },
    },
    {
      ...relay({ hostname: 'mx2.example.com' }),
      metadata: { name: 'b', namespace: 'mail', creationTimestamp: ago(90) },
    },
  ];
  const t = toTable(SMTP_RELAY, objs, { now: NOW, resourceVersion: '42' });
  assert.equal(t.kind, 'Table');
  assert.equal(t.apiVersion, 'meta.k8s.io/v1');
  assert.deepEqual(t.metadata, { resourceVersion: '42' });
  const defs = t.columnDefinitions as Json[];
  assert.deepEqual(
    defs.map((d) => [d.name, d.type, d.priority]),
    [
      ['Name', 'string', 0],
      ['Replicas', 'integer', 0],
      ['Ready', 'string', 0],
      ['Hostname', 'string', 1],
      ['Age', 'date', 0],
    ],
  );
  assert.equal(defs[0].format, 'name');
  const rows = t.rows as { cells: unknown[]; object?: Json }[];
  assert.deepEqual(rows[0].cells, ['a', 3, 'True', 'mx1.example.com', '5m']);
  assert.deepEqual(rows[1].cells, ['b', null, null, 'mx2.example.com', '90s']);
  assert.deepEqual(rows[0].object, {
    kind: 'PartialObjectMetadata',
    apiVersion: 'meta.k8s.io/v1',
    metadata: objs[0].metadata,
  });
  const full = toTable(SMTP_RELAY, objs, { now: NOW, includeObject: 'Object' }).rows as { object: Json }[];
  assert.equal(full[0].object, objs[0]);
  const none = toTable(SMTP_RELAY, objs, { now: NOW, includeObject: 'None' }).rows as Json[];
  assert.equal('object' in none[0], false);
  // a CRD without printer columns: Name, Age
  const bare = toTable({ ...SMTP_RELAY, printerColumns: undefined }, objs, { now: NOW });
  assert.deepEqual((bare.rows as { cells: unknown[] }[])[0].cells, ['a', '5m']);
});

test('toTable for built-ins: kubectl-like default columns', () => {
  const kind = (k: string): ServedKind => BUILTIN_KINDS.find((b) => b.kind === k) as ServedKind;
  const cells = (k: string, o: Json): unknown[] =>
    (toTable(kind(k), [o], { now: NOW }).rows as { cells: unknown[] }[])[0].cells;
  const names = (k: string): unknown[] =>
    (toTable(kind(k), [], { now: NOW }).columnDefinitions as Json[]).map((d) => d.name);
  const meta = { name: 'x', namespace: 'mail', creationTimestamp: ago(3 * 86400) };

  assert.deepEqual(names('ConfigMap'), ['Name', 'Data', 'Age']);
  assert.deepEqual(
    cells('ConfigMap', { metadata: meta, data: { a: '1', b: '2' }, binaryData: { c: 'AA==' } }),
    ['x', 3, '3d'],
  );
  assert.deepEqual(names('Namespace'), ['Name', 'Status', 'Age']);
  assert.deepEqual(cells('Namespace', { metadata: meta, status: { phase: 'Terminating' } }), [
    'x',
    'Terminating',
    '3d',
  ]);
  assert.deepEqual(names('Pod').slice(0, 5), ['Name', 'Ready', 'Status', 'Restarts', 'Age']);
  assert.deepEqual(
    cells('Pod', {
      metadata: meta,
      spec: { containers: [{ name: 'relay' }, { name: 'sidecar' }], nodeName: 'local' },
      status: {
        phase: 'Running',
        podIP: '127.0.1.5',
        containerStatuses: [
          { name: 'relay', ready: true, restartCount: 2, state: { running: {} } },
          {
            name: 'sidecar',
            ready: false,
            restartCount: 0,
            state: { waiting: { reason: 'CrashLoopBackOff' } },
          },
        ],
      },
    }),
    ['x', '1/2', 'CrashLoopBackOff', '2', '3d', '127.0.1.5', 'local'],
  );
  assert.deepEqual(names('Deployment').slice(0, 5), ['Name', 'Ready', 'Up-to-date', 'Available', 'Age']);
  assert.deepEqual(
    cells('Deployment', {
      metadata: meta,
      spec: {
        replicas: 3,
        selector: { matchLabels: { app: 'r' } },
        template: { spec: { containers: [{ name: 'c', image: 'i:1' }] } },
      },
      status: { readyReplicas: 2, updatedReplicas: 3, availableReplicas: 2 },
    }),
    ['x', '2/3', 3, 2, '3d', 'c', 'i:1', 'app=r'],
  );
  assert.deepEqual(
    cells('StatefulSet', { metadata: meta, spec: { replicas: 2 }, status: { readyReplicas: 2 } }).slice(0, 3),
    ['x', '2/2', '3d'],
  );
  assert.deepEqual(
    cells('Service', {
      metadata: meta,
      spec: { type: 'ClusterIP', clusterIP: '127.0.2.1', ports: [{ port: 25, protocol: 'TCP' }] },
    }).slice(0, 6),
    ['x', 'ClusterIP', '127.0.2.1', '<none>', '25/TCP', '3d'],
  );
  assert.deepEqual(cells('Secret', { metadata: meta, type: 'helm.sh/release.v1', data: { release: 'x' } }), [
    'x',
    'helm.sh/release.v1',
    1,
    '3d',
  ]);
  assert.deepEqual(cells('Lease', { metadata: meta, spec: { holderIdentity: 'op-1' } }), ['x', 'op-1', '3d']);
  assert.deepEqual(names('Event').slice(0, 5), ['Last Seen', 'Type', 'Reason', 'Object', 'Message']);
  assert.deepEqual(
    cells('Event', {
      metadata: meta,
      type: 'Warning',
      reason: 'Failed',
      involvedObject: { kind: 'Pod', name: 'p' },
      message: 'boom',
      lastTimestamp: ago(30),
    }),
    ['30s', 'Warning', 'Failed', 'pod/p', 'boom', 1, 'x'],
  );
  // every built-in gets a table, with Name somewhere
  for (const k of BUILTIN_KINDS) {
    const t = toTable(k, [{ metadata: meta }], { now: NOW });
    assert.ok(
      (t.columnDefinitions as Json[]).some((d) => d.name === 'Name'),
      k.kind,
    );
    const row = (t.rows as { cells: unknown[] }[])[0];
    assert.equal(row.cells.length, (t.columnDefinitions as Json[]).length, k.kind);
  }
});
