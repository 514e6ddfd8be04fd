/**
 * The baseline: what a user would write instead of Ferry. node:http and onnxruntime-node
 * (1 intra-op thread, 1 inter-op thread, sequential); it checks a bearer token with a plain string
 * compare, parses `{"inputs": [[...], ...]}`, runs the model on the main thread and answers
 * `{"predictions": [[...], ...]}`. Model-agnostic for a float32 [-1, width] first input: the input
 * name and width come from the model. With `--workers N` (N > 1) it runs N copies under
 * node:cluster sharing one port (the primary only forks and hands out connections).
 *
 *   node dist/bench/baseline-server.js --model m.onnx [--port 0] [--workers 1]   (token in BENCH_TOKEN)
 *
 * Prints "Baseline listening on http://127.0.0.1:PORT" once every worker listens.
 */
import cluster from 'node:cluster';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import ort from 'onnxruntime-node';

const { values } = parseArgs({
  options: { model: { type: 'string' }, port: { type: 'string', default: '0' }, workers: { type: 'string', default: '1' } },
});
const token = process.env.BENCH_TOKEN;
const workers = Number(values.workers);
if (values.model === undefined || token === undefined || !Number.isInteger(workers) || workers < 1) {
  process.stderr.write('usage: BENCH_TOKEN=... node baseline-server.js --model <file.onnx> [--port N] [--workers N]\n');
  process.exit(2);
}

if (workers > 1 && cluster.isPrimary) await runPrimary(workers);
else await runServer(values.model, `Bearer ${token}`);

/** Forks `n` workers (same argv), prints the listening line once all listen, stops them on SIGTERM/SIGINT. */
async function runPrimary(n: number): Promise<void> {
  let listening = 0;
  cluster.on('listening', (_worker, address) => {
    if (++listening === n) process.stdout.write(`Baseline listening on http://127.0.0.1:${address.port}\n`);
  });
  cluster.on('exit', () => {
    if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
  });
  for (let i = 0; i < n; i++) cluster.fork();
  const stop = (): void => { for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM'); };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

async function runServer(modelPath: string, expectedAuth: string): Promise<void> {
  const session = await ort.InferenceSession.create(modelPath, { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential' });
  const input = session.inputMetadata[0];
  const width = input?.isTensor ? input.shape[1] : undefined;
  if (input === undefined || typeof width !== 'number') throw new Error(`${modelPath}: first input is not a [-1, width] tensor`);
  const outputName = session.outputNames[0]!;

  const reply = (res: http.ServerResponse, status: number, body: unknown): void => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };

  const predict = async (body: string): Promise<number[][]> => {
    const rows = (JSON.parse(body) as { inputs?: unknown }).inputs;
    if (!Array.isArray(rows) || rows.length === 0) throw new Error('"inputs" must be a non-empty list of rows');
    const data = new Float32Array(rows.length * width);
    rows.forEach((row: unknown, i) => {
      if (!Array.isArray(row) || row.length !== width) throw new Error(`every row must have ${width} values`);
      row.forEach((v, j) => { data[i * width + j] = Number(v); });
    });
    const out = await session.run({ [input.name]: new ort.Tensor('float32', data, [rows.length, width]) });
    const y = out[outputName]!;
    const cols = y.dims[1] ?? 1;
    const flat = y.data as Float32Array;
    return Array.from({ length: rows.length }, (_, i) => Array.from(flat.subarray(i * cols, (i + 1) * cols)));
  };

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
    // Under node:cluster the primary prints the line, once every worker listens.
    if (cluster.isPrimary) process.stdout.write(`Baseline listening on http://127.0.0.1:${(server.address() as AddressInfo).port}\n`);
  });
  const stop = (): void => { server.close(() => process.exit(0)); server.closeAllConnections(); };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
