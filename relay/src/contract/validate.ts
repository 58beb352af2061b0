/**
 * The relay's full config check for a config that is not on disk (part of the relay contract): the same
 * schema and rules the relay runs at start and reload (resolveRelayConfig and checkRuntime), with the
 * secrets taken from memory. The operator runs it on the config it renders, with its Secret's data.
 */
import { ConfigError } from '../errors.js';
import { checkRuntime, resolveRelayConfig, type SecretRef } from './resolve.js';

/** Files by name, as a Kubernetes Secret's data mounts them: text or bytes. */
export type SecretFiles = Readonly<Record<string, string | Uint8Array>>;

export interface ValidateOptions {
  /** The files of the secrets folder (paths.secrets): the operator's Secret data, file name → content. */
  secrets: SecretFiles;
  /** The files of the TLS folder (tls.crt, tls.key). Left out: they are taken to be there. */
  tls?: SecretFiles;
  /** The environment of the relay's process, for `${NAME}` references (e.g. the pods' POD_IP). */
  env?: NodeJS.ProcessEnv;
}

function fromMemory(opts: ValidateOptions): (ref: SecretRef) => Buffer {
  return (ref) => {
    const files = ref.dir === 'tls' ? opts.tls : opts.secrets;
    if (!files) return Buffer.from('present'); // TLS files not known: assumed there
    const value = Object.prototype.hasOwnProperty.call(files, ref.file) ? files[ref.file] : undefined;
    if (value === undefined) throw new ConfigError(ref.field, `no ${ref.dir} file ${ref.file}`);
    const data = Buffer.from(value);
    // as the relay reads a file: a trailing newline is not part of the secret
    let end = data.length;
    while (end > 0 && (data[end - 1] === 0x0a || data[end - 1] === 0x0d)) end--;
    if (end === 0) throw new ConfigError(ref.field, `${ref.dir} file ${ref.file} is empty`);
    return data.subarray(0, end);
  };
}

/**
 * Checks a parsed config document as the relay would at start, reading no file, for a whole fleet (every
 * IP pool address counts, whichever pod it names). Returns the first problem (a ConfigError: `field` and
 * the reason in its message), or undefined for a config the relay accepts. `doc` is not changed.
 */
export function validateRelayConfig(doc: unknown, opts: ValidateOptions): ConfigError | undefined {
  try {
    const cfg = resolveRelayConfig(structuredClone(doc), {
      baseDir: '/',
      env: opts.env ?? {},
      secrets: fromMemory(opts),
      fleetWide: true,
    });
    checkRuntime(cfg);
    return undefined;
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
}
