/**
 * What the JSON shape pre-scan (`checkJsonLimits`) costs next to the parse it guards. Run by hand,
 * not by `npm run bench`:
 *
 *   node dist/bench/json-limits.js [--seconds 1]
 *
 * For request bodies of ~1 KiB, ~64 KiB and ~16 MiB, in two shapes (MLflow `dataframe_records`,
 * key-heavy; v2 `inputs` with a flat FP32 array, number-heavy), it times `JSON.parse(body as text)`
 * (what `parseJson` did before) and the scan alone under the server's default limits (64 levels,
 * 4,194,304 values), and prints the scan's cost as a share of the parse. Bodies are deterministic.
 */
import { parseArgs } from 'node:util';
import { checkJsonLimits, DEFAULT_JSON_LIMITS } from '../src/http/index.js';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '1' } } });
const seconds = Number(values.seconds);
const limits = DEFAULT_JSON_LIMITS;

function records(targetBytes: number): Buffer {
  const rows: string[] = [];
  let bytes = 0;
  for (let i = 0; bytes < targetBytes; i++) {
    const row = JSON.stringify({ sepal_length: 5.1 + (i % 7) / 10, sepal_width: 3.5, petal_length: 1.4 + (i % 3) / 10, petal_width: 0.2, species_hint: 'setosa' });
    rows.push(row);
    bytes += row.length + 1;
  }
  return Buffer.from(`{"dataframe_records": [${rows.join(',')}]}`);
}

function numbers(targetBytes: number): Buffer {
  const data: string[] = [];
  let bytes = 0;
  for (let i = 0; bytes < targetBytes; i++) {
    const x = (((i * 7919) % 20000) / 1000 - 10).toFixed(3);
    data.push(x);
    bytes += x.length + 1;
  }
  return Buffer.from(`{"inputs": [{"name": "x", "datatype": "FP32", "shape": [${data.length}], "data": [${data.join(',')}]}]}`);
}

/** Mean µs per call of `fn` over about `seconds`, after a warm-up. */
function time(fn: () => void): number {
  const warmUntil = performance.now() + 200;
  while (performance.now() < warmUntil) fn();
  let calls = 0;
  const start = performance.now();
  const until = start + seconds * 1000;
  let now = start;
  while (now < until) {
    fn();
    calls++;
    now = performance.now();
  }
  return ((now - start) * 1000) / calls;
}

const rows: string[] = [];
for (const [label, bytes] of [['1 KiB', 1024], ['64 KiB', 64 * 1024], ['16 MiB', 16 * 1024 * 1024]] as const) {
  for (const [shape, make] of [['records', records], ['numbers', numbers]] as const) {
    const body = make(bytes);
    let sink: unknown;
    const parseUs = time(() => (sink = JSON.parse(body.toString('utf8'))));
    const scanUs = time(() => checkJsonLimits(body, limits));
    void sink;
    rows.push(`| ${label} | ${shape} | ${body.length} | ${fmt(parseUs)} | ${fmt(scanUs)} | ${((scanUs / parseUs) * 100).toFixed(1)}% | ${((body.length / scanUs) / 1000).toFixed(2)} |`);
  }
}
process.stdout.write([
  `node ${process.version}, ${seconds} s per measurement`,
  '',
  '| body | shape | bytes | JSON.parse µs | scan µs | scan / parse | scan GB/s |',
  '|---|---|---|---|---|---|---|',
  ...rows,
  '',
].join('\n'));

function fmt(us: number): string {
  return us >= 100 ? us.toFixed(0) : us.toFixed(2);
}
