/**
 * The container images, without a Docker engine: what the Dockerfiles say (pinned Node 22 slim base,
 * multi-stage, `npm ci` + build in the builder, `npm ci --omit=dev` in the final stage, a numeric non-root
 * user matching the pods' runAsUser, unprivileged ports, an exec-form `node` entrypoint, no build tools),
 * and that each image builds from exactly what its Dockerfile copies: the build context is assembled from
 * the COPY lines (no list kept here), the build step runs there, and the program starts from the final
 * stage with the production packages only (the lockfile's packages not marked dev, what
 * `npm ci --omit=dev` installs).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

interface Instruction {
  op: string;
  args: string;
}
interface Stage {
  from: string;
  name?: string;
  ins: Instruction[];
}

/** Parses a Dockerfile into stages (continuation lines joined, comments dropped). */
function parseDockerfile(text: string): { args: Record<string, string>; stages: Stage[] } {
  const lines = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const args: Record<string, string> = {};
  const stages: Stage[] = [];
  for (const line of lines) {
    const m = /^(\S+)\s+(.*)$/.exec(line);
    assert.ok(m, `Dockerfile line: ${line}`);
    const op = m[1].toUpperCase();
    const rest = m[2].replace(/\s+/g, ' ');
    if (op === 'FROM') {
      const [image, as, name] = rest.split(' ');
      const from = image.replace(/^\$\{(\w+)\}$/, (_, a: string) => args[a] ?? image);
      stages.push({ from, ...(as?.toUpperCase() === 'AS' ? { name } : {}), ins: [] });
    } else if (op === 'ARG' && stages.length === 0) {
      const [k, v] = rest.split('=');
      args[k] = v;
    } else {
      assert.ok(stages.length, `${op} before FROM`);
      stages[stages.length - 1].ins.push({ op, args: rest });
    }
  }
  return { args, stages };
}

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

function run(
  cmd: string,
  args: string[],
  opts: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs?: number },
): Promise<{ code: number; out: string }> {
  return new Promise((resolve) =>
    execFile(
      cmd,
      args,
      { cwd: opts.cwd, env: opts.env, timeout: opts.timeoutMs ?? 30_000 },
      (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` }),
    ),
  );
}

/** Node flags for a copy whose node_modules are links: packages resolve through them, so a production
 * package reaching for a dev-only one fails as it would in the image. */
const PRESERVE_SYMLINKS = ['--preserve-symlinks', '--preserve-symlinks-main'];

/**
 * Assembles an image the way `docker build` would, without an engine: each stage gets a folder standing for
 * its filesystem root; COPY takes from the repository (the build context) or, with --from, from an earlier
 * stage's folder; WORKDIR moves; RUN runs the step in the stage's working folder. `npm ci` cannot run here:
 * it becomes a link to the repository's node_modules (every package) or, with --omit=dev, links to the
 * production packages `prod` only; it needs package.json and package-lock.json copied first, as npm does.
 * Any other RUN runs as written (the build stage's `npx tsc -p .`), except in the final stage, whose RUN
 * only changes the system (users, npm removed) after its `npm ci`. Returns the build step's result, the
 * final stage's working folder and its ENTRYPOINT.
 */
async function buildImage(
  dockerfile: string,
  dir: string,
  prod: string[],
): Promise<{ build: { code: number; out: string }; workdir: string; entrypoint: string[] }> {
  const { stages } = parseDockerfile(dockerfile);
  const roots = new Map<string, string>();
  let build = { code: 0, out: '' };
  let workdir = '/';
  let entrypoint: string[] = [];
  for (const [n, stage] of stages.entries()) {
    const root = path.join(dir, `stage-${n}`);
    await mkdir(root, { recursive: true });
    if (stage.name) roots.set(stage.name, root);
    const final = n === stages.length - 1;
    let cwd = '/';
    const at = (p: string, base = root) => path.join(base, path.posix.resolve(cwd, p));
    for (const { op, args } of stage.ins) {
      if (op === 'WORKDIR') {
        cwd = path.posix.resolve(cwd, args);
        await mkdir(at('.'), { recursive: true });
      } else if (op === 'COPY') {
        const words = args.split(' ');
        const from = words[0].startsWith('--from=') ? words.shift()!.slice('--from='.length) : undefined;
        assert.ok(
          words.every((w) => !w.startsWith('--')),
          `COPY flags other than --from: ${args}`,
        );
        const dest = words.pop()!;
        assert.ok(words.length >= 1, `COPY needs a source: ${args}`);
        const intoDir = words.length > 1 || dest.endsWith('/') || dest === '.';
        for (const src of words) {
          assert.ok(!/[*?[]/.test(src), `COPY source without wildcards: ${src}`);
          let source: string;
          if (from !== undefined) {
            const other = roots.get(from);
            assert.ok(other, `COPY --from=${from}: no such stage`);
            source = path.join(other, path.posix.resolve('/', src));
          } else {
            assert.ok(!src.startsWith('/') && !src.split('/').includes('..'), `inside the context: ${src}`);
            source = path.join(ROOT, src);
          }
          assert.ok(await exists(source), `COPY source ${src} exists`);
          const isDir = (await stat(source)).isDirectory();
          const target = at(intoDir && !isDir ? path.posix.join(dest, path.posix.basename(src)) : dest);
          await mkdir(path.dirname(target), { recursive: true });
          await cp(source, target, { recursive: true });
        }
      } else if (op === 'RUN') {
        const here = at('.');
        if (/^npm ci\b/.test(args)) {
          for (const f of ['package.json', 'package-lock.json'])
            assert.ok(await exists(path.join(here, f)), `npm ci needs ${f} in ${cwd}`);
          if (/^npm ci [^&]*--omit=dev/.test(args)) {
            for (const name of prod) {
              const to = path.join(here, 'node_modules', name);
              await mkdir(path.dirname(to), { recursive: true });
              await symlink(path.join(ROOT, 'node_modules', name), to, 'dir');
            }
          } else {
            await symlink(path.join(ROOT, 'node_modules'), path.join(here, 'node_modules'), 'dir');
          }
        } else {
          assert.ok(!final, `the final stage runs only npm ci and system changes: ${args}`);
          const r = await run('sh', ['-c', args], {
            cwd: here,
            env: { PATH: process.env.PATH, HOME: dir },
            timeoutMs: 180_000,
          });
          if (r.code !== 0 && build.code === 0) build = { code: r.code, out: `RUN ${args}\n${r.out}` };
        }
      } else if (op === 'ENTRYPOINT' && final) {
        entrypoint = JSON.parse(args) as string[];
      }
    }
    if (final) workdir = at('.');
  }
  return { build, workdir, entrypoint };
}

const IMAGES = [
  { app: 'operator', ports: [8080] },
  { app: 'relay', ports: [2525, 5870, 9025] },
] as const;

describe('Dockerfiles', () => {
  for (const { app, ports } of IMAGES) {
    it(`${app}/Dockerfile: pinned Node 22 slim, multi-stage, production install, non-root, exec-form node`, async () => {
      const { stages } = parseDockerfile(await readFile(path.join(ROOT, app, 'Dockerfile'), 'utf8'));
      assert.ok(stages.length >= 2, 'multi-stage');
      for (const s of stages)
        assert.match(
          s.from,
          /^node:22\.\d+\.\d+-(bookworm-)?slim$/,
          `base pinned to a Node 22 release: ${s.from}`,
        );
      const [build, final] = [stages[0], stages[stages.length - 1]];
      const runs = (s: Stage) => s.ins.filter((i) => i.op === 'RUN').map((i) => i.args);
      assert.ok(
        runs(build).some((r) => /^npm ci\b/.test(r) && !r.includes('--omit')),
        'the builder installs every dependency',
      );
      assert.ok(
        runs(build).some((r) => /\btsc -p \./.test(r)),
        'the builder compiles',
      );
      const finalRun = runs(final).join(' && ');
      assert.match(finalRun, /npm ci --omit=dev/, 'the final stage installs production dependencies only');
      assert.match(finalRun, /rm -rf [^&]*\/usr\/local\/lib\/node_modules\/npm/, 'npm is removed afterwards');
      assert.doesNotMatch(
        finalRun,
        /apt-get|build-essential|python|make|gcc|tsc/,
        'no build tools installed',
      );
      // what the final stage takes from the builder: compiled code only (the operator's includes the
      // relay contract it imports, in dist/relay)
      const fromBuild = final.ins.filter((i) => i.op === 'COPY' && i.args.startsWith(`--from=${build.name}`));
      assert.ok(fromBuild.some((i) => i.args === `--from=${build.name} /src/dist/${app} ./dist/${app}`));
      for (const i of fromBuild) assert.match(i.args, /^--from=\S+ \/src\/dist\/(\w+) \.\/dist\/\1$/);
      // files the builder copies from the build context exist
      for (const c of build.ins.filter((i) => i.op === 'COPY')) {
        const srcs = c.args.split(' ').slice(0, -1);
        for (const s of srcs) assert.ok(await exists(path.join(ROOT, s)), `COPY source ${s} exists`);
      }
      const user = final.ins.filter((i) => i.op === 'USER').pop();
      assert.equal(user?.args, '10001:10001', 'numeric non-root user (the pods run as 10001)');
      const exposed = final.ins
        .filter((i) => i.op === 'EXPOSE')
        .flatMap((i) => i.args.split(' '))
        .map(Number);
      assert.deepEqual(exposed, [...ports]);
      assert.ok(
        exposed.every((p) => p >= 1024),
        'unprivileged ports',
      );
      const entry = final.ins.filter((i) => i.op === 'ENTRYPOINT').pop();
      assert.ok(entry, 'ENTRYPOINT');
      const argv = JSON.parse(entry.args) as string[];
      assert.deepEqual(
        argv,
        ['node', `dist/${app}/src/main.js`],
        'exec form: node is PID 1 and gets SIGTERM',
      );
      assert.ok(await exists(path.join(ROOT, argv[1])), `${argv[1]} is in the build output`);
      const src = await readFile(path.join(ROOT, app, 'src', 'main.ts'), 'utf8');
      assert.match(
        src,
        /process\.on\('SIGTERM'/,
        'the program handles SIGTERM itself (PID 1 has no default action)',
      );
    });
  }

  it('the runtime user matches the chart and the relay pods', async () => {
    const values = YAML.parse(await readFile(path.join(ROOT, 'charts/cartero/values.yaml'), 'utf8')) as {
      podSecurityContext: { runAsUser: number; runAsGroup: number };
    };
    assert.equal(values.podSecurityContext.runAsUser, 10001);
    assert.equal(values.podSecurityContext.runAsGroup, 10001);
    const workload = await readFile(path.join(ROOT, 'operator/src/relay/workload.ts'), 'utf8');
    assert.match(workload, /runAsUser: 10001/);
  });

  it('.dockerignore keeps node_modules, dist and .tmp out of the build context', async () => {
    const lines = (await readFile(path.join(ROOT, '.dockerignore'), 'utf8')).split('\n').map((l) => l.trim());
    for (const p of ['**/node_modules', 'dist', '.tmp', '.git']) assert.ok(lines.includes(p), p);
    for (const needed of ['package.json', 'package-lock.json', 'tsconfig.json', 'operator', 'relay'])
      assert.ok(!lines.includes(needed), `${needed} stays in the context`);
  });

  it('each image builds from what its Dockerfile copies, and the result starts', async () => {
    const lock = JSON.parse(await readFile(path.join(ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { dev?: boolean; devOptional?: boolean }>;
    };
    const pkg = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
      devDependencies: Record<string, string>;
    };
    // what `npm ci --omit=dev` installs at the top level of node_modules
    const prod = Object.entries(lock.packages)
      .filter(([k]) => k.startsWith('node_modules/') && !k.slice(13).includes('node_modules/'))
      .filter(([, v]) => !v.dev && !v.devOptional)
      .map(([k]) => k.slice('node_modules/'.length));
    for (const d of Object.keys(pkg.dependencies)) assert.ok(prod.includes(d), `${d} is installed`);
    // the build and lint tools stay out (a dependency may still need a dev dependency's package: @types/node)
    for (const d of ['typescript', 'eslint', 'prettier', 'typescript-eslint', 'json-schema-to-typescript'])
      assert.ok(d in pkg.devDependencies && !prod.includes(d), `${d} is not installed`);

    const dir = await makeTmpDir('cartero-image-');
    try {
      for (const { app } of IMAGES) {
        const text = await readFile(path.join(ROOT, app, 'Dockerfile'), 'utf8');
        const image = await buildImage(text, path.join(dir, app), prod);
        assert.equal(image.build.code, 0, `${app}: the build step fails:\n${image.build.out}`);
        const start = (args: string[], env: NodeJS.ProcessEnv = {}) =>
          run(process.execPath, [...PRESERVE_SYMLINKS, ...image.entrypoint.slice(1), ...args], {
            cwd: image.workdir,
            env: { PATH: process.env.PATH, HOME: image.workdir, NODE_ENV: 'production', ...env },
          });
        if (app === 'relay') {
          const help = await start(['--help']);
          assert.equal(help.code, 0, help.out);
          assert.match(help.out, /usage: cartero-relay/);
          // the example config, laid out as examples/standalone expects (its secret under .tmp/standalone)
          const example = path.join(dir, 'example');
          await mkdir(path.join(example, 'examples/standalone'), { recursive: true });
          await mkdir(path.join(example, '.tmp/standalone/secrets'), { recursive: true });
          await cp(
            path.join(ROOT, 'examples/standalone/relay.yaml'),
            path.join(example, 'examples/standalone/relay.yaml'),
          );
          await writeFile(path.join(example, '.tmp/standalone/secrets/app.password'), 'pw\n');
          const check = await start([
            '--config',
            path.join(example, 'examples/standalone/relay.yaml'),
            '--check',
          ]);
          assert.equal(check.code, 0, check.out);
          assert.match(check.out, /config ok/);
        } else {
          // The operator has no --help, and --uninstall-check needs an API server: against one that is
          // not there it fails with its own message, after every module loaded (not ERR_MODULE_NOT_FOUND).
          const kubeconfig = path.join(dir, 'kubeconfig');
          await writeFile(
            kubeconfig,
            YAML.stringify({
              apiVersion: 'v1',
              kind: 'Config',
              clusters: [{ name: 'none', cluster: { server: 'http://127.0.0.1:9' } }],
              users: [{ name: 'none', user: { token: 'x' } }],
              contexts: [{ name: 'none', context: { cluster: 'none', user: 'none' } }],
              'current-context': 'none',
            }),
          );
          const check = await start(['--uninstall-check'], { KUBECONFIG: kubeconfig });
          assert.equal(check.code, 1, check.out);
          assert.match(check.out, /refusing to uninstall: could not list SmtpRelays in any namespace/);
        }
      }
    } finally {
      await removeTmpDir(dir);
    }
  });

  it('the image build fails when the operator Dockerfile loses a COPY line', async () => {
    const text = await readFile(path.join(ROOT, 'operator/Dockerfile'), 'utf8');
    const { stages } = parseDockerfile(text);
    const copies = stages[0].ins.filter((i) => i.op === 'COPY').map((i) => i.args);
    const relayCopy = copies.find((c) => c.split(' ').some((s) => s.startsWith('relay/')));
    assert.ok(relayCopy, 'the operator image copies the relay contract');
    const dir = await makeTmpDir('cartero-image-');
    try {
      const without = text
        .split('\n')
        .filter((l) => l.replace(/\s+/g, ' ').trim() !== `COPY ${relayCopy}`)
        .join('\n');
      assert.notEqual(without, text);
      const image = await buildImage(without, dir, []);
      assert.notEqual(image.build.code, 0, 'the build step fails without it');
      assert.match(image.build.out, /relay\/src\/contract/);
    } finally {
      await removeTmpDir(dir);
    }
  });
});
