/** Small files that must survive a crash: temp file, fdatasync, rename over the old one, directory fsync. */
import { promises as fsp, constants as fsc } from 'node:fs';
import path from 'node:path';

export async function writeFileDurable(file: string, data: string | Buffer): Promise<void> {
  const tmp = `${file}.tmp`;
  const fh = await fsp.open(tmp, 'w');
  try {
    await fh.writeFile(data);
    await fh.datasync();
  } finally {
    await fh.close();
  }
  await fsp.rename(tmp, file);
  const dh = await fsp.open(path.dirname(file), fsc.O_RDONLY | fsc.O_DIRECTORY);
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
