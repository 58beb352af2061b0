/**
 * `npm start` (dist/scripts/playground.js): the fleet from examples/kubernetes/ comes up under the
 * operator, a message sent with the printed credentials lands in the capture folder, re-applying an
 * edited example changes the running fleet, and Ctrl-C leaves no process or port behind.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { kubectlFor } from '@cartero/k8s-testbed/harness.js';
import { waitFor } from '../helpers/poll.js';
import { sendMail } from '../helpers/swaks.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
let dir: string;
let child: ChildProcess;
let out = '';

const kubectl = (kubeconfig: string, args: string[], input?: string): Promise<string> =>
  kubectlFor(kubeconfig, path.join(dir, 'cache'))(args, input);

/** Processes whose command line mentions the playground folder. */
function strays(): string[] {
  return execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.includes(dir) && !l.includes(' ps '));
}

before(async () => {
  dir = await makeTmpDir('playground-e2e');
  child = spawn(process.execPath, [path.join(ROOT, 'dist/scripts/playground.js')], {
    cwd: ROOT,
    env: { ...process.env, CARTERO_PLAYGROUND_DIR: dir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (out += c));
});

after(async () => {
  if (child.exitCode === null) {
    // a failed test: stop it as a user would, so its pods go too
    child.kill('SIGINT');
    await waitFor(() => child.exitCode !== null, { timeoutMs: 60_000 }).catch(() => child.kill('SIGKILL'));
  }
  await removeTmpDir(dir);
});

describe('npm start: the Kubernetes playground', { timeout: 240_000 }, () => {
  it('runs the example fleet under the operator and captures a message', async () => {
    await waitFor(() => out.includes('Cartero playground is running') || child.exitCode !== null, {
      timeoutMs: 150_000,
      intervalMs: 200,
      what: 'the playground banner',
    });
    assert.match(out, /Cartero playground is running/, out);
    const m =
      /tenant billing: swaks --server (\S+) --port 5870 --auth PLAIN --auth-user (\S+) --auth-password '([^']+)'/.exec(
        out,
      );
    assert.ok(m, out);
    await sendMail(5870, {
      host: m[1],
      from: 'invoices@billing.example.com',
      to: ['customer@example.org'],
      auth: { user: m[2], pass: m[3] },
    });
    const file = await waitFor(
      () => readdirSync(path.join(dir, 'captured')).find((f) => f.endsWith('.eml')),
      { timeoutMs: 30_000, intervalMs: 200, what: 'a captured message' },
    );
    assert.match(
      readFileSync(path.join(dir, 'captured', file), 'utf8'),
      /From: invoices@billing\.example\.com/,
    );
    // spec.dns is patched (and announced) once per SmtpRelay, not again at every 2 s pass
    const announced = [...out.matchAll(/playground: SmtpRelay (\S+) resolves every domain/g)].map(
      (x) => x[1],
    );
    assert.ok(announced.length > 0, out);
    assert.deepEqual(announced, [...new Set(announced)], out.slice(-3000));
  });

  it('re-applying an edited example changes the running fleet', async () => {
    const kubeconfig = /kubectl --kubeconfig (\S+) get/.exec(out)![1];
    const example = readFileSync(path.join(ROOT, 'examples/kubernetes/30-smtprelay.yaml'), 'utf8');
    await kubectl(kubeconfig, ['apply', '-f', '-'], example.replace('replicas: 2', 'replicas: 3'));
    let last = '';
    await waitFor(
      async () => {
        last = await kubectl(kubeconfig, [
          'get',
          'smr',
          'outbound',
          '-n',
          'mail',
          '-o',
          'jsonpath={.status.readyText}',
        ]);
        return last === '3/3';
      },
      { timeoutMs: 90_000, intervalMs: 500, what: 'three ready relays' },
    ).catch(async (e: Error) => {
      const state = await kubectl(kubeconfig, ['get', 'smr,pods', '-n', 'mail', '-o', 'yaml']).catch(
        () => '',
      );
      throw new Error(`${e.message} (READY ${last})\n${state.slice(0, 6000)}\n${out.slice(-3000)}`);
    });
  });

  it('Ctrl-C stops every process it started and frees its ports', async () => {
    assert.ok(strays().length > 0, 'relay processes were running');
    child.kill('SIGINT');
    await waitFor(() => child.exitCode !== null, {
      timeoutMs: 60_000,
      intervalMs: 200,
      what: 'the playground to exit',
    });
    assert.equal(child.exitCode, 0, out.slice(-2000));
    await waitFor(() => strays().length === 0, { timeoutMs: 10_000, what: 'no process left' });
    await new Promise<void>((resolve, reject) => {
      const s = net.createServer().once('error', reject);
      s.listen(2525, '127.0.4.25', () => s.close(() => resolve()));
    });
  });
});
