/** ConfigWatcher: a change made between the relay's first read of its config and the watch starting. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { loadConfigFile, type RelayConfig } from '../../relay/src/config.js';
import { ConfigWatcher } from '../../relay/src/reload.js';
import { waitFor } from '../helpers/poll.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

let dir: string;

before(async () => {
  dir = await makeTmpDir('cartero-watcher-');
});

after(async () => {
  await removeTmpDir(dir);
});

const yaml = (hostname: string) =>
  `version: 1\nhostname: ${hostname}\nlisteners: [{ name: smtp, port: 2525 }]\nadmin: { port: 0 }\n`;

test('a config changed after it was read but before the watch started is applied at once, not at the poll', async () => {
  const file = path.join(dir, 'relay.yaml');
  await writeFile(file, yaml('first.test'));
  let current: RelayConfig = loadConfigFile(file); // what main.ts reads before it builds the relay
  await writeFile(file, yaml('second.test')); // while the relay starts, before the watch is armed
  const errors: Error[] = [];
  const watcher = new ConfigWatcher({
    file,
    current: () => current,
    apply: (next) => (current = next),
    invalid: (e) => errors.push(e),
    pollMs: 600_000, // the safety net would come far too late for this test
  });
  try {
    watcher.start([]);
    await waitFor(() => current.hostname === 'second.test', { timeoutMs: 3000, what: 'the changed config' });
    // and a change after the start still arrives through the watch
    await writeFile(file, yaml('third.test'));
    await waitFor(() => current.hostname === 'third.test', { timeoutMs: 5000, what: 'a later change' });
    assert.deepEqual(errors, []);
  } finally {
    watcher.stop();
  }
});
