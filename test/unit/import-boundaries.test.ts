/**
 * The import boundaries of eslint.config.js bite: the operator reaches the relay only through
 * relay/src/contract, the relay never imports the operator, product code never imports test/ (nor the k8s
 * testbed package), and the rest of the repository imports the testbed (test/k8s) by its package name only.
 * Runs ESLint on snippets as if they were files at those places.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const eslint = new ESLint({ cwd: ROOT });

/** The no-restricted-imports messages ESLint gives `code` as the file `file` (relative to the root). */
async function restricted(file: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: path.join(ROOT, file) });
  const fatal = result.messages.filter((m) => m.fatal);
  assert.deepEqual(fatal, [], 'the snippet parses');
  return result.messages.filter((m) => m.ruleId === 'no-restricted-imports').map((m) => m.message);
}

describe('import boundaries (eslint.config.js)', () => {
  it('the operator importing relay/src/config.js fails the lint', async () => {
    const errors = await restricted(
      'operator/src/boundary-probe.ts',
      "import { resolveConfig } from '../../relay/src/config.js';\nexport const x = resolveConfig;\n",
    );
    assert.equal(errors.length, 1, 'one error');
    assert.match(errors[0], /relay\/src\/contract/);
  });

  it('so do other ways into the relay from the operator, at any depth', async () => {
    for (const [file, spec] of [
      ['operator/src/runtime/probe.ts', '../../../relay/src/duration.js'],
      ['operator/src/probe.ts', '../../relay/src/contract/../config.js'],
      ['operator/src/probe.ts', '../../relay/package.json'],
    ])
      assert.equal((await restricted(file, `import '${spec}';\n`)).length, 1, `${file}: ${spec}`);
  });

  it('the operator may import the contract', async () => {
    assert.deepEqual(
      await restricted(
        'operator/src/runtime/probe.ts',
        "import { parseDuration } from '../../../relay/src/contract/index.js';\nexport const x = parseDuration;\n",
      ),
      [],
    );
    assert.deepEqual(await restricted('operator/src/probe.ts', "import './relay-admin.js';\n"), []);
  });

  it('the relay importing the operator fails the lint', async () => {
    const errors = await restricted('relay/src/probe.ts', "import '../../operator/src/constants.js';\n");
    assert.equal(errors.length, 1);
    assert.match(errors[0], /must not import the operator/);
  });

  it('product code importing test code fails the lint; tests may', async () => {
    for (const file of ['relay/src/probe.ts', 'operator/src/probe.ts', 'relay/src/contract/probe.ts']) {
      const up = '../'.repeat(file.split('/').length - 1);
      const errors = await restricted(file, `import '${up}test/helpers/tmp.js';\n`);
      assert.equal(errors.length, 1, file);
      assert.match(errors[0], /must not import test code/);
    }
    assert.deepEqual(await restricted('test/unit/probe.test.ts', "import '../helpers/tmp.js';\n"), []);
  });

  it('product code importing the k8s testbed package fails the lint', async () => {
    for (const file of ['relay/src/probe.ts', 'operator/src/probe.ts', 'operator/src/runtime/probe.ts']) {
      const errors = await restricted(file, "import '@cartero/k8s-testbed/apiserver/server.js';\n");
      assert.equal(errors.length, 1, file);
      assert.match(errors[0], /must not import the k8s testbed/);
    }
  });

  it('outside test/k8s, the testbed is imported by its package name, not by a path into its folder', async () => {
    for (const [file, spec] of [
      ['test/e2e/probe.test.ts', '../k8s/apiserver/server.js'],
      ['test/operator/probe.test.ts', '../k8s/kubelet/kubelet.js'],
      ['test/helpers/probe.ts', '../k8s/helpers/tmp.js'],
      ['test/unit/probe.test.ts', '../../test/k8s/apiserver/store.js'],
      ['scripts/probe.ts', '../test/k8s/apiserver/server.js'],
      ['bench/probe.ts', '../test/k8s/dist/kubelet/kubelet.js'],
    ]) {
      const errors = await restricted(file, `import '${spec}';\n`);
      assert.equal(errors.length, 1, `${file}: ${spec}`);
      assert.match(errors[0], /@cartero\/k8s-testbed/);
    }
    for (const file of ['test/e2e/probe.test.ts', 'scripts/probe.ts', 'bench/probe.ts'])
      assert.deepEqual(
        await restricted(file, "import '@cartero/k8s-testbed/apiserver/server.js';\n"),
        [],
        file,
      );
    // inside the package, its own relative imports are fine
    assert.deepEqual(await restricted('test/k8s/probe.test.ts', "import './apiserver/server.js';\n"), []);
    assert.deepEqual(await restricted('test/k8s/kubelet/probe.ts', "import '../apiserver/server.js';\n"), []);
  });
});
