/**
 * Hot reload: watches the config file's folder and the secret and TLS folders (inotify through fs.watch,
 * which also sees Kubernetes' atomic `..data` symlink swap), re-reads the config when anything changes
 * (debounced), once when the watches are armed (the running config was read before), and on a fixed
 * interval as a safety net. A config whose hash is unchanged is ignored; an invalid one is reported and
 * the running config stays.
 */
import { watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import type { RelayConfig } from './config.js';
import { loadConfigFile } from './config.js';

export interface WatcherOptions {
  file: string;
  current: () => RelayConfig;
  apply: (cfg: RelayConfig) => void;
  invalid: (err: Error) => void;
  env?: NodeJS.ProcessEnv;
  debounceMs?: number;
  pollMs?: number;
}

export class ConfigWatcher {
  private watchers: FSWatcher[] = [];
  private timer?: NodeJS.Timeout;
  private poll?: NodeJS.Timeout;
  private lastInvalid = '';

  constructor(private readonly o: WatcherOptions) {}

  start(dirs: string[]): void {
    const all = new Set([path.dirname(path.resolve(this.o.file)), ...dirs.map((d) => path.resolve(d))]);
    for (const d of all) {
      try {
        const w = watch(d, { persistent: false }, () => this.schedule());
        w.on('error', () => undefined); // a folder that goes away: the poll still covers it
        this.watchers.push(w);
      } catch {
        /* a folder that does not exist (no secrets yet): covered by the poll */
      }
    }
    this.poll = setInterval(() => this.check(), this.o.pollMs ?? 10_000);
    this.poll.unref();
    // The running config was read before the watches existed (main.ts reads it, builds and starts the
    // relay, then calls start): a change made in between raised no event. Look once now that they are
    // armed, rather than leaving it to the poll.
    this.check();
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.check(), this.o.debounceMs ?? 200);
    this.timer.unref();
  }

  /** Re-reads the config now; returns what happened (for tests and the admin API). */
  check(): 'applied' | 'unchanged' | 'invalid' {
    let cfg: RelayConfig;
    try {
      cfg = loadConfigFile(this.o.file, this.o.env);
    } catch (e) {
      const msg = (e as Error).message;
      // report each distinct problem once, not on every poll
      if (msg !== this.lastInvalid) {
        this.lastInvalid = msg;
        this.o.invalid(e as Error);
      }
      return 'invalid';
    }
    if (cfg.hash === this.o.current().hash) {
      this.lastInvalid = '';
      return 'unchanged';
    }
    try {
      this.o.apply(cfg);
    } catch (e) {
      // a config that loads but cannot be applied fails the same way at every poll: report it once too
      const key = `${cfg.hash} ${(e as Error).message}`;
      if (key !== this.lastInvalid) {
        this.lastInvalid = key;
        this.o.invalid(e as Error);
      }
      return 'invalid';
    }
    this.lastInvalid = '';
    return 'applied';
  }

  stop(): void {
    for (const w of this.watchers) w.close();
    this.watchers = [];
    if (this.timer) clearTimeout(this.timer);
    if (this.poll) clearInterval(this.poll);
  }
}
