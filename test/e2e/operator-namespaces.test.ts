/** An operator told to watch some namespaces (WATCH_NAMESPACE=a,b) builds fleets there and nowhere else. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import YAML from 'yaml';
import { Operator } from '../../operator/src/controller.js';
import { startApiServer, type ApiServer } from '@cartero/k8s-testbed/apiserver/server.js';
import { waitFor } from '../helpers/poll.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
let dir: string;
let api: ApiServer;
let operator: Operator;

before(async () => {
  dir = await makeTmpDir('operator-namespaces');
  api = await startApiServer({ dir: path.join(dir, 'api') });
  const crdT = api.registry.find('apiextensions.k8s.io', 'v1', 'customresourcedefinitions')!;
  for (const f of ['smtprelay.yaml', 'ippool.yaml'])
    api.store.create(crdT, '', YAML.parse(readFileSync(path.join(ROOT, 'crds', f), 'utf8')));
  const nsT = api.registry.find('', 'v1', 'namespaces')!;
  for (const name of ['a', 'b', 'c'])
    api.store.create(nsT, '', { apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
  const kc = new KubeConfig();
  kc.loadFromFile(api.kubeconfig);
  operator = new Operator({ kc, log: pino({ level: 'silent' }), defaultImage: 'x', namespaces: ['a', 'b'] });
  await operator.start();
});

after(async () => {
  await operator?.stop();
  await api?.stop();
  await removeTmpDir(dir);
});

describe('operator watching some namespaces', () => {
  it('reconciles SmtpRelays in the watched namespaces only', async () => {
    const smrT = api.registry.find('cartero.io', 'v1alpha1', 'smtprelays')!;
    const stsT = api.registry.find('apps', 'v1', 'statefulsets')!;
    for (const ns of ['a', 'b', 'c'])
      api.store.create(smrT, ns, {
        apiVersion: 'cartero.io/v1alpha1',
        kind: 'SmtpRelay',
        metadata: { name: 'relay', namespace: ns },
        spec: { replicas: 0 },
      });
    const has = (ns: string) => api.store.list(stsT, { namespace: ns }).items.length > 0;
    await waitFor(() => has('a') && has('b'), { timeoutMs: 20_000, what: 'StatefulSets in a and b' });
    assert.equal(has('c'), false, 'nothing is built in an unwatched namespace');
    // every list and watch the operator made was namespaced to a or b: it cannot see c at all
    const scopes = new Set(
      api.requests.filter((r) => r.verb === 'list' || r.verb === 'watch').map((r) => r.namespace || '<all>'),
    );
    assert.deepEqual([...scopes].sort(), ['a', 'b']);
    assert.ok(!api.requests.some((r) => r.namespace === 'c'), 'no request touched namespace c');
  });
});
