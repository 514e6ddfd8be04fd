/**
 * The baseline: what a user would write instead of Ferry. One process, node:http and
 * onnxruntime-node (1 intra-op thread, 1 inter-op thread, sequential); it checks a bearer token
 * with a plain string compare, parses `{"inputs": [[...], ...]}`, runs the model on the main thread
 * and answers `{"predictions": [[...], ...]}`.
 *
 *   node dist/bench/baseline-server.js --model linear.onnx [--port 0]   (token in BENCH_TOKEN)
 *
 * Prints "Baseline listening on http://127.0.0.1:PORT" once ready.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import ort from 'onnxruntime-node';

const { values } = parseArgs({ options: { model: { type: 'string' }, port: { type: 'string', default: '0' } } });
const token = process.env.BENCH_TOKEN;
if (values.model === undefined || token === undefined) {
  process.stderr.write('usage: BENCH_TOKEN=... node baseline-server.js --model <file.onnx> [--port N]\n');
  process.exit(2);
}
const expectedAuth = `Bearer ${token}`;

const session = await ort.InferenceSession.create(values.model, {
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  executionMode: 'sequential',
});
const inputName = session.inputNames[0]!;
const outputName = session.outputNames[0]!;

function reply(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function predict(body: string): Promise<number[][]> {
  const rows = (JSON.parse(body) as { inputs?: unknown }).inputs;
  if (!Array.isArray(rows) || rows.length === 0 || !rows.every((r) => Array.isArray(r))) throw new Error('"inputs" must be a non-empty list of rows');
  const width = (rows[0] as unknown[]).length;
  const data = new Float32Array(rows.length * width);
  rows.forEach((row: unknown[], i) => {
    if (row.length !== width) throw new Error('rows differ in length');
    row.forEach((v, j) => { data[i * width + j] = Number(v); });
  });
  const out = await session.run({ [inputName]: new ort.Tensor('float32', data, [rows.length, width]) });
  const y = out[outputName]!;
  const cols = y.dims[1] ?? 1;
  const flat = y.data as Float32Array;
  return Array.from({ length: rows.length }, (_, i) => Array.from(flat.subarray(i * cols, (i + 1) * cols)));
}

const server = http.createServer((req, res) => {
  if (req.headers.authorization !== expectedAuth) return reply(res, 401, { error_code: 'UNAUTHENTICATED', message: 'bad token' });
  if (req.method !== 'POST' || req.url !== '/invocations') return reply(res, 404, { error_code: 'NOT_FOUND', message: 'not found' });
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    predict(Buffer.concat(chunks).toString('utf8')).then(
      (predictions) => reply(res, 200, { predictions }),
      (err: unknown) => reply(res, 400, { error_code: 'BAD_REQUEST', message: err instanceof Error ? err.message : String(err) }),
    );
  });
});
server.keepAliveTimeout = 65_000;
server.listen(Number(values.port), '127.0.0.1', () => {
  process.stdout.write(`Baseline listening on http://127.0.0.1:${(server.address() as AddressInfo).port}\n`);
});
const stop = (): void => { server.close(() => process.exit(0)); server.closeAllConnections(); };
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
