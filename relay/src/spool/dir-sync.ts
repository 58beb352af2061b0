/** Group commit for directory fsyncs (disk.ts: queue/ after a message is renamed in, state/ after a state file). */
import { promises as fsp, constants as fsc } from 'node:fs';

/** Shares one fsync of a directory between every caller waiting for it. */
export class DirSyncer {
  private waiting: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  private running = false;
  constructor(private readonly dir: string) {}
  sync(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      if (!this.running) void this.run();
    });
  }
  private async run(): Promise<void> {
    this.running = true;
    while (this.waiting.length) {
      const batch = this.waiting.splice(0);
      try {
        const fh = await fsp.open(this.dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
        try {
          await fh.sync();
        } finally {
          await fh.close();
        }
        for (const w of batch) w.resolve();
      } catch (e) {
        for (const w of batch) w.reject(e);
      }
    }
    this.running = false;
  }
}
