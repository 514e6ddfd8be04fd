/**
 * The hand-written gRPC baseline: `node dist/bench/grpc-baseline-server.js --model F.onnx`. One
 * process, `@grpc/grpc-js` on KServe's proto and onnxruntime-node in the same process: ModelInfer
 * takes the first input's FP32 bytes from `raw_input_contents`, runs the session, answers the
 * first output's bytes in `raw_output_contents`. No auth, no routing, no batching: what a user
 * would write by hand. Prints "gRPC baseline listening on 127.0.0.1:PORT".
 */
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import ort from 'onnxruntime-node';
import { PROTO_FILE } from '../src/grpc/index.js';

const { values } = parseArgs({ options: { model: { type: 'string' } } });
const session = await ort.InferenceSession.create(values.model ?? '', { intraOpNumThreads: 1 });
const inputName = session.inputNames[0] as string;
const outputName = session.outputNames[0] as string;
const definition = protoLoader.loadSync(PROTO_FILE, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
const service = (grpc.loadPackageDefinition(definition) as unknown as { inference: { GRPCInferenceService: { service: grpc.ServiceDefinition } } }).inference.GRPCInferenceService.service;

interface Request { model_name: string; inputs: Array<{ shape: string[] }>; raw_input_contents: Buffer[] }

const server = new grpc.Server();
server.addService(service, {
  ModelInfer: (call: grpc.ServerUnaryCall<Request, unknown>, callback: grpc.sendUnaryData<unknown>) => {
    const req = call.request;
    const raw = req.raw_input_contents[0] ?? Buffer.alloc(0);
    const shape = (req.inputs[0]?.shape ?? []).map(Number);
    const data = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
    session.run({ [inputName]: new ort.Tensor('float32', data, shape) }).then((out) => {
      const y = out[outputName] as ort.Tensor;
      const bytes = y.data as Float32Array;
      callback(null, {
        model_name: req.model_name, model_version: '1', outputs: [{ name: outputName, datatype: 'FP32', shape: y.dims }],
        raw_output_contents: [Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)],
      });
    }, (err: unknown) => callback({ code: grpc.status.INTERNAL, details: String(err) }));
  },
});
server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) throw err;
  process.stdout.write(`gRPC baseline listening on 127.0.0.1:${port}\n`);
});
process.on('SIGTERM', () => server.forceShutdown());
