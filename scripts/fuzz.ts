/**
 * `npm run fuzz [-- --cases 500000 --duration 10m --seed N --concurrency 8 --warmup 20000]`:
 * the long fuzzing campaign over every route of the server (test/support/fuzz.ts; the suite runs
 * a bounded one in test/fuzz.test.ts). Prints a summary; exits 1 on any finding.
 * `npm run fuzz -- --seed S --replay N` sends case N of seed S once and prints request and answer.
 * `npm run fuzz -- --artifacts [--cases 2000 --seed N]`: the hostile-artifact campaign instead
 * (test/support/artifact-fuzz.ts; the suite runs a bounded one in test/artifact-fuzz.test.ts).
 */
import { parseArgs } from 'node:util';
import { parseDurationMs } from '../src/config/index.js';
import { ARTIFACT_FUZZ_DEFAULTS, formatArtifactReport, fuzzArtifacts } from '../test/support/artifact-fuzz.js';
import { formatReport, FUZZ_DEFAULTS, fuzzRoutes, replayCase } from '../test/support/fuzz.js';

const { values } = parseArgs({
  options: {
    cases: { type: 'string' },
    duration: { type: 'string' },
    seed: { type: 'string' },
    concurrency: { type: 'string', default: String(FUZZ_DEFAULTS.concurrency) },
    warmup: { type: 'string', default: '20000' },
    replay: { type: 'string' },
    artifacts: { type: 'boolean', default: false },
  },
});

const int = (name: string, v: string | undefined): number => {
  const n = Number(v);
  if (!Number.isSafeInteger(n)) {
    process.stderr.write(`fuzz: --${name} must be an integer, got ${JSON.stringify(v)}\n`);
    process.exit(2);
  }
  return n;
};
const duration = (v: string): number => {
  const ms = parseDurationMs(v);
  if (ms === undefined) {
    process.stderr.write(`fuzz: --duration must be a duration like 10m or 90s, got ${JSON.stringify(v)}\n`);
    process.exit(2);
  }
  return ms;
};
const log = (line: string): void => void process.stdout.write(line + '\n');
const seed = values.seed === undefined ? (Date.now() ^ (Math.random() * 0x7fffffff)) | 0 : int('seed', values.seed);

if (values.artifacts) {
  const report = await fuzzArtifacts({ ...ARTIFACT_FUZZ_DEFAULTS, seed, cases: int('cases', values.cases ?? '2000'), log });
  log(formatArtifactReport(report));
  process.exit(report.problems.length === 0 ? 0 : 1);
}

if (values.replay !== undefined) {
  if (values.seed === undefined) {
    process.stderr.write('fuzz: --replay needs the --seed of the run that found it\n');
    process.exit(2);
  }
  const r = await replayCase(seed, int('replay', values.replay), FUZZ_DEFAULTS.timeoutMs, log);
  log(r.excluded === undefined ? `verdict: ${r.problem ?? 'acceptable'}` : `(the fuzzer would not send it: ${r.excluded})`);
  process.exit(r.problem === undefined ? 0 : 1);
}

const report = await fuzzRoutes({
  ...FUZZ_DEFAULTS,
  seed,
  cases: values.duration === undefined ? int('cases', values.cases ?? '500000') : Number.MAX_SAFE_INTEGER,
  ...(values.duration === undefined ? {} : { durationMs: duration(values.duration) }),
  warmupCases: int('warmup', values.warmup),
  concurrency: int('concurrency', values.concurrency),
  log,
});
log(formatReport(report));
process.exit(report.problems.length === 0 ? 0 : 1);
