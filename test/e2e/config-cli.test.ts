/** The relay's command line: config errors, usage errors and --check, against the real binary. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { runRelayCli, runRelayExpectFailure } from '../helpers/relay.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

describe('cartero-relay command line', () => {
  let dir: string;
  before(async () => {
    dir = await makeTmpDir('cartero-cli-');
  });
  after(async () => {
    await removeTmpDir(dir);
  });

  it('exits 2 and names the field and reason for a port out of range', async () => {
    const r = await runRelayExpectFailure('version: 1\nlisteners:\n  - { name: smtp, port: 70000 }\n');
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr, 'cartero-relay: config error: /listeners/0/port: must be <= 65535\n');
  });

  it('exits 2 for an unknown field and for an unset environment variable', async () => {
    const unknown = await runRelayExpectFailure(
      'version: 1\nlisteners: [{ name: smtp, port: 0 }]\nlistner: oops\n',
    );
    assert.equal(unknown.code, 2, unknown.stderr);
    assert.equal(unknown.stderr, 'cartero-relay: config error: /listner: unknown field\n');

    const env = await runRelayExpectFailure(
      'version: 1\nlisteners: [{ name: smtp, port: 0, address: "${CARTERO_TEST_UNSET_IP}" }]\n',
    );
    assert.equal(env.code, 2, env.stderr);
    assert.match(
      env.stderr,
      /^cartero-relay: config error: \/listeners\/0\/address: refers to environment variable CARTERO_TEST_UNSET_IP, which is not set\n$/,
    );
  });

  it('exits 2 when an account password file is missing', async () => {
    const r = await runRelayExpectFailure(
      'version: 1\nlisteners: [{ name: smtp, port: 0 }]\naccounts: [{ username: alice, passwordFile: alice }]\n',
    );
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^cartero-relay: config error: \/accounts\/0\/passwordFile: cannot read .*alice/);
  });

  it('exits 64 with usage when --config is missing or an option is unknown', async () => {
    const none = await runRelayCli([]);
    assert.equal(none.code, 64);
    assert.match(none.stderr, /--config is required/);
    assert.match(none.stderr, /usage: cartero-relay --config FILE/);

    const unknown = await runRelayCli(['--config', 'x.yaml', '--frobnicate']);
    assert.equal(unknown.code, 64);
    assert.match(unknown.stderr, /usage: cartero-relay/);
  });

  it('--check prints "config ok" and exits 0 without starting anything', async () => {
    const file = path.join(dir, 'ok.yaml');
    // a fixed port is fine here: --check never binds it
    await writeFile(file, 'version: 1\nlisteners: [{ name: smtp, port: 25 }]\n');
    const ok = await runRelayCli(['--config', file, '--check']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, 'config ok\n');

    const badFile = path.join(dir, 'bad.yaml');
    await writeFile(badFile, 'version: 2\nlisteners: [{ name: smtp, port: 25 }]\n');
    const bad = await runRelayCli(['--config', badFile, '--check']);
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr, 'cartero-relay: config error: /version: must be 1\n');
    assert.equal(bad.stdout, '');
  });
});
