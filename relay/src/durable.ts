/** Small files that must survive a crash: temp file, fdatasync, rename over the old one, directory fsync. */
import { promises as fsp, constants as fsc } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

/** Writes still running per file: a later write waits for the one before (no two share a temp file). */
const pending = new Map<string, Promise<void>>();

export function writeFileDurable(file: string, data: string | Buffer): Promise<void> {
  const prev = pending.get(file) ?? Promise.resolve();
  const next = prev.catch(() => undefined).then(() => writeOnce(file, data));
  pending.set(file, next);
  void next
    .finally(() => {
      if (pending.get(file) === next) pending.delete(file);
    })
    .catch(() => undefined);
  return next;
}

async function writeOnce(file: string, data: string | Buffer): Promise<void> {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fh = await fsp.open(tmp, 'wx');
  try {
    try {
      await fh.writeFile(data);
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, file);
  } catch (e) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw e;
  }
  const dh = await fsp.open(path.dirname(file), fsc.O_RDONLY | fsc.O_DIRECTORY);
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
