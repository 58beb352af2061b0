/**
 * The k8s testbed workspace (test/k8s, @cartero/k8s-testbed; docs/adr/011-k8s-testbed-package.md) is wired
 * into the root as its ADR says: a workspace built before the root, excluded from the root's tsconfig but
 * compiled with the same options, and its tests run once by the root's `npm test`.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const json = async <T>(file: string) => JSON.parse(await readFile(path.join(ROOT, file), 'utf8')) as T;

interface Manifest {
  name: string;
  workspaces?: string[];
  scripts: Record<string, string>;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
}
interface TsConfig {
  compilerOptions: Record<string, unknown>;
  include?: string[];
  exclude?: string[];
  references?: unknown[];
}

describe('the k8s testbed workspace', () => {
  it('is the root’s one workspace, built first, and not a root dependency', async () => {
    const root = await json<Manifest>('package.json');
    const pkg = await json<Manifest>('test/k8s/package.json');
    assert.deepEqual(root.workspaces, ['test/k8s']);
    assert.equal(pkg.name, '@cartero/k8s-testbed');
    assert.match(root.scripts.build, /^npm run (--silent )?build (-w|--workspace) test\/k8s && tsc -p \.$/);
    // gen:types compiles the root, which needs the package's declarations
    assert.match(root.scripts['gen:types'], /^npm run build && /);
    assert.ok(!(pkg.name in { ...root.dependencies, ...root.devDependencies }));
    // what only the testbed uses is its dependency, not the root's
    assert.ok(!('@marcbachmann/cel-js' in { ...root.dependencies, ...root.devDependencies }));
    assert.ok('@marcbachmann/cel-js' in (pkg.dependencies ?? {}));
  });

  it('compiles with the root’s options into test/k8s/dist; the root leaves it out', async () => {
    const root = await json<TsConfig>('tsconfig.json');
    const pkg = await json<TsConfig>('test/k8s/tsconfig.json');
    assert.deepEqual(root.exclude, ['test/k8s']);
    assert.equal(root.references, undefined, 'no references: the images run tsc -p . without test/');
    const { composite, declaration, declarationMap, ...same } = pkg.compilerOptions;
    assert.deepEqual([composite, declaration, declarationMap], [true, true, true]);
    assert.deepEqual(same, root.compilerOptions, 'the same compiler options as the root');
    assert.deepEqual(pkg.exclude, ['dist', 'node_modules']);
  });

  it('npm test finds the package’s tests in test/k8s/dist once, and a stale dist/test/k8s not at all', async () => {
    const root = await json<Manifest>('package.json');
    const pkg = await json<Manifest>('test/k8s/package.json');
    assert.match(
      root.scripts.test,
      /\$\(find dist\/test test\/k8s\/dist -name "\*\.test\.js" -not -path "dist\/test\/k8s\/\*" \| sort\)/,
    );
    assert.match(pkg.scripts.test, /\$\(find dist -name "\*\.test\.js" \| sort\)/);
  });
});
