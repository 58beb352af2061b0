/** Temporary directories for tests, always under os.tmpdir(). */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/** Creates a fresh, empty directory under os.tmpdir() whose name starts with `prefix`. */
export async function makeTmpDir(prefix = 'cartero-test-'): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

/** Whether `dir` lies strictly inside os.tmpdir(). */
export function isUnderTmpDir(dir: string): boolean {
  return path.resolve(dir).startsWith(path.resolve(os.tmpdir()) + path.sep);
}

/** Removes a directory made by makeTmpDir, recursively; refuses anything outside os.tmpdir(). */
export async function removeTmpDir(dir: string): Promise<void> {
  const resolved = path.resolve(dir);
  if (!isUnderTmpDir(resolved)) throw new Error(`refusing to remove ${resolved}: not under ${os.tmpdir()}`);
  await rm(resolved, { recursive: true, force: true, maxRetries: 3 });
}
