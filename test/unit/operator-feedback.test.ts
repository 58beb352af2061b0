import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { SmtpRelay } from '../../operator/src/api/types.js';
import { buildRelayConfig, type BuildInput } from '../../operator/src/relay/config-render.js';
import { checkRenderedConfig } from '../../operator/src/relay/config-check.js';
import { buildFeedbackService, FEEDBACK_KEY_FILE, feedbackMx } from '../../operator/src/relay/feedback.js';
import { buildServices, buildStatefulSet, restartHash } from '../../operator/src/relay/workload.js';
import { ADMIN_PORT, FEEDBACK_PORT } from '../../operator/src/constants.js';
import { buildInputFixture, smtpRelayFixture } from '../helpers/smtprelay-fixture.js';

function relay(feedback?: NonNullable<SmtpRelay['spec']>['feedback']): SmtpRelay {
  return smtpRelayFixture({
    tenants: [
      {
        name: 'acme',
        returnPath: { domain: 'bounces.acme.example' },
        feedbackAddress: 'fbl@acme.example',
      },
      { name: 'globex', returnPath: { domain: 'rp.globex.example', prefix: 'b' } },
      { name: 'plain' },
    ],
    ...(feedback ? { feedback } : {}),
  });
}

const input = (r: SmtpRelay): BuildInput =>
  buildInputFixture(r, { replicas: 2, feedbackKey: 'k'.repeat(43) });

describe('operator: feedback loop', () => {
  it('renders the listener, the token key and the tenants return paths; the relay accepts it', () => {
    const r = relay({ mxHost: 'mx.fleet.example', maxMessageSize: 2048 });
    const b = buildRelayConfig(input(r));
    assert.deepEqual(b.problems, []);
    assert.equal(checkRenderedConfig(b.doc, b.secretData), undefined);
    assert.deepEqual(b.doc.feedback, {
      tokenKeyFile: FEEDBACK_KEY_FILE,
      listener: { address: '${POD_IP}', port: FEEDBACK_PORT, maxMessageSize: 2048 },
      // the other pods, through the StatefulSet's headless Service, on the admin port (ADR 020)
      peerLookup: { host: `mail-pods.${r.metadata.namespace}.svc.cluster.local`, port: ADMIN_PORT },
    });
    const headless = buildServices(r).find((s) => s.metadata.name === 'mail-pods')!;
    const spec = headless.spec as { clusterIP: string; ports: { name: string; port: number }[] };
    assert.equal(spec.clusterIP, 'None');
    assert.ok(
      spec.ports.some((p) => p.name === 'admin' && p.port === ADMIN_PORT),
      'the admin port is on it',
    );
    assert.equal(b.secretData[FEEDBACK_KEY_FILE], 'k'.repeat(43));
    const tenants = b.doc.tenants as Record<string, unknown>[];
    assert.deepEqual(tenants[0].returnPath, { domain: 'bounces.acme.example' });
    assert.equal(tenants[0].feedbackAddress, 'fbl@acme.example');
    assert.deepEqual(tenants[1].returnPath, { domain: 'rp.globex.example', prefix: 'b' });
    assert.equal(tenants[2].returnPath, undefined);
  });

  it('renders nothing of it without spec.feedback', () => {
    const b = buildRelayConfig(input(relay()));
    assert.equal(b.doc.feedback, undefined);
    assert.equal(b.secretData[FEEDBACK_KEY_FILE], undefined);
    assert.equal((b.doc.tenants as Record<string, unknown>[])[0].returnPath, undefined);
    assert.equal(buildFeedbackService(relay()), undefined);
    assert.deepEqual(feedbackMx(relay().spec), []);
  });

  it('exposes port 25 on the feedback Service and the listener port on the pods; shows the MX records', () => {
    const r = relay({ mxHost: 'mx.fleet.example' });
    const svc = buildFeedbackService(r)!;
    assert.equal(svc.metadata.name, 'mail-feedback');
    assert.deepEqual((svc.spec as { ports: unknown[] }).ports, [
      { name: 'feedback', port: 25, targetPort: 'feedback', protocol: 'TCP' },
    ]);
    assert.equal((svc.spec as { type: string }).type, 'LoadBalancer');
    const sts = buildStatefulSet({ relay: r, defaultImage: 'x', replicas: 1 }) as unknown as {
      spec: { template: { spec: { containers: { ports: { name: string; containerPort: number }[] }[] } } };
    };
    assert.ok(
      sts.spec.template.spec.containers[0].ports.some(
        (p) => p.name === 'feedback' && p.containerPort === FEEDBACK_PORT,
      ),
    );
    assert.notEqual(restartHash(r), restartHash(relay()), 'adding the listener restarts the pods');
    assert.deepEqual(feedbackMx(r.spec), [
      {
        tenant: 'acme',
        domain: 'bounces.acme.example',
        record: 'bounces.acme.example. IN MX 10 mx.fleet.example.',
      },
      {
        tenant: 'globex',
        domain: 'rp.globex.example',
        record: 'rp.globex.example. IN MX 10 mx.fleet.example.',
      },
    ]);
  });
});
