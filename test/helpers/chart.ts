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

/** The release name and namespace the chart tests install. */
export const RELEASE = 'cartero';
export const RELEASE_NAMESPACE = 'cartero-system';

/**
 * `helm install|upgrade RELEASE <chart> -n <namespace> -f <values> [--set <set>] --wait --timeout 60s`
 * (install with --create-namespace).
 */
export function helmDeploy(
  helm: ReturnType<typeof helmFor>,
  verb: 'install' | 'upgrade',
  o: { values: string; chart?: string; namespace?: string; set?: string },
): Promise<CommandResult> {
  return helm(
    verb,
    RELEASE,
    o.chart ?? CHART,
    '-n',
    o.namespace ?? RELEASE_NAMESPACE,
    ...(verb === 'install' ? ['--create-namespace'] : []),
    '-f',
    o.values,
    ...(o.set ? ['--set', o.set] : []),
    '--wait',
    '--timeout',
    '60s',
  );
}

/**
 * A CRD for a kind the test API server does not have built in (e.g. the Prometheus Operator's, or
 * NetworkPolicy), schema left open: enough to install objects of it.
 */
export const openCrd = (group: string, kind: string, plural: string) => `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: ${plural}.${group}}
spec:
  group: ${group}
  scope: Namespaced
  names: {kind: ${kind}, plural: ${plural}, singular: ${kind.toLowerCase()}, listKind: ${kind}List}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`;
