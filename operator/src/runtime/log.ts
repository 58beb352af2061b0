/**
 * The logger the runtime writes to: the part of pino's `Logger` it uses, so a pino logger (or a child
 * of one) fits, and tests can pass a recorder.
 */
export interface RuntimeLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** Discards everything (the default when no logger is given). */
export const silentLogger: RuntimeLogger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};

/** An error as a log field: message and, for Kubernetes Status errors, the code. */
export function errorField(err: unknown): { message: string; code?: number } {
  if (err instanceof Error) {
    const code =
      (err as { code?: unknown; statusCode?: unknown }).statusCode ?? (err as { code?: unknown }).code;
    return typeof code === 'number' ? { message: err.message, code } : { message: err.message };
  }
  return { message: String(err) };
}
