import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { waitFor } from './helpers/poll.js';
import { makeTmpDir, removeTmpDir } from './helpers/tmp.js';
import { startApiServer, type ApiServer } from './apiserver/server.js';
import { kubectlOf } from './harness.js';
import { apiRequest } from './testing/api.js';

interface Obj {
  apiVersion?: string;
  kind?: string;
  metadata: Record<string, unknown> & { name?: string; resourceVersion?: string; uid?: string };
  [k: string]: unknown;
}

interface WatchEvent {
  type: string;
  object: Obj;
}

const api = apiRequest<Obj & Record<string, unknown>>;

/** Opens a watch and collects its events until closed. */
function openWatch(
  server: ApiServer,
  urlPath: string,
): { events: WatchEvent[]; close(): void; ended: () => boolean } {
  const events: WatchEvent[] = [];
  let buffer = '';
  let done = false;
  const req = http.get(
    server.url + urlPath,
    { headers: { Authorization: `Bearer ${server.token}` } },
    (res) => {
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let nl: number;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          if (line.trim()) events.push(JSON.parse(line) as WatchEvent);
        }
      });
      res.on('end', () => (done = true));
    },
  );
  req.on('error', () => (done = true));
  return { events, close: () => req.destroy(), ended: () => done };
}

describe('test API server with real kubectl', () => {
  let server: ApiServer;
  let dir: string;
  const k = (...args: string[]) => kubectlOf(server, dir)(args);
  const file = async (name: string, text: string) => {
    const p = path.join(dir, name);
    await writeFile(p, text);
    return p;
  };

  before(async () => {
    dir = await makeTmpDir('cartero-apiserver-test-');
    server = await startApiServer({ dir, eventLogSize: 200 });
  });

  after(async () => {
    await server.stop();
    await removeTmpDir(dir);
  });

  it('serves discovery that kubectl understands', async () => {
    const out = await k('api-resources', '-o', 'name');
    for (const r of [
      'configmaps',
      'statefulsets.apps',
      'leases.coordination.k8s.io',
      'customresourcedefinitions.apiextensions.k8s.io',
    ])
      assert.ok(out.split('\n').includes(r), `api-resources lists ${r}`);
    const discovery = server.requests
      .filter((r) => r.verb === '' && r.path.startsWith('/api'))
      .map((r) => r.path.split('?')[0]);
    assert.ok(!discovery.includes('/api/v1'), 'kubectl took aggregated discovery from /api and /apis');
    const version = await k('version', '-o', 'json');
    assert.equal(
      (JSON.parse(version) as { serverVersion: { gitVersion: string } }).serverVersion.gitVersion,
      'v1.32.0',
    );
  });

  it('applies, reads, selects, re-applies and deletes a ConfigMap', async () => {
    await k(
      'apply',
      '--validate=false',
      '-f',
      await file('ns.yaml', 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: cm-test\n'),
    );
    const cm = (data: string) =>
      `apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: cm-test\n  labels: {app: relay, tier: edge}\ndata:\n${data}`;
    const cmFile = await file('cm.yaml', cm('  a: "1"\n  b: "2"\n'));
    assert.match(await k('apply', '--validate=false', '-f', cmFile), /configmap\/settings created/);
    const got = parseYaml(await k('get', 'configmap', 'settings', '-n', 'cm-test', '-o', 'yaml')) as Obj;
    assert.deepEqual(got.data, { a: '1', b: '2' });
    assert.equal(got.metadata.generation, 1);
    assert.match(String(got.metadata.uid), /^[0-9a-f-]{36}$/);
    assert.match(
      await k('get', 'configmaps', '-n', 'cm-test', '-l', 'app=relay,tier in (edge,core)'),
      /settings/,
    );
    assert.match(
      await kubectlOf(
        server,
        dir,
      )(['get', 'configmaps', '-n', 'cm-test', '-l', 'app!=relay']).catch((e) => String(e)),
      /^$/,
    );
    await writeFile(cmFile, cm('  b: "3"\n'));
    assert.match(await k('apply', '--validate=false', '-f', cmFile), /configmap\/settings configured/);
    const again = JSON.parse(await k('get', 'cm', 'settings', '-n', 'cm-test', '-o', 'json')) as Obj;
    assert.deepEqual(again.data, { b: '3' });
    assert.match(await k('delete', '-f', cmFile), /deleted/);
    const gone = await kubectlOf(server, dir).run(['get', 'cm', 'settings', '-n', 'cm-test']);
    assert.notEqual(gone.code, 0);
    assert.match(gone.stderr, /NotFound/);
    const users = new Set(server.requests.filter((r) => r.resource === 'configmaps').map((r) => r.user));
    assert.deepEqual([...users], ['admin']);
    const verbs = new Set(server.requests.filter((r) => r.resource === 'configmaps').map((r) => r.verb));
    for (const v of ['get', 'list', 'create', 'patch', 'delete'])
      assert.ok(verbs.has(v as never), `recorded ${v}`);
  });

  it('serves a CRD, its custom resources, and holds deletion for a finalizer', async () => {
    const crd = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
`;
    await k('apply', '--validate=false', '-f', await file('crd.yaml', crd));
    const status = JSON.parse(await k('get', 'crd', 'widgets.example.com', '-o', 'json')) as Obj;
    const conditions = (status.status as { conditions: { type: string; status: string }[] }).conditions;
    assert.ok(conditions.some((c) => c.type === 'Established' && c.status === 'True'));
    const widget = `apiVersion: example.com/v1
kind: Widget
metadata:
  name: w1
  namespace: default
  finalizers: [example.com/hold]
spec: {size: 3}
status: {ignored: true}
`;
    await k('apply', '--validate=false', '-f', await file('w.yaml', widget));
    assert.match(await k('get', 'widgets'), /w1/);
    const w = JSON.parse(await k('get', 'wd', 'w1', '-o', 'json')) as Obj;
    assert.equal(w.status, undefined, 'status is dropped on create when the status subresource is on');
    await k('delete', 'widget', 'w1', '--wait=false');
    const held = JSON.parse(await k('get', 'widget', 'w1', '-o', 'json')) as Obj;
    assert.ok(held.metadata.deletionTimestamp, 'deletionTimestamp set while a finalizer holds the object');
    await k('patch', 'widget', 'w1', '--type=merge', '-p', '{"metadata":{"finalizers":null}}');
    assert.equal((await k('get', 'widgets', '--ignore-not-found')).trim(), '');
  });

  it('streams watch events and answers a too-old resourceVersion with 410', async () => {
    const base = '/api/v1/namespaces/default/configmaps';
    const list = await api(server, 'GET', base);
    const rv = String((list.body.metadata as { resourceVersion: string }).resourceVersion);
    const w = openWatch(server, `${base}?watch=1&resourceVersion=${rv}`);
    try {
      const created = await api(server, 'POST', base, { metadata: { name: 'watched' }, data: { x: '1' } });
      assert.equal(created.status, 201);
      await api(server, 'PATCH', `${base}/watched`, { data: { x: '2' } }, 'application/merge-patch+json');
      await api(server, 'DELETE', `${base}/watched`);
      await waitFor(() => w.events.length >= 3, { what: 'three watch events' });
      assert.deepEqual(
        w.events.map((e) => e.type),
        ['ADDED', 'MODIFIED', 'DELETED'],
      );
      assert.equal((w.events[1].object.data as { x: string }).x, '2');
    } finally {
      w.close();
    }
    for (let i = 0; i < 210; i++) await api(server, 'POST', base, { metadata: { generateName: 'churn-' } });
    const old = openWatch(server, `${base}?watch=1&resourceVersion=${rv}`);
    try {
      await waitFor(() => old.events.length >= 1, { what: 'the ERROR event' });
      assert.equal(old.events[0].type, 'ERROR');
      assert.equal((old.events[0].object as unknown as { code: number }).code, 410);
    } finally {
      old.close();
    }
    await api(server, 'DELETE', base);
  });

  it('sends initial events ending with an annotated bookmark', async () => {
    await api(server, 'POST', '/api/v1/namespaces/default/configmaps', { metadata: { name: 'initial' } });
    const w = openWatch(
      server,
      '/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=30',
    );
    try {
      await waitFor(() => w.events.some((e) => e.type === 'BOOKMARK'), {
        what: 'the initial-events-end bookmark',
      });
      assert.ok(w.events.some((e) => e.type === 'ADDED' && e.object.metadata.name === 'initial'));
      const bm = w.events.find((e) => e.type === 'BOOKMARK');
      assert.deepEqual(bm?.object.metadata.annotations, { 'k8s.io/initial-events-end': 'true' });
    } finally {
      w.close();
    }
  });

  it('collects garbage whose owners are gone', async () => {
    const owner = await api(server, 'POST', '/api/v1/namespaces/default/configmaps', {
      metadata: { name: 'owner' },
    });
    const ref = { apiVersion: 'v1', kind: 'ConfigMap', name: 'owner', uid: owner.body.metadata.uid };
    await api(server, 'POST', '/api/v1/namespaces/default/secrets', {
      metadata: { name: 'dependent', ownerReferences: [ref] },
      stringData: { k: 'v' },
    });
    const secret = await api(server, 'GET', '/api/v1/namespaces/default/secrets/dependent');
    assert.deepEqual(secret.body.data, { k: Buffer.from('v').toString('base64') });
    await k('delete', 'configmap', 'owner');
    await waitFor(
      async () => (await api(server, 'GET', '/api/v1/namespaces/default/secrets/dependent')).status === 404,
      {
        what: 'the dependent Secret to be collected',
      },
    );
  });

  it('answers a stale update with 409 Conflict and bumps generation only for spec changes', async () => {
    const base = '/apis/apps/v1/namespaces/default/deployments';
    const created = await api(server, 'POST', base, { metadata: { name: 'd1' }, spec: { replicas: 1 } });
    assert.equal(created.body.metadata.generation, 1);
    const stale = created.body;
    const first = await api(server, 'PUT', `${base}/d1`, { ...stale, spec: { replicas: 2 } });
    assert.equal(first.status, 200);
    assert.equal(first.body.metadata.generation, 2);
    const second = await api(server, 'PUT', `${base}/d1`, { ...stale, spec: { replicas: 3 } });
    assert.equal(second.status, 409);
    assert.equal(second.body.kind, 'Status');
    assert.equal(second.body.reason, 'Conflict');
    const st = await api(server, 'PUT', `${base}/d1/status`, { ...first.body, status: { replicas: 2 } });
    assert.equal(st.status, 200);
    assert.equal(st.body.metadata.generation, 2);
    const dup = await api(server, 'POST', base, { metadata: { name: 'd1' } });
    assert.equal(dup.body.reason, 'AlreadyExists');
    const missing = await api(server, 'GET', `${base}/nope`);
    assert.deepEqual([missing.status, missing.body.reason], [404, 'NotFound']);
    await api(server, 'DELETE', `${base}/d1`);
  });

  it('takes protobuf bodies, strategic merge, JSON patch and server-side apply from kubectl', async () => {
    await k('create', 'configmap', 'from-literal', '--from-literal=a=b');
    await k('create', 'secret', 'generic', 'from-literal', '--from-literal=a=b');
    const secret = JSON.parse(await k('get', 'secret', 'from-literal', '-o', 'json')) as Obj;
    assert.deepEqual(secret.data, { a: Buffer.from('b').toString('base64') });
    await k('create', 'namespace', 'from-kubectl');
    await k('create', 'serviceaccount', 'robot', '-n', 'from-kubectl');
    const sa = JSON.parse(
      await k('get', 'serviceaccount', 'robot', '-n', 'from-kubectl', '-o', 'json'),
    ) as Obj;
    assert.equal(sa.metadata.namespace, 'from-kubectl');
    const sts = (replicas: number) => `apiVersion: apps/v1
kind: StatefulSet
metadata: {name: s1}
spec:
  replicas: ${replicas}
  serviceName: s1
  selector: {matchLabels: {app: s1}}
  template:
    metadata: {labels: {app: s1}}
    spec: {containers: [{name: c, image: x, ports: [{containerPort: 2525}]}]}
`;
    const stsFile = await file('sts.yaml', sts(1));
    await k('apply', '--validate=false', '-f', stsFile);
    await writeFile(stsFile, sts(2));
    assert.match(await k('apply', '--validate=false', '-f', stsFile), /configured/);
    await k(
      'patch',
      'sts',
      's1',
      '--type=json',
      '-p',
      '[{"op":"replace","path":"/spec/replicas","value":5}]',
    );
    const patched = JSON.parse(await k('get', 'sts', 's1', '-o', 'json')) as Obj;
    assert.equal((patched.spec as { replicas: number }).replicas, 5);
    assert.equal(patched.metadata.generation, 3);
    const conflict = await kubectlOf(server, dir).run([
      'apply',
      '--validate=false',
      '--server-side',
      '-f',
      stsFile,
    ]);
    assert.notEqual(conflict.code, 0);
    assert.match(conflict.stderr, /conflict with "kubectl-patch".*\.spec\.replicas/);
    await k('apply', '--validate=false', '--server-side', '--force-conflicts', '-f', stsFile);
    assert.equal(await k('get', 'sts', 's1', '-o', 'jsonpath={.spec.replicas}'), '2');
    await k('delete', 'sts', 's1');
  });

  it('serves OpenAPI v3 so kubectl validates by default, checks CRD schemas and prints Tables', async () => {
    const crd = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gd]}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      additionalPrinterColumns:
        - {name: Size, type: integer, jsonPath: .spec.size}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer, minimum: 1, default: 1}
                color: {type: string, enum: [red, blue]}
`;
    await k('apply', '-f', await file('gadget-crd.yaml', crd));
    const gadget = (name: string, spec: string) =>
      `apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: ${name}}\nspec: ${spec}\n`;
    await k('apply', '-f', await file('g1.yaml', gadget('g1', '{color: red}')));
    assert.equal(await k('get', 'gd', 'g1', '-o', 'jsonpath={.spec.size}'), '1', 'defaulted from the schema');
    assert.match(await k('get', 'gadgets'), /NAME\s+SIZE\ng1\s+1\n/);
    const bad = await kubectlOf(server, dir).run([
      'apply',
      '-f',
      await file('g2.yaml', gadget('g2', '{color: green, size: 0}')),
    ]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /spec\.color: Unsupported value: "green"/);
    const unknown = await kubectlOf(server, dir).run([
      'apply',
      '-f',
      await file('g3.yaml', gadget('g3', '{bogus: 1}')),
    ]);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /unknown field "spec\.bogus"/);
    assert.match(await k('get', 'namespaces'), /NAME\s+STATUS\s+AGE\n(.*\n)*default\s+Active/);
    const w = openWatch(server, '/apis/example.com/v1/namespaces/default/gadgets?watch=1');
    await waitFor(() => w.events.length >= 1, { what: 'the initial ADDED event' });
    await k('delete', 'crd', 'gadgets.example.com');
    await waitFor(() => w.ended(), { what: 'the gadgets watch to end with its CRD' });
    assert.deepEqual(
      w.events.map((e) => e.type),
      ['ADDED', 'DELETED'],
    );
    await waitFor(async () => (await kubectlOf(server, dir).run(['get', 'gadgets'])).code !== 0, {
      what: 'gadgets no longer served',
    });
  });

  it('maps bearer tokens to users and refuses unknown ones', async () => {
    const ok = await api(server, 'GET', '/api/v1/namespaces/default/configmaps');
    assert.equal(ok.status, 200);
    assert.equal(server.requests.at(-1)?.user, 'admin');
    const res = await fetch(`${server.url}/api/v1/namespaces`, {
      headers: { Authorization: 'Bearer wrong' },
    });
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { reason: string }).reason, 'Unauthorized');
  });

  it('turns label changes into ADDED and DELETED for a selecting watch', async () => {
    const base = '/api/v1/namespaces/default/configmaps';
    const w = openWatch(server, `${base}?watch=1&labelSelector=pick%3Dyes`);
    try {
      await api(server, 'POST', base, { metadata: { name: 'sel', labels: { pick: 'no' } } });
      await api(
        server,
        'PATCH',
        `${base}/sel`,
        { metadata: { labels: { pick: 'yes' } } },
        'application/merge-patch+json',
      );
      await api(server, 'PATCH', `${base}/sel`, { data: { a: 'b' } }, 'application/merge-patch+json');
      await api(
        server,
        'PATCH',
        `${base}/sel`,
        { metadata: { labels: { pick: 'no' } } },
        'application/merge-patch+json',
      );
      await waitFor(() => w.events.length >= 3, { what: 'three events' });
      assert.deepEqual(
        w.events.map((e) => e.type),
        ['ADDED', 'MODIFIED', 'DELETED'],
      );
    } finally {
      w.close();
    }
    await api(server, 'DELETE', `${base}/sel`);
  });

  it('pages lists with limit and continue', async () => {
    const base = '/api/v1/namespaces/default/serviceaccounts';
    for (const n of ['a', 'b', 'c']) await api(server, 'POST', base, { metadata: { name: n } });
    const page1 = await api(server, 'GET', `${base}?limit=2`);
    const meta = page1.body.metadata as { continue?: string; remainingItemCount?: number };
    assert.equal((page1.body.items as Obj[]).length, 2);
    assert.equal(meta.remainingItemCount, 1);
    const page2 = await api(server, 'GET', `${base}?limit=2&continue=${meta.continue}`);
    assert.deepEqual(
      (page2.body.items as Obj[]).map((o) => o.metadata.name),
      ['c'],
    );
    const byName = await api(server, 'GET', `${base}?fieldSelector=metadata.name%3Db`);
    assert.deepEqual(
      (byName.body.items as Obj[]).map((o) => o.metadata.name),
      ['b'],
    );
  });
});
