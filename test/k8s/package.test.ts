/**
 * The testbed is a package of its own (@cartero/k8s-testbed): it imports nothing outside its folder, and
 * every package it imports is one it declares in its package.json (or a Node built-in). Reads the sources
 * next to the build output (test/k8s/dist/package.test.js → test/k8s).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { builtinModules } from 'node:module';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const PKG = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

interface Manifest {
  name: string;
  private?: boolean;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  exports: Record<string, unknown>;
}

/** The package's TypeScript sources, relative to its folder (no build output, no node_modules). */
async function sources(): Promise<string[]> {
  const entries = await readdir(PKG, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => path.relative(PKG, path.join(e.parentPath, e.name)))
    .filter((f) => !/^(dist|node_modules)(\/|$)/.test(f) && !f.includes('/node_modules/'))
    .sort();
}

/** The module specifiers a source file imports or re-exports (static and dynamic). */
function specifiers(text: string): string[] {
  const found: string[] = [];
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'";]*?\bfrom\s*'([^']+)'/g))
    found.push(m[1]);
  for (const m of text.matchAll(/(?:^|\n)\s*import\s*'([^']+)'/g)) found.push(m[1]);
  for (const m of text.matchAll(/\bimport\(\s*'([^']+)'\s*\)/g)) found.push(m[1]);
  return found;
}

/** `@scope/name/sub/path.js` → `@scope/name`; `name/sub` → `name`. */
const packageName = (spec: string) =>
  spec
    .split('/')
    .slice(0, spec.startsWith('@') ? 2 : 1)
    .join('/');

describe('@cartero/k8s-testbed, the package', () => {
  it('is private and exports its build output only', async () => {
    const pkg = JSON.parse(await readFile(path.join(PKG, 'package.json'), 'utf8')) as Manifest;
    assert.equal(pkg.name, '@cartero/k8s-testbed');
    assert.equal(pkg.private, true);
    for (const [key, target] of Object.entries(pkg.exports)) {
      if (key === './package.json') continue;
      for (const file of Object.values(target as Record<string, string>))
        assert.match(file, /^\.\/dist\//, `${key} → ${file}`);
    }
  });

  it('imports nothing outside its folder and only packages it declares', async () => {
    const pkg = JSON.parse(await readFile(path.join(PKG, 'package.json'), 'utf8')) as Manifest;
    const declared = new Set([
      ...Object.keys(pkg.dependencies ?? {}),
      ...Object.keys(pkg.devDependencies ?? {}),
    ]);
    const builtins = new Set(builtinModules);
    const files = await sources();
    assert.ok(files.includes('apiserver/server.ts') && files.includes('kubelet/kubelet.ts'), files.join(' '));
    const problems: string[] = [];
    for (const file of files) {
      for (const spec of specifiers(await readFile(path.join(PKG, file), 'utf8'))) {
        if (spec.startsWith('.')) {
          const target = path.relative(PKG, path.resolve(PKG, path.dirname(file), spec));
          if (target.startsWith('..') || path.isAbsolute(target) || /^(dist|node_modules)(\/|$)/.test(target))
            problems.push(`${file}: ${spec} leaves the package`);
        } else if (spec.startsWith('node:') || builtins.has(spec)) {
          continue;
        } else if (!declared.has(packageName(spec))) {
          problems.push(`${file}: ${spec} is not a dependency in test/k8s/package.json`);
        }
      }
    }
    assert.deepEqual(problems, []);
  });

  it('finds the imports this test looks for', () => {
    // (the sample's dynamic import is split so that the test above does not find it here)
    assert.deepEqual(
      specifiers(
        "import a from 'x';\nimport { b,\n  c } from '../y.js';\nexport { d } from '@s/z/w.js';\nimport 'side';\nawait imp" +
          "ort('dyn');\nimport type { T } from './t.js';\n",
      ),
      ['x', '../y.js', '@s/z/w.js', './t.js', 'side', 'dyn'],
    );
  });
});
