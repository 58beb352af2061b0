/**
 * The container images, without a Docker engine: what the Dockerfiles say (pinned Node 22 slim base,
 * multi-stage, `npm ci` + build in the builder, `npm ci --omit=dev` in the final stage, a numeric non-root
 * user matching the pods' runAsUser, unprivileged ports, an exec-form `node` entrypoint, no build tools),
 * and that each image builds from exactly what its Dockerfile copies: the build context is assembled from
 * the COPY lines (no list kept here), the build step runs there, and the program starts from the final
 * stage with the production packages only (what `npm ci --omit=dev --workspaces=false` installs from the
 * lockfile: no dev dependencies, and not the k8s testbed workspace nor what only it needs): the relay with
 * `--help` and the example config (checked, then run until it serves SMTP and stops on SIGTERM), the
 * operator's `--uninstall-check` (the chart's pre-delete hook) against the project's test API server with
 * the CRDs of crds/ (no CRD, no SmtpRelay, one SmtpRelay, one outside WATCH_NAMESPACE) and against no API
 * server.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { cp, mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { startApiServer } from '@cartero/k8s-testbed/apiserver/server.js';
import { waitFor } from '../helpers/poll.js';
import { SmtpSession } from '../helpers/smtpsession.js';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
/** The example relay's listeners move from 127.0.0.1 to this address, so its fixed ports are free. */
const RELAY_ADDRESS = `127.77.${10 + (process.pid % 240)}.1`;

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

interface LockPackage {
  dev?: boolean;
  link?: boolean;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
}
interface Lockfile {
  packages: Record<string, LockPackage>;
}

/**
 * The top-level packages (`node_modules/<name>`) that `npm ci --workspaces=false` installs from `lock`, and
 * with `omitDev` `npm ci --omit=dev --workspaces=false`: the root's dependencies (and dev dependencies unless
 * omitted) and, recursively, theirs (optional and required peer ones too), each found as Node finds it, in
 * the nearest node_modules up from its dependent. Workspace links, and what only workspaces need, are not
 * reached. (Checked against npm 10.9.2, the image's: the same package set, nested ones included.)
 */
function installedPackages(lock: Lockfile, omitDev: boolean): string[] {
  const keys = new Set<string>();
  const deps = (p: LockPackage) => [
    ...Object.keys(p.dependencies ?? {}),
    ...Object.keys(p.optionalDependencies ?? {}),
    ...Object.keys(p.peerDependencies ?? {}).filter((d) => !p.peerDependenciesMeta?.[d]?.optional),
  ];
  const visit = (from: string, name: string) => {
    for (let dir = from; ;) {
      const key = `${dir && `${dir}/`}node_modules/${name}`;
      const entry = lock.packages[key];
      if (entry) {
        if (entry.link || keys.has(key)) return;
        keys.add(key);
        for (const d of deps(entry)) visit(key, d);
        return;
      }
      if (!dir) return; // an optional dependency for another platform
      const i = dir.lastIndexOf('node_modules/');
      dir = i > 0 ? dir.slice(0, i - 1) : '';
    }
  };
  const root = lock.packages[''];
  for (const d of [...deps(root), ...(omitDev ? [] : Object.keys(root.devDependencies ?? {}))]) visit('', d);
  return [...keys]
    .map((k) => k.slice('node_modules/'.length))
    .filter((name) => !name.includes('/node_modules/'))
    .sort();
}

/** Node flags for a copy whose node_modules are links: packages resolve through them, so a production
 * package reaching for a dev-only one fails as it would in the image. */
const PRESERVE_SYMLINKS = ['--preserve-symlinks', '--preserve-symlinks-main'];

/**
 * Assembles an image the way `docker build` would, without an engine: each stage gets a folder standing for
 * its filesystem root; COPY takes from the repository (the build context) or, with --from, from an earlier
 * stage's folder; WORKDIR moves; RUN runs the step in the stage's working folder. `npm ci` cannot run here:
 * it becomes links to the repository's node_modules/<name> for the packages it would install (every
 * dependency, or with --omit=dev the production ones; never the workspaces: the Dockerfiles say
 * --workspaces=false) and to node_modules/.bin; it needs package.json and package-lock.json copied
 * first, as npm does.
 * Any other RUN runs as written (the build stage's `npx tsc -p .`), except in the final stage, whose RUN
 * only changes the system (users, npm removed) after its `npm ci`. Returns the build step's result, the
 * final stage's working folder and its ENTRYPOINT.
 */
async function buildImage(
  dockerfile: string,
  dir: string,
  lock: Lockfile,
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
          assert.match(args, /^npm ci [^&]*--workspaces=false/, 'npm ci ignores the workspaces');
          const omitDev = /^npm ci [^&]*--omit=dev/.test(args);
          for (const name of [...installedPackages(lock, omitDev), ...(omitDev ? [] : ['.bin'])]) {
            const to = path.join(here, 'node_modules', name);
            await mkdir(path.dirname(to), { recursive: true });
            await symlink(path.join(ROOT, 'node_modules', name), to, 'dir');
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

type Start = (args: string[], env?: NodeJS.ProcessEnv) => Promise<{ code: number; out: string }>;

/**
 * The built operator's `--uninstall-check` against the test API server: no CRD (nothing can wait: 0),
 * the CRDs of crds/ without SmtpRelays (0), one SmtpRelay (1, naming it and what to do), the same with
 * WATCH_NAMESPACE elsewhere (0); then against an API server that is not there (1, its own message).
 */
async function uninstallChecks(dir: string, start: Start): Promise<void> {
  const api = await startApiServer({ dir: path.join(dir, 'api') });
  try {
    const post = async (urlPath: string, body: unknown) => {
      const r = await fetch(`${api.url}${urlPath}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${api.token}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      assert.equal(r.status, 201, `POST ${urlPath}: ${await r.text()}`);
    };
    const check = (env: NodeJS.ProcessEnv = {}) =>
      start(['--uninstall-check'], { KUBECONFIG: api.kubeconfig, ...env });

    let r = await check();
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /no SmtpRelay CRD: nothing waits for the operator/);

    const crds = (await readdir(path.join(ROOT, 'crds'))).filter((f) => f.endsWith('.yaml'));
    assert.ok(crds.includes('smtprelay.yaml'), crds.join(', '));
    for (const f of crds)
      await post(
        '/apis/apiextensions.k8s.io/v1/customresourcedefinitions',
        YAML.parse(await readFile(path.join(ROOT, 'crds', f), 'utf8')),
      );
    r = await check();
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /no SmtpRelays in any namespace: the operator may go/);

    await post('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'mail' } });
    await post('/apis/cartero.io/v1alpha1/namespaces/mail/smtprelays', {
      apiVersion: 'cartero.io/v1alpha1',
      kind: 'SmtpRelay',
      metadata: { name: 'outbound', namespace: 'mail' },
      spec: { replicas: 1 },
    });
    r = await check();
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /refusing to uninstall the operator: 1 SmtpRelay\(s\) still exist: mail\/outbound\./);
    assert.match(r.out, /kubectl delete smtprelays --all -A/);
    r = await check({ WATCH_NAMESPACE: 'other' });
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /no SmtpRelays in namespace other/);
  } finally {
    await api.stop();
  }

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
  const r = await start(['--uninstall-check'], { KUBECONFIG: kubeconfig });
  assert.equal(r.code, 1, r.out);
  assert.match(r.out, /refusing to uninstall: could not list SmtpRelays in any namespace/);
}

/**
 * Runs the built relay with `config` until it is ready (admin /readyz) and greets on its SMTP listener,
 * then stops it with SIGTERM (exit 0). Deadlines, no sleeps.
 */
async function runRelay(image: { workdir: string; entrypoint: string[] }, config: string): Promise<void> {
  const child = spawn(
    process.execPath,
    [...PRESERVE_SYMLINKS, ...image.entrypoint.slice(1), '--config', config],
    {
      cwd: image.workdir,
      env: { PATH: process.env.PATH, HOME: image.workdir, NODE_ENV: 'production' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`the relay exited (${child.exitCode}):\n${out}`);
        const r = await fetch(`http://${RELAY_ADDRESS}:9025/readyz`).catch(() => undefined);
        return r?.status === 200;
      },
      { timeoutMs: 20_000, intervalMs: 50, what: 'the example relay to be ready' },
    ).catch((e: Error) => assert.fail(`${e.message}\n${out}`));
    const s = await SmtpSession.open(2525, { host: RELAY_ADDRESS });
    assert.match(s.ehloReply?.text ?? '', /^250/);
    await s.quit();
    child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([
      exited,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the relay did not stop on SIGTERM:\n${out}`)), 15_000);
      }),
    ]).finally(() => clearTimeout(timer));
    assert.equal(code, 0, out);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
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
      for (const r of [...runs(build), ...runs(final)].filter((r) => /^npm ci\b/.test(r)))
        assert.match(
          r,
          /^npm ci [^&]*--workspaces=false/,
          `npm ci leaves the k8s testbed workspace out: ${r}`,
        );
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
    const lock = JSON.parse(await readFile(path.join(ROOT, 'package-lock.json'), 'utf8')) as Lockfile;
    const pkg = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
      devDependencies: Record<string, string>;
      workspaces: string[];
    };
    // what `npm ci --omit=dev --workspaces=false` installs at the top level of node_modules
    const prod = installedPackages(lock, true);
    for (const d of Object.keys(pkg.dependencies)) assert.ok(prod.includes(d), `${d} is installed`);
    // the build and lint tools stay out (a dependency may still need a dev dependency's package: @types/node)
    for (const d of ['typescript', 'eslint', 'prettier', 'typescript-eslint', 'json-schema-to-typescript'])
      assert.ok(d in pkg.devDependencies && !prod.includes(d), `${d} is not installed`);
    // so do the k8s testbed workspace and what only it needs, in either stage
    assert.deepEqual(pkg.workspaces, ['test/k8s']);
    for (const omitDev of [true, false])
      for (const d of ['@cartero/k8s-testbed', '@marcbachmann/cel-js'])
        assert.ok(
          !installedPackages(lock, omitDev).includes(d),
          `${d} is not installed (omitDev ${omitDev})`,
        );

    const dir = await makeTmpDir('cartero-image-');
    try {
      for (const { app } of IMAGES) {
        const text = await readFile(path.join(ROOT, app, 'Dockerfile'), 'utf8');
        const image = await buildImage(text, path.join(dir, app), lock);
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
          // and runs with it: the same file, its listeners and admin API on an address of their own
          const text = await readFile(path.join(ROOT, 'examples/standalone/relay.yaml'), 'utf8');
          const moved = text.replaceAll('address: 127.0.0.1', `address: ${RELAY_ADDRESS}`);
          assert.equal(moved.split(RELAY_ADDRESS).length - 1, 3, 'two listeners and the admin API');
          await writeFile(path.join(example, 'examples/standalone/relay.yaml'), moved);
          await runRelay(image, path.join(example, 'examples/standalone/relay.yaml'));
        } else {
          // The operator has no --help: --uninstall-check (the chart's pre-delete hook) runs every module
          // it loads (not ERR_MODULE_NOT_FOUND) against the test API server, then against none.
          await uninstallChecks(dir, start);
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
      const lock = JSON.parse(await readFile(path.join(ROOT, 'package-lock.json'), 'utf8')) as Lockfile;
      const image = await buildImage(without, dir, lock);
      assert.notEqual(image.build.code, 0, 'the build step fails without it');
      assert.match(image.build.out, /relay\/src\/contract/);
    } finally {
      await removeTmpDir(dir);
    }
  });
});
