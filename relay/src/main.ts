#!/usr/bin/env node
/**
 * cartero-relay: the composition root. Reads the command line and the config once, builds the relay,
 * and owns shutdown (SIGTERM/SIGINT: graceful stop within shutdown.gracePeriod).
 */
// More libuv threads: fsync and file I/O of concurrent sessions run in parallel (read before first use).
process.env.UV_THREADPOOL_SIZE ??= '16';

import { parseArgs } from 'node:util';
import { loadConfigFile } from './config.js';
import { ConfigError } from './errors.js';
import type { Relay } from './relay.js';

const USAGE = 'usage: cartero-relay --config FILE [--check]';

async function main(argv: string[]): Promise<number> {
  let values: { config?: string; check?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        config: { type: 'string', short: 'c' },
        check: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    process.stderr.write(`cartero-relay: ${(e as Error).message}\n${USAGE}\n`);
    return 64;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (!values.config) {
    process.stderr.write(`cartero-relay: --config is required\n${USAGE}\n`);
    return 64;
  }
  let cfg;
  try {
    cfg = loadConfigFile(values.config);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`cartero-relay: config error: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  if (values.check) {
    process.stdout.write('config ok\n');
    return 0;
  }
  // loaded only to run: --check stays quick (an init container, a CI step)
  const [{ createLogger }, { Relay }, { ConfigWatcher }] = await Promise.all([
    import('./log.js'),
    import('./relay.js'),
    import('./reload.js'),
  ]);
  const log = createLogger(cfg.logLevel);
  let relay: Relay;
  try {
    relay = new Relay(cfg, { log });
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`cartero-relay: config error: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  let stopping = false;
  const watcher = new ConfigWatcher({
    file: values.config,
    current: () => relay.cfg,
    apply: (next) => relay.reload(next),
    invalid: (err) => relay.reloadFailed(err),
  });
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ event: 'shutdown', signal, gracePeriodMs: cfg.gracePeriodMs }, 'shutting down');
    watcher.stop();
    const hard = setTimeout(() => {
      log.error(
        { event: 'shutdown.timeout' },
        'grace period over; exiting with work in flight (queued mail stays queued)',
      );
      log.flush();
      process.exit(1);
    }, relay.cfg.gracePeriodMs + 2000);
    hard.unref();
    relay.stop().then(
      () => {
        log.flush();
        process.exitCode = 0;
      },
      (e: Error) => {
        log.error({ event: 'shutdown.error', err: e.message }, 'error during shutdown');
        log.flush();
        // a stop that failed half-way may leave handles open: do not linger until the hard deadline
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', () => watcher.check());
  try {
    await relay.start();
    watcher.start(cfg.watchPaths);
  } catch (e) {
    log.fatal({ event: 'start.failed', err: (e as Error).message }, 'relay failed to start');
    log.flush();
    process.stderr.write(`cartero-relay: cannot start: ${(e as Error).message}\n`);
    return 1;
  }
  return -1; // keep running
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (e: Error) => {
    process.stderr.write(`cartero-relay: ${e.stack ?? e.message}\n`);
    process.exitCode = 1;
  },
);
