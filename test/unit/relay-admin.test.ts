/** The operator's reading of a relay's admin answers while the relay still indexes its spool. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { drainFinished, drainPending, knownDepth } from '../../operator/src/relay/admin-client.js';

test('a recovering relay has no known queue depth, even at 0', () => {
  assert.equal(knownDepth({ depth: 0, byTenant: {}, recovering: true }), undefined);
  assert.equal(knownDepth({ depth: 0, byTenant: {}, recovering: false }), 0);
  assert.equal(
    knownDepth({ depth: 4, byTenant: {} }),
    4,
    'relays that do not send the flag are read as before',
  );
});

test('a drain is not finished while the relay indexes its spool', () => {
  assert.equal(drainFinished({ draining: true, queued: 0, done: true, recovering: true }), false);
  assert.equal(drainFinished({ draining: true, queued: 0, done: true, recovering: false }), true);
  assert.equal(drainFinished({ draining: true, queued: 0, done: true }), true);
  assert.equal(drainFinished({ draining: true, queued: 2, done: false }), false);
  assert.match(
    drainPending('fleet-1', { draining: true, queued: 0, done: false, recovering: true }),
    /indexing/,
  );
});
