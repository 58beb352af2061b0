/**
 * What the chart tests share: where the chart, helm and the programs the images start are, and a helm
 * runner with its caches in the test's directory.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ImageCommand } from '@cartero/k8s-testbed/kubelet/kubelet.js';
import { RELAY_MAIN } from './relay.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const CHART = path.join(ROOT, 'charts', 'cartero');
export const HELM = path.join(ROOT, '.tmp', 'tools', 'helm', 'helm');
export const OPERATOR_MAIN = path.join(ROOT, 'dist', 'operator', 'src', 'main.js');
export const OPERATOR_IMAGE = 'ghcr.io/cartero/operator:0.1.0';
export const RELAY_IMAGE = 'ghcr.io/cartero/relay:0.1.0';

/** The chart's images as the process kubelet runs them: what the Dockerfiles' ENTRYPOINTs start. */
export const CHART_IMAGES: Record<string, ImageCommand> = {
  [OPERATOR_IMAGE]: { command: process.execPath, args: [OPERATOR_MAIN] },
  [RELAY_IMAGE]: { command: process.execPath, args: [RELAY_MAIN] },
};

export interface CommandResult {
  code: number;
  stdout: string;
  /** stdout and stderr together, for messages. */
  out: string;
}

export function runCommand(
  cmd: string,
  args: string[],
  opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      {
        timeout: opts.timeoutMs ?? 90_000,
        maxBuffer: 32 * 1024 * 1024,
        env: { ...process.env, ...opts.env },
      },
      (err, stdout, stderr) =>
        resolve({
          code: err ? ((err as { code?: number }).code ?? 1) : 0,
          out: `${stdout}${stderr}`,
          stdout,
        }),
    );
    child.stdin?.on('error', () => {});
    child.stdin?.end(opts.input ?? '');
  });
}

/**
 * helm with its cache, config and data under `dir`; `kubeconfig` is read at each call (a test may point
 * helm somewhere else later), and left out when undefined (template, lint).
 */
export function helmFor(dir: string, kubeconfig: () => string | undefined = () => undefined) {
  const env = {
    HELM_CACHE_HOME: path.join(dir, 'helm-cache'),
    HELM_CONFIG_HOME: path.join(dir, 'helm-config'),
    HELM_DATA_HOME: path.join(dir, 'helm-data'),
  };
  return (...args: string[]): Promise<CommandResult> => {
    const kc = kubeconfig();
    return runCommand(HELM, kc ? ['--kubeconfig', kc, ...args] : args, { env });
  };
}
