/**
 * The container images, without a Docker engine: what the Dockerfiles say (pinned Node 22 slim base,
 * multi-stage, `npm ci` + build in the builder, `npm ci --omit=dev` in the final stage, a numeric non-root
 * user matching the pods' runAsUser, unprivileged ports, an exec-form `node` entrypoint, no build tools),
 * that the paths they copy and start exist, and that the production install (the lockfile's packages not
 * marked dev, which is what `npm ci --omit=dev` installs) is enough to start both programs from a copy of
 * only what the final stage holds.
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
const DIST = path.join(ROOT, 'dist');

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
  opts: { cwd: string; env: NodeJS.ProcessEnv },
): Promise<{ code: number; out: string }> {
  return new Promise((resolve) =>
    execFile(cmd, args, { ...opts, timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` }),
    ),
  );
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
      // what the final stage takes from the builder: the compiled app only
      const fromBuild = final.ins.filter((i) => i.op === 'COPY' && i.args.startsWith(`--from=${build.name}`));
      assert.deepEqual(
        fromBuild.map((i) => i.args),
        [`--from=${build.name} /src/dist/${app} ./dist/${app}`],
      );
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
    const builders = await readFile(path.join(ROOT, 'operator/src/builders.ts'), 'utf8');
    assert.match(builders, /runAsUser: 10001/);
  });

  it('.dockerignore keeps node_modules, dist and .tmp out of the build context', async () => {
    const lines = (await readFile(path.join(ROOT, '.dockerignore'), 'utf8')).split('\n').map((l) => l.trim());
    for (const p of ['**/node_modules', 'dist', '.tmp', '.git']) assert.ok(lines.includes(p), p);
    for (const needed of ['package.json', 'package-lock.json', 'tsconfig.json', 'operator', 'relay'])
      assert.ok(!lines.includes(needed), `${needed} stays in the context`);
  });

  it('the production install is enough: both programs start from what the final stages hold', async () => {
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
      await writeFile(path.join(dir, 'package.json'), await readFile(path.join(ROOT, 'package.json')));
      for (const name of prod) {
        const to = path.join(dir, 'node_modules', name);
        await mkdir(path.dirname(to), { recursive: true });
        await symlink(path.join(ROOT, 'node_modules', name), to, 'dir');
      }
      for (const { app } of IMAGES)
        await cp(path.join(DIST, app), path.join(dir, 'dist', app), { recursive: true });
      // resolve packages through the links, so a package reaching for a dev-only one fails here
      const node = ['--preserve-symlinks', '--preserve-symlinks-main'];
      const env = { PATH: process.env.PATH, HOME: dir, NODE_ENV: 'production' };

      await writeFile(path.join(dir, 'relay.yaml'), 'version: 1\nlisteners: [{ name: smtp, port: 2525 }]\n');
      const relay = await run(
        process.execPath,
        [...node, 'dist/relay/src/main.js', '--config', 'relay.yaml', '--check'],
        { cwd: dir, env },
      );
      assert.equal(relay.code, 0, relay.out);
      assert.match(relay.out, /config ok/);

      // every module is loaded before main.ts runs: the pre-delete check against an API that is not
      // there fails with its own message (not with ERR_MODULE_NOT_FOUND)
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
      const operator = await run(
        process.execPath,
        [...node, 'dist/operator/src/main.js', '--uninstall-check'],
        {
          cwd: dir,
          env: { ...env, KUBECONFIG: kubeconfig },
        },
      );
      assert.equal(operator.code, 1, operator.out);
      assert.match(operator.out, /refusing to uninstall: could not list SmtpRelays in any namespace/);
    } finally {
      await removeTmpDir(dir);
    }
  });
});
