/**
 * The relay's config loader: reads the config file (YAML or JSON, bounded in size, depth and aliases) and
 * the secret files it names, then resolves it with the relay contract (relay/src/contract: the schema,
 * every rule and the typed RelayConfig, the same code the operator checks its rendered config with).
 */
import { closeSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import YAML, { CST, Lexer, LineCounter } from 'yaml';
import { ConfigError } from './errors.js';
import { checkRuntime, resolveRelayConfig } from './contract/resolve.js';
import type { RelayConfig } from './contract/config-types.js';

export type {
  HostRoute,
  ListenerConfig,
  ListenerLimits,
  OutboundTls,
  PoolConfigResolved,
  RelayConfig,
  TenantConfig,
  TlsMode,
} from './contract/config-types.js';
export { DEFAULT_TENANT } from './contract/config-types.js';

/** The largest secret file read (a password, a private key, a certificate chain): 1 MiB. */
export const MAX_SECRET_BYTES = 1024 * 1024;

/**
 * Reads a secret file (at most MAX_SECRET_BYTES); a trailing newline is an editor artefact, not part of
 * the secret.
 */
function readSecret(p: string, field: string): Buffer {
  try {
    const data = readCapped(p, MAX_SECRET_BYTES);
    if (data.length > MAX_SECRET_BYTES)
      throw new ConfigError(field, `secret file ${p} is larger than ${MAX_SECRET_BYTES} bytes`);
    let end = data.length;
    while (end > 0 && (data[end - 1] === 0x0a || data[end - 1] === 0x0d)) end--;
    if (end === 0) throw new ConfigError(field, `secret file ${p} is empty`);
    return data.subarray(0, end);
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    throw new ConfigError(field, `cannot read ${p}: ${(e as Error).message}`);
  }
}

/**
 * Validates a parsed config document (applying defaults in place) and resolves it, reading the secret
 * files it names relative to `baseDir` (the config file's folder).
 */
export function resolveConfig(
  doc: unknown,
  baseDir: string,
  env: NodeJS.ProcessEnv = process.env,
): RelayConfig {
  const cfg = resolveRelayConfig(doc, { baseDir, env, secrets: (ref) => readSecret(ref.path, ref.field) });
  checkRuntime(cfg);
  return cfg;
}

/** A config file larger than this is refused unread (a Kubernetes ConfigMap or Secret holds at most 1 MiB). */
export const MAX_CONFIG_BYTES = 1024 * 1024;
/** yaml's maxAliasCount: how much alias (`*name`) expansion a config may do; refuses "billion laughs" documents. */
export const MAX_YAML_ALIASES = 100;
/**
 * Nesting a config may have (a real one has about 6 levels). Deeper YAML is refused before it is parsed:
 * the yaml package parses nesting by recursion and turns the stack overflow into an error, but at the
 * bottom of that recursion V8 itself can fail ("RegExpCompiler Allocation failed - process out of
 * memory") and abort the process: seen with 1,000 nested `[` parsed twice, as hot reload does.
 */
export const MAX_YAML_DEPTH = 64;

/** Reads at most `max` + 1 bytes of `file` (a FIFO or /dev/zero does not make it read forever). */
function readCapped(file: string, max: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(max + 1);
    let n = 0;
    while (n < buf.length) {
      const got = readSync(fd, buf, n, buf.length - n, null);
      if (got === 0) break;
      n += got;
    }
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/**
 * An upper bound of the nesting depth of a YAML text, from its tokens (cheap, no recursion): flow
 * collections are counted exactly; block nesting as the indentation levels open plus the indicators
 * (`-`, `?`, `:`) on the line. Stops once above `limit`.
 */
function yamlDepth(text: string, limit: number): number {
  const indents: number[] = [];
  let flow = 0;
  let onLine = 0;
  let indent = 0;
  let lineStart = true;
  let max = 0;
  for (const src of new Lexer().lex(text)) {
    const type = CST.tokenType(src);
    if (type === 'newline') {
      lineStart = true;
      indent = 0;
      onLine = 0;
      continue;
    }
    if (type === 'space') {
      if (lineStart) indent = src.length;
      continue;
    }
    if (type === 'flow-map-start' || type === 'flow-seq-start') flow++;
    else if (type === 'flow-map-end' || type === 'flow-seq-end') flow = Math.max(0, flow - 1);
    else if (type === 'seq-item-ind' || type === 'explicit-key-ind' || type === 'map-value-ind') {
      if (flow === 0) onLine++;
    } else if (type === 'doc-start') indents.length = 0;
    if (lineStart && type !== 'comment' && type !== 'byte-order-mark' && type !== 'doc-mode') {
      lineStart = false;
      while (indents.length && indents[indents.length - 1] >= indent) indents.pop();
      indents.push(indent);
    }
    max = Math.max(max, indents.length + onLine + flow);
    if (max > limit) break;
  }
  return max;
}

/** One line of a YAML error: the message without yaml's code frame, and where. */
function yamlProblem(message: string, pos: number | undefined, lines: LineCounter): string {
  const text = message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '');
  if (pos === undefined) return `not valid YAML: ${text}`;
  const { line, col } = lines.linePos(pos);
  return `not valid YAML at line ${line}, column ${col}: ${text}`;
}

/**
 * Parses the text of a config file (YAML, or JSON, which is YAML) into one document. Every problem is a
 * ConfigError for `/` of one line: a syntax error (with line and column), a duplicate key, more than one
 * document, an unknown tag, nesting deeper than MAX_YAML_DEPTH, more alias expansions than
 * MAX_YAML_ALIASES, an empty file. The result is not checked further (see resolveConfig).
 */
export function parseConfigText(text: string): unknown {
  if (yamlDepth(text, MAX_YAML_DEPTH) > MAX_YAML_DEPTH)
    throw new ConfigError('/', `not valid YAML: nested more than ${MAX_YAML_DEPTH} levels deep`);
  const lines = new LineCounter();
  let docs: YAML.Document.Parsed[];
  try {
    docs = YAML.parseAllDocuments(text, {
      lineCounter: lines,
      prettyErrors: false,
      uniqueKeys: true,
      logLevel: 'error', // no warnings on stderr: they are refused below
    }) as YAML.Document.Parsed[];
  } catch (e) {
    throw new ConfigError('/', yamlProblem((e as Error).message, undefined, lines));
  }
  if (docs.length === 0)
    throw new ConfigError('/', 'the file is empty: it needs a mapping with version: 1 and listeners');
  const problem = docs[0].errors[0] ?? docs[0].warnings[0];
  if (problem) throw new ConfigError('/', yamlProblem(problem.message, problem.pos[0], lines));
  if (docs.length > 1) {
    const { line } = lines.linePos(docs[1].range[0]);
    throw new ConfigError(
      '/',
      `not valid YAML: a second document starts at line ${line} (after ---); the config is one document`,
    );
  }
  let doc: unknown;
  try {
    doc = docs[0].toJS({ maxAliasCount: MAX_YAML_ALIASES });
  } catch (e) {
    const msg = (e as Error).message;
    throw new ConfigError(
      '/',
      /excessive alias count/i.test(msg)
        ? `not valid YAML: aliases (*name) expand too much (yaml's maxAliasCount ${MAX_YAML_ALIASES}; a "billion laughs" document?)`
        : yamlProblem(msg, undefined, lines),
    );
  }
  if (doc === null || doc === undefined)
    throw new ConfigError('/', 'the file holds no values: it needs a mapping with version: 1 and listeners');
  return doc;
}

/** Reads, parses and validates a config file; throws ConfigError naming the field and the reason. */
export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): RelayConfig {
  let data: Buffer;
  try {
    data = readCapped(file, MAX_CONFIG_BYTES);
  } catch (e) {
    throw new ConfigError('/', `cannot read config file ${file}: ${(e as Error).message}`);
  }
  if (data.length > MAX_CONFIG_BYTES)
    throw new ConfigError('/', `config file ${file} is larger than ${MAX_CONFIG_BYTES} bytes`);
  const doc = parseConfigText(data.toString('utf8'));
  return resolveConfig(doc, path.dirname(path.resolve(file)), env);
}
