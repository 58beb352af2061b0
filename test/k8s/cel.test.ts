// x-kubernetes-validations (CEL) in the test API server: the project's CRDs with real kubectl, and a
// small test CRD for transition rules, field paths, runtime errors and CRDs whose rules do not compile.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { makeTmpDir, removeTmpDir } from './helpers/tmp.js';
import { CelValidator, crdRuleErrors, escapeProperty } from './apiserver/cel.js';
import { startApiServer, type ApiServer } from './apiserver/server.js';
import { kubectlOf } from './harness.js';
import { apiRequest } from './testing/api.js';
import { crdSchema } from './testing/schemas.js';

type Json = Record<string, unknown>;

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const EXAMPLES = path.join(ROOT, 'examples', 'kubernetes');

interface Cause {
  reason: string;
  message: string;
  field: string;
}

const api = apiRequest<Json>;

const causesOf = (body: Json): Cause[] =>
  ((body.details as { causes?: Cause[] } | undefined)?.causes ?? []) as Cause[];

async function example(file: string): Promise<Json> {
  return parseYaml(await readFile(path.join(EXAMPLES, file), 'utf8')) as Json;
}

/** The example SmtpRelay under another name, changed by `edit`. */
async function relayYaml(name: string, edit: (spec: Json) => void): Promise<string> {
  const relay = await example('30-smtprelay.yaml');
  (relay.metadata as Json).name = name;
  edit(relay.spec as Json);
  return toYaml(relay);
}

describe('CEL rules of the project CRDs, with kubectl', () => {
  let dir: string;
  let server: ApiServer;

  before(async () => {
    dir = await makeTmpDir('cel-kubectl-');
    server = await startApiServer({ dir: path.join(dir, 'api') });
    await kubectlOf(server, dir)(['apply', '-f', path.join(ROOT, 'crds')]);
  });

  after(async () => {
    await server?.stop();
    await removeTmpDir(dir);
  });

  it('accepts the examples in examples/kubernetes', async () => {
    const out = await kubectlOf(server, dir)(['apply', '-f', EXAMPLES]);
    assert.match(out, /ippool\.cartero\.io\/newsletter created/);
    assert.match(out, /smtprelay\.cartero\.io\/outbound created/);
    // and an update that keeps them valid
    const relay = await relayYaml('outbound', (spec) => {
      spec.replicas = 3;
    });
    assert.match(await kubectlOf(server, dir)(['apply', '-f', '-'], relay), /configured/);
  });

  it('refuses an SmtpRelay with a tenant named twice', async () => {
    const yaml = await relayYaml('twice', (spec) => {
      (spec.tenants as Json[])[1].name = 'billing';
    });
    const r = await kubectlOf(server, dir).run(['apply', '-f', '-'], yaml);
    assert.notEqual(r.code, 0);
    assert.match(
      r.stderr,
      /The SmtpRelay "twice" is invalid: spec: Invalid value: "object": a tenant name is used twice/,
    );
    const get = await kubectlOf(server, dir).run(['get', 'smtprelay', 'twice', '-n', 'mail']);
    assert.match(get.stderr, /NotFound/);
  });

  it('refuses routing.default type mx with a smarthost, on create and on update', async () => {
    const yaml = await relayYaml('mx-smarthost', (spec) => {
      (spec.routing as Json).default = { type: 'mx', smarthost: { host: 'smtp.example.net' } };
    });
    const r = await kubectlOf(server, dir).run(['apply', '-f', '-'], yaml);
    assert.notEqual(r.code, 0);
    assert.match(
      r.stderr,
      /spec\.routing\.default: Invalid value: "object": smarthost is required with type smarthost and not allowed with type mx/,
    );
    // an update of the stored example (kubectl patch: a merge patch) is refused the same way
    const p = await kubectlOf(server, dir).run([
      'patch',
      'smtprelay',
      'outbound',
      '-n',
      'mail',
      '--type',
      'merge',
      '-p',
      '{"spec":{"routing":{"default":{"smarthost":{"host":"smtp.example.net"}}}}}',
    ]);
    assert.notEqual(p.code, 0);
    assert.match(p.stderr, /smarthost is required with type smarthost and not allowed with type mx/);
    // type smarthost without one: the defaulted type is what the rule sees
    const noHost = await relayYaml('smarthost-missing', (spec) => {
      (spec.routing as Json).default = { type: 'smarthost' };
    });
    assert.match(
      (await kubectlOf(server, dir).run(['apply', '-f', '-'], noHost)).stderr,
      /smarthost is required/,
    );
  });

  it('bounds the rateLimitStore timeout to 1ms..10s, as the relay does', async () => {
    for (const [timeout, ok] of [
      ['100ms', true],
      ['10s', true],
      ['11s', false],
      ['0ms', false],
    ] as const) {
      const yaml = await relayYaml(`store-${timeout}`, (spec) => {
        spec.rateLimitStore = { address: 'redis.mail.svc:6379', timeout };
      });
      const r = await kubectlOf(server, dir).run(['apply', '-f', '-'], yaml);
      if (ok) assert.equal(r.code, 0, r.stderr);
      else
        assert.match(
          r.stderr,
          /spec\.rateLimitStore\.timeout: Invalid value: "string": must be between 1ms and 10s/,
        );
    }
  });

  it('refuses a tenant whose bounceRate pause is below warn, naming the tenant', async () => {
    const yaml = await relayYaml('bounce', (spec) => {
      (spec.tenants as Json[])[1].bounceRate = { warn: 0.1, pause: 0.05 };
    });
    const r = await kubectlOf(server, dir).run(['apply', '-f', '-'], yaml);
    assert.notEqual(r.code, 0);
    assert.match(
      r.stderr,
      /spec\.tenants\[1\]: Invalid value: "object": bounceRate\.pause must not be below bounceRate\.warn/,
    );
  });

  it('refuses an IpPool that lists an address twice, also with --validate=false and in a server dry run', async () => {
    const pool = await example('20-ippool.yaml');
    (pool.metadata as Json).name = 'dup';
    const addresses = (pool.spec as Json).addresses as Json[];
    addresses[2].ip = addresses[0].ip;
    for (const extra of [[], ['--validate=false'], ['--dry-run=server']]) {
      const r = await kubectlOf(server, dir).run(['apply', ...extra, '-f', '-'], toYaml(pool));
      assert.notEqual(r.code, 0, extra.join(' '));
      assert.match(
        r.stderr,
        /The IpPool "dup" is invalid: spec: Invalid value: "object": an address is listed twice/,
      );
    }
  });

  it('reports every failed rule as a cause of one 422', async () => {
    const relay = await example('30-smtprelay.yaml');
    (relay.metadata as Json).name = 'many';
    const spec = relay.spec as Json;
    (spec.tenants as Json[])[1].name = 'billing';
    (spec.tenants as Json[])[1].bounceRate = { warn: 0.1, pause: 0.05 };
    (spec.listeners as Json[])[1].port = 25;
    const r = await api(server, 'POST', '/apis/cartero.io/v1alpha1/namespaces/mail/smtprelays', relay);
    assert.equal(r.status, 422);
    assert.equal(r.body.reason, 'Invalid');
    assert.deepEqual(causesOf(r.body), [
      {
        reason: 'FieldValueInvalid',
        message: 'Invalid value: "object": a tenant name is used twice',
        field: 'spec',
      },
      {
        reason: 'FieldValueInvalid',
        message: 'Invalid value: "object": a listener port is used twice',
        field: 'spec',
      },
      {
        reason: 'FieldValueInvalid',
        message: 'Invalid value: "object": bounceRate.pause must not be below bounceRate.warn',
        field: 'spec.tenants[1]',
      },
    ]);
    assert.equal(
      r.body.message,
      'SmtpRelay.cartero.io "many" is invalid: [spec: Invalid value: "object": a tenant name is used twice, spec: Invalid value: "object": a listener port is used twice, spec.tenants[1]: Invalid value: "object": bounceRate.pause must not be below bounceRate.warn]',
    );
  });

  it('refuses durations and counts the relay would refuse, and accepts the bounds themselves', async () => {
    // the relay's bounds (relay/src/contract/config-schema.ts): retry 1s..1d, maxAge and delayWarningAfter up to 30d,
    // bounceRate.window 1m..30d, sizes and counts up to their maximum
    const atBounds = await relayYaml('at-bounds', (spec) => {
      const q = spec.queue as Json;
      q.retry = { initial: '1000ms', factor: 10, max: '86400s' };
      q.maxAge = '720h';
      q.delayWarningAfter = '2592000000ms';
      q.maxMessages = 10_000_000;
      const t = (spec.tenants as Json[])[1];
      t.bounceRate = { window: '1m', cooldown: '30d', minVolume: 1_000_000_000 };
      t.maxAge = '43200m';
      t.rateLimits = { perDay: 1_000_000_000 };
      spec.limits = { maxMessageSize: 1_073_741_824, maxRecipients: 10_000, maxConnections: 100_000 };
      spec.delivery = { concurrency: 10_000, perDestinationConcurrency: 10_000 };
    });
    const ok = await kubectlOf(server, dir).run(['apply', '--dry-run=server', '-f', '-'], atBounds);
    assert.equal(ok.code, 0, ok.stderr);

    // the rules (CEL), with values that pass the schema (pattern, maxLength 16)
    const over = await relayYaml('over', (spec) => {
      const q = spec.queue as Json;
      q.retry = { initial: '999ms', max: '2d' };
      q.maxAge = '31d';
      q.delayWarningAfter = '2592000001ms';
      const t = (spec.tenants as Json[])[1];
      t.bounceRate = { window: '59s', cooldown: '999999999999999s' };
      t.maxAge = '99999999999999d';
    });
    const r = await kubectlOf(server, dir).run(['apply', '-f', '-'], over);
    assert.notEqual(r.code, 0);
    for (const want of [
      /spec\.queue\.retry\.initial: Invalid value: "string": must be from 1s to 1d/,
      /spec\.queue\.retry\.max: Invalid value: "string": must be from 1s to 1d/,
      /spec\.queue\.maxAge: Invalid value: "string": must be at most 30d/,
      /spec\.queue\.delayWarningAfter: Invalid value: "string": must be at most 30d/,
      /spec\.tenants\[1\]\.bounceRate\.window: Invalid value: "string": must be from 1m to 30d/,
      /spec\.tenants\[1\]\.bounceRate\.cooldown: Invalid value: "string": must be at most 30d/,
      /spec\.tenants\[1\]\.maxAge: Invalid value: "string": must be at most 30d/,
    ])
      assert.match(r.stderr, want);
    assert.doesNotMatch(r.stderr, /evaluation error|no such overload|overflow/, 'no rule fails at run time');

    // the schema: a maximum, and a duration too long to be one (400 digits)
    const huge = await relayYaml('huge', (spec) => {
      (spec.queue as Json).maxAge = '9'.repeat(400) + 'd';
      spec.limits = { maxMessageSize: 1_073_741_825 };
    });
    const h = await kubectlOf(server, dir).run(['apply', '-f', '-'], huge);
    assert.notEqual(h.code, 0);
    assert.match(h.stderr, /spec\.queue\.maxAge: Too long: may not be (longer|more) than 16/);
    assert.match(
      h.stderr,
      /spec\.limits\.maxMessageSize: Invalid value: 1073741825: spec\.limits\.maxMessageSize in body should be less than or equal to 1073741824/,
    );
  });

  it('enforces CEL whatever fieldValidation says (it only governs unknown fields)', async () => {
    const pool = await example('20-ippool.yaml');
    (pool.metadata as Json).name = 'ignore';
    (pool.spec as Json).mode = 'HostNetwork';
    (pool.spec as Json).surprise = true;
    const r = await api(
      server,
      'POST',
      '/apis/cartero.io/v1alpha1/namespaces/mail/ippools?fieldValidation=Ignore',
      pool,
    );
    assert.equal(r.status, 422);
    assert.deepEqual(causesOf(r.body), [
      {
        reason: 'FieldValueInvalid',
        message: 'Invalid value: "object": mode HostNetwork needs a node on every address',
        field: 'spec',
      },
    ]);
  });
});

// A test CRD: transition rules, rules on list items and map values, reasons, fieldPath,
// messageExpression, a rule that fails at run time and one at the root.
const WIDGET_SCHEMA: Json = crdSchema(
  {
    spec: {
      type: 'object',
      'x-kubernetes-validations': [
        {
          rule: 'self.minReplicas <= self.maxReplicas',
          messageExpression:
            "'minReplicas ' + string(self.minReplicas) + ' is above maxReplicas ' + string(self.maxReplicas)",
          fieldPath: '.minReplicas',
        },
      ],
      properties: {
        name: {
          type: 'string',
          'x-kubernetes-validations': [{ rule: 'self == oldSelf', message: 'name is immutable' }],
        },
        minReplicas: { type: 'integer', default: 1 },
        maxReplicas: { type: 'integer', default: 10 },
        ports: {
          type: 'array',
          'x-kubernetes-list-type': 'map',
          'x-kubernetes-list-map-keys': ['name'],
          items: {
            type: 'object',
            required: ['name', 'port'],
            properties: { name: { type: 'string' }, port: { type: 'integer' } },
            'x-kubernetes-validations': [
              {
                rule: 'self.port >= oldSelf.port',
                message: 'a port may only grow',
                reason: 'FieldValueForbidden',
                fieldPath: '.port',
              },
              {
                rule: "self.port > 1024 || self.name.startsWith('priv-')",
                message: 'low ports need a priv- name',
              },
            ],
          },
        },
        groups: {
          type: 'array',
          items: {
            type: 'object',
            properties: {
              name: { type: 'string' },
              members: {
                type: 'array',
                items: {
                  type: 'string',
                  'x-kubernetes-validations': [
                    { rule: "self.matches('^[a-z]+$')", message: 'members are lower-case words' },
                  ],
                },
                'x-kubernetes-validations': [
                  { rule: 'self.all(m, self.exists_one(n, n == m))', reason: 'FieldValueDuplicate' },
                ],
              },
            },
          },
        },
        labels: {
          type: 'object',
          additionalProperties: {
            type: 'string',
            'x-kubernetes-validations': [
              { rule: 'size(self) <= 5', reason: 'FieldValueRequired', message: 'a short value' },
            ],
          },
        },
        risky: {
          type: 'object',
          properties: { limit: { type: 'integer' }, note: { type: 'string' } },
          'x-kubernetes-validations': [{ rule: 'self.limit > 0' }],
        },
        tier: {
          type: 'string',
          'x-kubernetes-validations': [
            {
              rule: "!oldSelf.hasValue() || oldSelf.value() != 'gold' || self == 'gold'",
              optionalOldSelf: true,
              message: 'gold stays gold',
            },
          ],
        },
        mode: { type: 'string' },
      },
    },
    status: { type: 'object', properties: { phase: { type: 'string' } } },
  },
  {
    'x-kubernetes-validations': [
      { rule: "self.metadata.name.startsWith('w-')", message: 'widget names start with w-' },
    ],
  },
);

function widgetCrd(schema: Json = WIDGET_SCHEMA, name = 'widgets.example.com'): Json {
  const [plural, ...group] = name.split('.');
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name },
    spec: {
      group: group.join('.'),
      scope: 'Namespaced',
      names: { kind: 'Widget', plural, singular: 'widget', listKind: 'WidgetList' },
      versions: [
        {
          name: 'v1',
          served: true,
          storage: true,
          subresources: { status: {} },
          schema: { openAPIV3Schema: schema },
        },
      ],
    },
  };
}

const WIDGETS = '/apis/example.com/v1/namespaces/default/widgets';

function widget(name: string, spec: Json): Json {
  return { apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name }, spec };
}

describe('CEL rules of a test CRD, through the API', () => {
  let dir: string;
  let server: ApiServer;

  const create = (name: string, spec: Json) => api(server, 'POST', WIDGETS, widget(name, spec));
  const patch = (name: string, body: Json, query = '') =>
    api(server, 'PATCH', `${WIDGETS}/${name}${query}`, body, 'application/merge-patch+json');

  before(async () => {
    dir = await makeTmpDir('cel-widgets-');
    server = await startApiServer({ dir: path.join(dir, 'api') });
    const r = await api(
      server,
      'POST',
      '/apis/apiextensions.k8s.io/v1/customresourcedefinitions',
      widgetCrd(),
    );
    assert.equal(r.status, 201, JSON.stringify(r.body));
  });

  after(async () => {
    await server?.stop();
    await removeTmpDir(dir);
  });

  it('transition rule self == oldSelf: an immutable field', async () => {
    assert.equal((await create('w-immutable', { name: 'first' })).status, 201);
    const same = await patch('w-immutable', { spec: { name: 'first', maxReplicas: 5 } });
    assert.equal(same.status, 200, JSON.stringify(same.body));
    const changed = await patch('w-immutable', { spec: { name: 'second' } });
    assert.equal(changed.status, 422);
    assert.deepEqual(causesOf(changed.body), [
      {
        reason: 'FieldValueInvalid',
        message: 'Invalid value: "string": name is immutable',
        field: 'spec.name',
      },
    ]);
    assert.equal(
      changed.body.message,
      'Widget.example.com "w-immutable" is invalid: spec.name: Invalid value: "string": name is immutable',
    );
    // a transition rule does not run where there is no old value: setting the field later is fine
    assert.equal((await create('w-late', {})).status, 201);
    assert.equal((await patch('w-late', { spec: { name: 'set-later' } })).status, 200);
    // nor when the update removes the value (rules run only where the value is present)
    assert.equal((await patch('w-late', { spec: { name: null } })).status, 200);
  });

  it('transition rules on x-kubernetes-list-type map items correlate by key', async () => {
    const ports = [
      { name: 'web', port: 8080 },
      { name: 'api', port: 9000 },
    ];
    assert.equal((await create('w-ports', { ports })).status, 201);
    // reordered and a new item: the new one has no old value, the others are compared by name
    const grown = await patch('w-ports', {
      spec: {
        ports: [
          { name: 'api', port: 9001 },
          { name: 'new', port: 2000 },
          { name: 'web', port: 8080 },
        ],
      },
    });
    assert.equal(grown.status, 200, JSON.stringify(grown.body));
    const shrunk = await patch('w-ports', {
      spec: {
        ports: [
          { name: 'api', port: 9001 },
          { name: 'new', port: 2000 },
          { name: 'web', port: 8000 },
        ],
      },
    });
    assert.equal(shrunk.status, 422);
    assert.deepEqual(causesOf(shrunk.body), [
      {
        reason: 'FieldValueForbidden',
        message: 'Forbidden: a port may only grow',
        field: 'spec.ports[2].port',
      },
    ]);
  });

  it('rules on nested list items and map values report the item path', async () => {
    const r = await create('w-nested', {
      ports: [
        { name: 'web', port: 8080 },
        { name: 'smtp', port: 25 },
      ],
      groups: [
        { name: 'a', members: ['ann', 'bob'] },
        { name: 'b', members: ['carl', 'Dora', 'carl'] },
      ],
      labels: { team: 'mail', owner: 'someone' },
    });
    assert.equal(r.status, 422);
    assert.deepEqual(causesOf(r.body), [
      {
        reason: 'FieldValueInvalid',
        message: 'Invalid value: "object": low ports need a priv- name',
        field: 'spec.ports[1]',
      },
      { reason: 'FieldValueDuplicate', message: 'Duplicate value: "array"', field: 'spec.groups[1].members' },
      {
        reason: 'FieldValueInvalid',
        message: 'Invalid value: "string": members are lower-case words',
        field: 'spec.groups[1].members[1]',
      },
      { reason: 'FieldValueRequired', message: 'Required value: a short value', field: 'spec.labels[owner]' },
    ]);
  });

  it('messageExpression and fieldPath; a root rule names the field <nil>', async () => {
    const r = await create('w-minmax', { minReplicas: 7, maxReplicas: 3 });
    assert.equal(r.status, 422);
    assert.deepEqual(causesOf(r.body), [
      {
        reason: 'FieldValueInvalid',
        message: 'Invalid value: "object": minReplicas 7 is above maxReplicas 3',
        field: 'spec.minReplicas',
      },
    ]);
    const root = await create('plain', {});
    assert.equal(root.status, 422);
    assert.deepEqual(causesOf(root.body), [
      {
        reason: 'FieldValueInvalid',
        message: 'Invalid value: "object": widget names start with w-',
        field: '<nil>',
      },
    ]);
    // defaults apply before the rules: maxReplicas 10
    assert.equal((await create('w-defaults', { minReplicas: 10 })).status, 201);
  });

  it('a rule that fails at run time refuses the object with the evaluation error', async () => {
    const r = await create('w-risky', { risky: { note: 'no limit' } });
    assert.equal(r.status, 422);
    assert.deepEqual(causesOf(r.body), [
      {
        reason: 'FieldValueInvalid',
        message: 'Invalid value: "object": no such key: limit evaluating rule: self.limit > 0',
        field: 'spec.risky',
      },
    ]);
    assert.equal((await create('w-risky', { risky: { limit: 3 } })).status, 201);
    const zero = await patch('w-risky', { spec: { risky: { limit: 0 } } });
    assert.deepEqual(causesOf(zero.body), [
      {
        reason: 'FieldValueInvalid',
        message: 'Invalid value: "object": failed rule: self.limit > 0',
        field: 'spec.risky',
      },
    ]);
  });

  it('optionalOldSelf: the rule runs on create too, with oldSelf an optional', async () => {
    assert.equal((await create('w-tier', { tier: 'gold' })).status, 201);
    const down = await patch('w-tier', { spec: { tier: 'silver' } });
    assert.equal(down.status, 422);
    assert.deepEqual(causesOf(down.body), [
      {
        reason: 'FieldValueInvalid',
        message: 'Invalid value: "string": gold stays gold',
        field: 'spec.tier',
      },
    ]);
  });

  it('status updates see the whole object; dry runs are checked too', async () => {
    assert.equal((await create('w-status', { name: 'x' })).status, 201);
    const st = await api(
      server,
      'PATCH',
      `${WIDGETS}/w-status/status`,
      { status: { phase: 'Ready' } },
      'application/merge-patch+json',
    );
    assert.equal(st.status, 200, JSON.stringify(st.body));
    const dry = await api(
      server,
      'POST',
      `${WIDGETS}?dryRun=All`,
      widget('w-dry', { minReplicas: 4, maxReplicas: 2 }),
    );
    assert.equal(dry.status, 422);
  });

  it('ratcheting: after a rule is added, unchanged values that break it do not block updates', async () => {
    assert.equal((await create('w-legacy', { mode: 'legacy' })).status, 201);
    const crd = await api(
      server,
      'GET',
      '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com',
    );
    const schema = structuredClone(WIDGET_SCHEMA);
    const specProps = (schema.properties as Json).spec as { properties: Json };
    specProps.properties.mode = {
      type: 'string',
      'x-kubernetes-validations': [{ rule: "self != 'legacy'", message: 'mode legacy is gone' }],
    };
    const next = { ...crd.body, spec: widgetCrd(schema).spec as Json };
    const put = await api(
      server,
      'PUT',
      '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com',
      next,
    );
    assert.equal(put.status, 200, JSON.stringify(put.body));
    // mode unchanged: the failure is ratcheted (kube-apiserver sends it as a warning)
    assert.equal((await patch('w-legacy', { spec: { maxReplicas: 4 } })).status, 200);
    // a new object, or a changed value, gets the rule
    const fresh = await create('w-legacy-2', { mode: 'legacy' });
    assert.deepEqual(causesOf(fresh.body), [
      {
        reason: 'FieldValueInvalid',
        message: 'Invalid value: "string": mode legacy is gone',
        field: 'spec.mode',
      },
    ]);
    assert.equal((await patch('w-legacy', { spec: { mode: 'modern' } })).status, 200);
    assert.equal((await patch('w-legacy', { spec: { mode: 'legacy' } })).status, 422);
  });

  it('a CRD whose rule does not compile is refused, naming the rule', async () => {
    const bad = (rule: Json, where: 'spec' | 'item' = 'spec'): Json => {
      const schema = structuredClone(WIDGET_SCHEMA);
      const spec = (schema.properties as Json).spec as Json;
      if (where === 'spec') spec['x-kubernetes-validations'] = [{ rule: 'true' }, rule];
      else {
        const props = spec.properties as Json;
        props.list = {
          type: 'array',
          items: {
            type: 'object',
            properties: { v: { type: 'integer' } },
            'x-kubernetes-validations': [rule],
          },
        };
      }
      return widgetCrd(schema, 'gadgets.example.com');
    };
    const at = 'spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[1]';
    const cases: [Json, string, string, RegExp][] = [
      [
        bad({ rule: 'self.minReplicas ===' }),
        'FieldValueInvalid',
        `${at}.rule`,
        /^Invalid value: apiextensions\.ValidationRule\{Rule:"self\.minReplicas ===", Message:"", .*\}: compilation failed: ERROR: <input>:1:\d+: /,
      ],
      [
        bad({ rule: 'self.replicas > 1' }),
        'FieldValueInvalid',
        `${at}.rule`,
        /compilation failed: ERROR: <input>:1:6: undefined field 'replicas'/,
      ],
      [
        bad({ rule: "self.minReplicas + 'x' == 'y'" }),
        'FieldValueInvalid',
        `${at}.rule`,
        /compilation failed: .*no such overload/,
      ],
      [
        bad({ rule: 'self.minReplicas' }),
        'FieldValueInvalid',
        `${at}.rule`,
        /: cel expression must evaluate to a bool$/,
      ],
      [
        bad({ rule: 'nosuchfunction(self)' }),
        'FieldValueInvalid',
        `${at}.rule`,
        /compilation failed: .*nosuchfunction/,
      ],
      [
        bad({ rule: 'true', reason: 'Nope' }),
        'FieldValueNotSupported',
        `${at}.reason`,
        /^Unsupported value: "Nope": supported values: "FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired"$/,
      ],
      [
        bad({ rule: 'true', fieldPath: '.nosuch' }),
        'FieldValueInvalid',
        `${at}.fieldPath`,
        /^Invalid value: "\.nosuch": fieldPath must be a valid path$/,
      ],
      [
        bad({ rule: 'true', messageExpression: 'self.minReplicas' }),
        'FieldValueInvalid',
        `${at}.messageExpression`,
        /messageExpression must evaluate to a string$/,
      ],
      [
        bad({ rule: 'true', message: 'two\nlines' }),
        'FieldValueInvalid',
        `${at}.message`,
        /message must not contain line breaks$/,
      ],
      [
        bad({ rule: 'true', optionalOldSelf: true }),
        'FieldValueInvalid',
        `${at}.optionalOldSelf`,
        /^Invalid value: true: may not be set if oldSelf is not used in rule$/,
      ],
      [
        bad({ rule: 'self.v == oldSelf.v' }, 'item'),
        'FieldValueInvalid',
        'spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[list].items.x-kubernetes-validations[0].rule',
        /oldSelf cannot be used on the uncorrelatable portion of the schema within spec\.versions\[0\]\.schema\.openAPIV3Schema\.properties\[spec\]\.properties\[list\]$/,
      ],
    ];
    for (const [crd, reason, field, message] of cases) {
      const r = await api(server, 'POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', crd);
      assert.equal(r.status, 422, JSON.stringify(r.body));
      const causes = causesOf(r.body);
      assert.equal(causes.length, 1, JSON.stringify(causes));
      assert.equal(causes[0].reason, reason);
      assert.equal(causes[0].field, field);
      assert.match(causes[0].message, message);
      assert.match(String(r.body.message), /^CustomResourceDefinition "gadgets\.example\.com" is invalid: /);
    }
    const gone = await api(
      server,
      'GET',
      '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.com',
    );
    assert.equal(gone.status, 404);
  });

  it('kubectl shows the CRD error; an update adding a bad rule is refused and the CRD stays as it was', async () => {
    const schema = structuredClone(WIDGET_SCHEMA);
    ((schema.properties as Json).spec as Json)['x-kubernetes-validations'] = [{ rule: 'self.minReplicas >' }];
    const r = await kubectlOf(server, dir).run(['apply', '-f', '-'], toYaml(widgetCrd(schema)));
    assert.notEqual(r.code, 0);
    assert.match(
      r.stderr,
      /The CustomResourceDefinition "widgets\.example\.com" is invalid: spec\.versions\[0\]\.schema\.openAPIV3Schema\.properties\[spec\]\.x-kubernetes-validations\[0\]\.rule: Invalid value: .*compilation failed: ERROR: <input>:1:/,
    );
    // the stored CRD still has its rules: an object breaking them is refused
    assert.equal((await create('w-after', { minReplicas: 3, maxReplicas: 1 })).status, 422);
  });

  it('a rule calling a Kubernetes library function the server lacks is accepted and skipped', async () => {
    const schema = structuredClone(WIDGET_SCHEMA);
    ((schema.properties as Json).spec as Json)['x-kubernetes-validations'] = [
      { rule: "!has(self.name) || quantity(self.name).isGreaterThan(quantity('1Mi'))" },
    ];
    const r = await api(
      server,
      'POST',
      '/apis/apiextensions.k8s.io/v1/customresourcedefinitions',
      widgetCrd(schema, 'doodads.example.com'),
    );
    assert.equal(r.status, 201, JSON.stringify(r.body));
  });
});

describe('CEL evaluation details (CelValidator)', () => {
  const validator = (schema: Json) => {
    const { validator, errors } = CelValidator.compile(schema);
    assert.deepEqual(errors, []);
    return validator;
  };
  const obj = (spec: Json): Json => ({ apiVersion: 'x/v1', kind: 'X', metadata: { name: 'n' }, spec });
  const spec = (properties: Json, rules: Json[]): Json => ({
    type: 'object',
    properties: { spec: { type: 'object', properties, 'x-kubernetes-validations': rules } },
  });

  it('types follow the schema: integer is int, number is double, date is a timestamp, duration a duration', () => {
    const v = validator(
      spec(
        {
          count: { type: 'integer' },
          ratio: { type: 'number' },
          day: { type: 'string', format: 'date' },
          wait: { type: 'string', format: 'duration' },
          any: { 'x-kubernetes-int-or-string': true },
        },
        [
          { rule: 'self.count / 2 == 1', message: 'int division' },
          { rule: 'self.ratio / 2.0 == 0.75', message: 'double' },
          { rule: "self.day < timestamp('2026-01-02T00:00:00Z')", message: 'timestamp' },
          { rule: "self.wait > duration('1m')", message: 'duration' },
          { rule: 'type(self.any) == int || type(self.any) == string', message: 'int-or-string' },
        ],
      ),
    );
    assert.deepEqual(
      v.validate(obj({ count: 3, ratio: 1.5, day: '2026-01-01', wait: '90s', any: 4 })).errors,
      [],
    );
    assert.deepEqual(
      v
        .validate(obj({ count: 3, ratio: 1, day: '2026-01-03', wait: '30s', any: 'x' }))
        .errors.map((e) => e.message),
      [
        'Invalid value: "object": double',
        'Invalid value: "object": timestamp',
        'Invalid value: "object": duration',
      ],
    );
  });

  it('the Kubernetes list, regex and string library functions', () => {
    const v = validator(
      spec({ l: { type: 'array', items: { type: 'integer' } }, s: { type: 'string' } }, [
        { rule: 'self.l.isSorted() && self.l.sum() == 6 && self.l.min() == 1 && self.l.max() == 3' },
        { rule: 'self.l.indexOf(2) == 1 && self.l.lastIndexOf(9) == -1' },
        { rule: "self.s.find('[0-9]+') == '42' && self.s.findAll('[a-z]').size() == 2" },
        {
          rule: "self.s.replace('-', '_') == 'ab_42' && self.s.charAt(0) == 'a' && self.s.reverse() == '24-ba'",
        },
      ]),
    );
    assert.deepEqual(v.validate(obj({ l: [1, 2, 3], s: 'ab-42' })).errors, []);
    assert.equal(v.validate(obj({ l: [3, 2, 1], s: 'ab-42' })).errors.length, 1);
  });

  it('int-or-string values are dyn: a wrong type at run time is an overload error', () => {
    const v = validator(
      spec(
        {
          size: { 'x-kubernetes-int-or-string': true },
          limits: { type: 'object', additionalProperties: { type: 'string' } },
        },
        [
          { rule: 'self.size > 2' },
          {
            rule: "!('cpu' in self.limits) || self.limits['cpu'] != '0'",
            fieldPath: ".limits['cpu']",
            message: 'no zero cpu',
          },
        ],
      ),
    );
    assert.deepEqual(v.validate(obj({ size: 3, limits: {} })).errors, []);
    assert.deepEqual(v.validate(obj({ size: 'big', limits: { cpu: '0' } })).errors, [
      {
        field: 'spec',
        type: 'FieldValueInvalid',
        message:
          'Invalid value: "object": \'no such overload: dyn<string> > int\': call arguments did not match a supported operator, function or macro signature for rule: self.size > 2',
      },
      {
        field: 'spec.limits[cpu]',
        type: 'FieldValueInvalid',
        message: 'Invalid value: "object": no zero cpu',
      },
    ]);
  });

  it('ratcheting: a failure on an unchanged value (also inside a plain list) is a warning', () => {
    const v = validator({
      type: 'object',
      properties: {
        spec: {
          type: 'object',
          properties: {
            note: { type: 'string' },
            rows: {
              type: 'array',
              items: {
                type: 'object',
                properties: {
                  cells: {
                    type: 'array',
                    items: {
                      type: 'string',
                      'x-kubernetes-validations': [{ rule: "self != 'x'", message: 'no x' }],
                    },
                  },
                },
              },
            },
          },
        },
      },
    });
    const old = obj({ note: 'a', rows: [{ cells: ['x', 'y'] }] });
    const same = v.validate(obj({ note: 'b', rows: [{ cells: ['x', 'y'] }] }), old);
    assert.deepEqual(same, {
      errors: [],
      warnings: ['spec.rows[0].cells[0]: Invalid value: "string": no x'],
    });
    const changed = v.validate(obj({ note: 'a', rows: [{ cells: ['x', 'z'] }] }), old);
    assert.deepEqual(
      changed.errors.map((e) => e.field),
      ['spec.rows[0].cells[0]'],
    );
    assert.equal(v.validate(old).errors.length, 1); // create: nothing to ratchet against
  });

  it('property names are escaped as kube-apiserver does', () => {
    assert.equal(escapeProperty('x-y'), 'x__dash__y');
    assert.equal(escapeProperty('a.b/c'), 'a__dot__b__slash__c');
    assert.equal(escapeProperty('namespace'), '__namespace__');
    assert.equal(escapeProperty('a__b'), 'a__underscores__b');
    assert.equal(escapeProperty('1st'), undefined);
    const v = validator(
      spec({ 'max-size': { type: 'integer' }, namespace: { type: 'string' } }, [
        { rule: "self.max__dash__size > 1 && self.__namespace__ == 'ns'" },
      ]),
    );
    assert.deepEqual(v.validate(obj({ 'max-size': 2, namespace: 'ns' })).errors, []);
  });

  it('the project CRDs compile', async () => {
    for (const file of ['smtprelay.yaml', 'ippool.yaml']) {
      const crd = parseYaml(await readFile(path.join(ROOT, 'crds', file), 'utf8')) as Json;
      assert.deepEqual(crdRuleErrors(crd), [], file);
    }
  });
});
