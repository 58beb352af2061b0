/**
 * Webhook overhead: the same Cartero relay measured end to end (smtp-source → relay → smtp-sink) with
 * (a) no webhook and (b) a webhook for every event type of the loaded tenant whose receiver never answers
 * (each request is held until the relay's 5 s timeout, then retried: the worst endpoint). Runs are
 * interleaved (a, b, b, a, ...); medians and the ratio (b)/(a) go to stdout and to
 * bench/results/webhooks.json. Issue 14: a slow endpoint must not reduce delivery throughput.
 *
 *   node dist/bench/webhooks.js [--quick] [--rounds N] [--scenarios 1k-new,1k-reuse]
 *                               [--timeout SEC] [--stall SEC] [--dir PATH]
 *
 * (b) writes two events per message (accepted, delivered) to its outbox on the spool volume; the
 * receiver's request count is printed so that it is visible the endpoint was tried and hung.
 */
import http from 'node:http';
import { mkdirSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { environment, REPO_ROOT, scenario, SESSIONS, type Scenario } from './measure.js';
import { killAll } from './proc.js';
import {
  abRows,
  outputHead,
  prepareDir,
  readRoundOptions,
  roundOptions,
  runMain,
  runRounds,
  saveJson,
  summarise,
  tableRow,
  type RoundOptions,
  type ScenarioReport,
} from './rounds.js';
import { CarteroRelay } from './systems.js';

const RESULTS_FILE = path.join(REPO_ROOT, 'bench', 'results', 'webhooks.json');
const SCENARIOS: Scenario[] = [
  scenario('1k-new', 20_000, 1024, false, false),
  scenario('1k-reuse', 20_000, 1024, true, false),
];
const BASE = 'cartero';
const HOOKED = 'cartero-hung-webhook';
/** The target: a hung endpoint costs at most 10 % of the delivery rate. */
const TARGET_RATIO = 0.9;

function parseOptions(argv: string[]): RoundOptions {
  const { values } = parseArgs({ args: argv, options: roundOptions({ rounds: '3', dir: 'bench-webhooks' }) });
  if (values.help) {
    console.log(
      'usage: node dist/bench/webhooks.js [--quick] [--rounds N] [--scenarios ' +
        `${SCENARIOS.map((s) => s.id).join(',')}] [--timeout SEC] [--stall SEC] [--dir PATH]`,
    );
    process.exit(0);
  }
  return readRoundOptions(values, SCENARIOS);
}

/** A receiver that reads each request and never answers (the relay gives up after its timeout). */
async function hungReceiver(): Promise<{ url: string; requests: () => number; close: () => void }> {
  let requests = 0;
  const server = http.createServer((req) => {
    requests++;
    req.resume();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    requests: () => requests,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

function table(reports: ScenarioReport[], opts: RoundOptions, requests: number): string {
  const cols = [10, 8, 17, 15, 15, 9];
  const row = tableRow(cols);
  const lines = [
    `Webhook overhead: smtp-source -s ${SESSIONS} → Cartero → smtp-sink, median of ${opts.rounds} round(s)` +
      (opts.quick ? ' (--quick: message counts ÷ 10)' : ''),
    '(a) no webhook; (b) a webhook for every event type whose receiver never answers (timeout 5s, retried).',
    '',
    row(['scenario', 'messages', 'metric', '(a) none', '(b) hung hook', '(b)/(a)']),
    row(cols.map((w) => '-'.repeat(w))),
  ];
  const { rows, verdicts, notes } = abRows(reports, row, BASE, HOOKED, TARGET_RATIO);
  lines.push(...rows);
  lines.push('', `target (b)/(a) ≥ ${TARGET_RATIO} for the rates:`, ...verdicts);
  lines.push('', `requests the hung receiver got (all runs): ${requests}`);
  lines.push('', 'scenarios:', ...reports.map((r) => `  ${r.id.padEnd(9)} ${r.title}`));
  if (notes.length > 0) lines.push('', '* some runs did not complete and are left out:', ...notes);
  return lines.join('\n');
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  prepareDir(opts.dir);
  const receiver = await hungReceiver();
  const secrets = path.join(opts.dir, HOOKED, 'secrets');
  mkdirSync(secrets, { recursive: true });
  writeFileSync(path.join(secrets, 'hook.key'), 'bench-signing-key');
  const base = new CarteroRelay(REPO_ROOT, opts.dir, { name: BASE });
  const hooked = new CarteroRelay(REPO_ROOT, opts.dir, {
    name: HOOKED,
    extraConfig: () => ({
      tenants: [
        { name: 'default', webhooks: [{ url: receiver.url, secretFile: 'hook.key', timeout: '5s' }] },
      ],
    }),
  });
  const results: { scenario: Scenario; runs: import('./measure.js').RunResult[] }[] = [];
  const output = {
    ...outputHead('dist/bench/webhooks.js', opts, {}),
    environment: environment(),
    interrupted: false,
    receiverRequests: 0,
    scenarios: [] as ScenarioReport[],
  };
  const save = () => {
    output.receiverRequests = receiver.requests();
    output.scenarios = results.map(({ scenario: sc, runs }) =>
      summarise(sc, runs, [BASE, HOOKED], [HOOKED, BASE]),
    );
    saveJson(RESULTS_FILE, output);
  };
  try {
    await runRounds(opts, (round) => (round % 2 ? [base, hooked] : [hooked, base]), results, {
      save,
      checks: {},
      prepare: async () => {
        await base.prepare();
        await hooked.prepare();
      },
      teardown: () => {
        base.stopSync();
        hooked.stopSync();
        killAll();
      },
      interrupted: () => (output.interrupted = true),
    });
  } finally {
    receiver.close();
  }
  console.log(table(output.scenarios, opts, receiver.requests()));
  console.log(`\nJSON: ${path.relative(process.cwd(), RESULTS_FILE) || RESULTS_FILE}`);
  if (results.some(({ runs }) => runs.some((r) => r.error !== undefined))) process.exitCode = 1;
}

runMain(main);
