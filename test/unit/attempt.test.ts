/** The pure decisions of one delivery attempt (relay/src/delivery/attempt.ts). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { resolveConfig } from '../../relay/src/config.js';
import {
  damagedCopyRecipients,
  HANDOFF_ROUTE,
  isGone,
  loadError,
  pauseHold,
  pendingDomains,
  planJobs,
} from '../../relay/src/delivery/attempt.js';
import type { ActiveMessage } from '../../relay/src/delivery/types.js';
import {
  initialState,
  SpoolCorruptError,
  type Envelope,
  type SpoolRecipient,
} from '../../relay/src/spool/types.js';

const routing = resolveConfig(
  {
    version: 1,
    hostname: 'relay.attempt.test',
    listeners: [{ name: 'smtp', port: 0 }],
    trustedNetworks: ['127.0.0.0/8'],
    routing: {
      default: { type: 'mx' },
      domains: [{ domain: 'inside.test', host: 'mail.inside.test', port: 25, tls: 'none' }],
    },
    admin: { port: 0 },
  },
  '/nonexistent',
).routing;

function msg(rcpts: SpoolRecipient[], done: number[] = []): ActiveMessage {
  const env = { v: 1, id: 'Q1', tenant: 'acme', rcpts, size: 10 } as Envelope;
  const state = initialState(env, 0);
  for (const i of done) state.rcpts[i].status = 'delivered';
  return { env, state, bodyOffset: 0 };
}

describe('planJobs', () => {
  const m = msg(
    [
      { address: 'a@Example.org' },
      { address: 'b@example.org' },
      { address: 'c@example.org', notify: ['FAILURE'] },
      { address: 'd@inside.test' },
      { address: 'e@example.org' },
      { address: 'f@held.test' },
    ],
    [4],
  );

  it('groups pending recipients by route and DSN parameters, skipping held ones', () => {
    const jobs = planJobs(m, { draining: false, routing, held: (i) => i === 5 });
    assert.deepEqual(
      jobs.map((j) => [j.route.kind, j.route.key, j.rcpts]),
      [
        ['mx', jobs[0].route.key, [0, 1]],
        ['mx', jobs[0].route.key, [2]],
        ['domain', jobs[2].route.key, [3]],
      ],
    );
    assert.ok(jobs.every((j) => j.msg === m && !j.handoff));
  });

  it('gives each recipient its own job for return-path tagging (one token per recipient)', () => {
    const jobs = planJobs(m, { draining: false, routing, held: (i) => i === 5, perRecipient: true });
    assert.deepEqual(
      jobs.map((j) => j.rcpts),
      [[0], [1], [2], [3]],
    );
  });

  it('sends every pending recipient to the peers in one job while draining', () => {
    const jobs = planJobs(m, { draining: true, routing, held: () => true });
    assert.deepEqual(jobs, [{ handoff: true, msg: m, route: HANDOFF_ROUTE, rcpts: [0, 1, 2, 3, 5] }]);
  });

  it('makes no job when nothing is pending', () => {
    assert.deepEqual(
      planJobs(msg([{ address: 'a@x.test' }], [0]), { draining: false, routing, held: () => false }),
      [],
    );
  });

  it('lists the pending domains once each, lower-cased', () => {
    assert.deepEqual(pendingDomains(m), ['example.org', 'inside.test', 'held.test']);
  });
});

describe('pauseHold', () => {
  const now = 1_000_000;
  it('holds a paused tenant until its pause ends, looking again at least every minute', () => {
    assert.equal(pauseHold({ state: 'active' }, now), undefined);
    assert.equal(pauseHold({ state: 'warning' }, now), undefined);
    assert.equal(pauseHold({ state: 'paused' }, now), now + 60_000);
    assert.equal(pauseHold({ state: 'paused', pausedUntil: now + 5000 }, now), now + 5000);
    assert.equal(pauseHold({ state: 'paused', pausedUntil: now - 5000 }, now), now + 1);
  });
});

describe('load failures', () => {
  const errno = (code: string) => Object.assign(new Error(`${code}: x`), { code });
  it('a removed file is gone; a parse failure is damage; an errno passes', () => {
    assert.equal(isGone(errno('ENOENT')), true);
    assert.equal(isGone(errno('EIO')), false);
    const parse = loadError(new Error('queue file Q1: unparseable envelope'), 'Q1');
    assert.ok(parse instanceof SpoolCorruptError);
    assert.match(parse.message, /unparseable envelope/);
    assert.doesNotMatch(parse.message, /queue file Q1: queue file/);
    assert.ok(loadError(new SpoolCorruptError('Q1', 'empty file'), 'Q1') instanceof SpoolCorruptError);
    const eio = errno('EIO');
    assert.equal(loadError(eio, 'Q1'), eio);
  });
});

describe('damagedCopyRecipients', () => {
  it('tells the pending recipients that want failure notices, with 5.3.0', () => {
    const m = msg(
      [
        { address: 'a@x.test' },
        { address: 'b@x.test', notify: ['NEVER'] },
        { address: 'c@x.test', orcpt: 'rfc822;c@y.test' },
      ],
      [0],
    );
    const r = damagedCopyRecipients(m, 5000);
    assert.deepEqual(
      r.map((x) => [x.address, x.orcpt, x.action, x.status]),
      [['c@x.test', 'rfc822;c@y.test', 'failed', '5.3.0']],
    );
    assert.match(r[0].diagnostic!, /damaged on the relay's disk/);
    assert.deepEqual((r[0] as { lastAttemptAt?: Date }).lastAttemptAt, new Date(5000));
  });
});
