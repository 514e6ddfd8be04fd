/**
 * The gRPC load generator (wrk has no gRPC): `node dist/bench/grpc-load.js --address 127.0.0.1:P
 * --model M --shape 1,4 --input-file F --concurrency 64 --duration-s 5 [--warmup-s 1] [--token T]`.
 * One grpc-js client (one HTTP/2 connection, as tritonclient.grpc uses), `concurrency` calls in
 * flight at all times, each a ModelInfer with the FP32 input `x`'s bytes from F in
 * `raw_input_contents`. Prints one JSON line: requests, req/s, p50/p99/max ms, errors.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { PROTO_FILE } from '../src/grpc/index.js';

const { values } = parseArgs({
  options: {
    address: { type: 'string' }, model: { type: 'string' }, shape: { type: 'string' }, 'input-file': { type: 'string' }, input: { type: 'string', default: 'x' },
    concurrency: { type: 'string', default: '64' }, 'duration-s': { type: 'string', default: '5' }, 'warmup-s': { type: 'string', default: '1' }, token: { type: 'string' },
  },
});
const address = values.address ?? '';
if (!address.startsWith('127.0.0.1:')) throw new Error(`refusing to load ${address}: the bench only targets 127.0.0.1`);
const definition = protoLoader.loadSync(PROTO_FILE, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
const Service = (grpc.loadPackageDefinition(definition) as unknown as { inference: { GRPCInferenceService: typeof grpc.Client } }).inference.GRPCInferenceService;
const client = new Service(address, grpc.credentials.createInsecure()) as grpc.Client & { ModelInfer: (req: unknown, md: grpc.Metadata, cb: (err: grpc.ServiceError | null) => void) => void };
const request = {
  model_name: values.model, model_version: '',
  inputs: [{ name: values.input, datatype: 'FP32', shape: (values.shape ?? '').split(',').map(Number) }],
  raw_input_contents: [readFileSync(values['input-file'] ?? '')],
};
const metadata = new grpc.Metadata();
if (values.token !== undefined) metadata.set('authorization', `Bearer ${values.token}`);

/** Runs the load for `seconds`; latencies in ms when `record`. */
async function load(seconds: number, record: boolean): Promise<{ latencies: number[]; errors: number; firstError: string | undefined; elapsedS: number }> {
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  const worker = async (): Promise<void> => {
    while (performance.now() < end) {
      const start = performance.now();
      const err = await new Promise<grpc.ServiceError | null>((resolve) => client.ModelInfer(request, metadata, resolve));
      if (err !== null) {
        errors++;
        firstError ??= `${grpc.status[err.code]}: ${err.details}`;
      } else if (record) {
        latencies.push(performance.now() - start);
      }
    }
  };
  await Promise.all(Array.from({ length: Number(values.concurrency) }, worker));
  return { latencies, errors, firstError, elapsedS: (performance.now() - t0) / 1000 };
}

await load(Number(values['warmup-s']), false);
const { latencies, errors, firstError, elapsedS } = await load(Number(values['duration-s']), true);
latencies.sort((a, b) => a - b);
const at = (q: number): number => Math.round((latencies[Math.min(latencies.length - 1, Math.ceil(q * latencies.length) - 1)] ?? NaN) * 1000) / 1000;
process.stdout.write(`${JSON.stringify({ requests: latencies.length, requestsPerS: Math.round(latencies.length / elapsedS), p50Ms: at(0.5), p99Ms: at(0.99), maxMs: at(1), errors, firstError })}\n`);
client.close();
