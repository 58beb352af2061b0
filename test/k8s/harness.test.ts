/**
 * The shared test harness: address blocks no two live processes hold at once (a dead holder's block is
 * taken over), kubectl bound to a kubeconfig (stdout, or the exit code and stderr), and a cluster that
 * starts and stops as one.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ADDRESS_LOCKS_DIR, allocateAddresses, startTestCluster } from './harness.js';
import { makeTmpDir, removeTmpDir } from './helpers/tmp.js';

const lockOf = (index: number) => path.join(ADDRESS_LOCKS_DIR, String(index));

describe('test harness', () => {
  it('hands out disjoint blocks in 127.100.0.0-127.199.255.255 and frees them on release', () => {
    const a = allocateAddresses();
    const b = allocateAddresses();
    try {
      assert.notEqual(a.index, b.index);
      for (const blk of [a, b]) {
        const [, second, third] = blk.podPrefix.split('.').map(Number);
        assert.ok(second! >= 100 && second! <= 199, blk.podPrefix);
        assert.equal(blk.serviceRange, `127.${second}.${third! + 1}.0/24`);
        assert.equal(blk.clientPrefix, `127.${second}.${third! + 2}`);
        assert.equal(blk.podAddresses()(), `${blk.podPrefix}.1`);
        assert.ok(existsSync(lockOf(blk.index)));
      }
      const prefixes = new Set([a, b].flatMap((x) => [x.podPrefix, x.serviceBase, x.clientPrefix]));
      assert.equal(prefixes.size, 6, 'no /24 shared');
    } finally {
      a.release();
      b.release();
    }
    assert.ok(!existsSync(lockOf(a.index)) && !existsSync(lockOf(b.index)), 'locks removed');
  });

  it("skips a live process's block and takes over a dead process's", async () => {
    const first = allocateAddresses();
    first.release(); // the block this process tries first
    const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' });
    try {
      writeFileSync(lockOf(first.index), String(holder.pid));
      const other = allocateAddresses();
      other.release();
      assert.notEqual(other.index, first.index, 'a live holder keeps its block');

      const dead = spawnSync(process.execPath, ['-e', '0']).pid;
      writeFileSync(lockOf(first.index), String(dead));
      const taken = allocateAddresses();
      taken.release();
      assert.equal(taken.index, first.index, "a dead holder's block is reused");
    } finally {
      holder.kill('SIGKILL');
    }
  });

  it('starts an API server with kubectl bound to it, reports kubectl failures, and stops', async () => {
    const dir = await makeTmpDir('cartero-harness-');
    const cluster = await startTestCluster({ dir });
    try {
      assert.equal(cluster.kubelet, undefined, 'no kubelet unless asked for');
      await cluster.kubectl(['create', 'namespace', 'harness']);
      assert.match(await cluster.kubectl(['get', 'ns', 'harness', '-o', 'name']), /^namespace\/harness$/m);
      const missing = await cluster.kubectl.run(['get', 'ns', 'nope']);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /not found/);
      await assert.rejects(
        cluster.kubectl(['get', 'ns', 'nope']),
        /kubectl get ns nope failed \(exit 1\): .*not found/s,
      );
      const svc = await cluster.kubectl(
        ['create', '-f', '-', '-o', 'jsonpath={.spec.clusterIP}'],
        'apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: harness}\nspec: {ports: [{port: 80}]}\n',
      );
      assert.ok(svc.startsWith(`${cluster.addresses.serviceBase}.`), `cluster IP ${svc} from the block`);
    } finally {
      await cluster.stop();
      await removeTmpDir(dir);
    }
    assert.ok(!existsSync(lockOf(cluster.addresses.index)), 'addresses released at stop');
  });
});
