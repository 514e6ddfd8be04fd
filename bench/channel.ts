/**
 * What the framed channel costs per request, and what request metadata (request id, traceparent)
 * adds to it. Run by hand, not by `npm run bench`:
 *
 *   node dist/bench/channel.js [--requests 200000] [--in-flight 64] [--rounds 5]
 *
 * An echo round trip over a Unix socket with the client (`FramedChannel`) and the server
 * (`serveFrames`) in this one process: 64 requests in flight, a 23-byte JSON body, the answer
 * echoing it; without metadata, with a request id and a traceparent (what the gateway sends), and
 * with those and the replica's span sent back (what it sends when spans are exported). Prints, per variant, the median over the rounds of requests per second and CPU µs
 * per request (client and server together: user + system time of this process). One process keeps
 * the two ends on one core, so the numbers are cost, not parallel throughput.
 */
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { FramedChannel, serveFrames, type ChannelRequest } from '../src/channel/index.js';

const { values } = parseArgs({ options: { requests: { type: 'string', default: '200000' }, 'in-flight': { type: 'string', default: '64' }, rounds: { type: 'string', default: '5' } } });
const REQUESTS = Number(values.requests);
const IN_FLIGHT = Number(values['in-flight']);
const ROUNDS = Number(values.rounds);
const LIMIT = { maxPayloadBytes: 1024 * 1024 };
const BODY = Buffer.from('{"inputs":[[1,2,3,4.5]]}');

const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'ferry-bench-channel-'));
const socketPath = path.join(dir, 'echo.sock');
const server = net.createServer((socket) => {
  serveFrames(socket, async (req) => ({ status: 200, body: req.body, span: req.meta?.wantSpan === true ? { spanId: '00f067aa0ba902b7', startUnixUs: 1.7e15, durationUs: 120 } : undefined }), LIMIT);
});
await new Promise<void>((resolve) => server.listen(socketPath, resolve));

/** Runs REQUESTS requests, IN_FLIGHT at a time; returns req/s and CPU µs per request. */
async function round(channel: FramedChannel, request: (i: number) => ChannelRequest): Promise<{ rps: number; cpuUs: number }> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < REQUESTS) await channel.request(request(next++), 10_000);
  };
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { rps: (REQUESTS / ms) * 1000, cpuUs: (cpu.user + cpu.system) / REQUESTS };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
const variants: Array<[string, (i: number) => ChannelRequest]> = [
  ['no metadata', () => ({ method: 'POST', path: '/invocations', body: BODY })],
  ['request id + traceparent', (i) => ({
    method: 'POST', path: '/invocations', body: BODY, meta: { requestId: `9f2c4e01a7b3-${i.toString(36)}`, traceparent: TRACEPARENT, tracestate: undefined, wantSpan: false },
  })],
  ['… + span sent back', (i) => ({
    method: 'POST', path: '/invocations', body: BODY, meta: { requestId: `9f2c4e01a7b3-${i.toString(36)}`, traceparent: TRACEPARENT, tracestate: undefined, wantSpan: true },
  })],
];
const channel = new FramedChannel({ kind: 'unix', socketPath }, LIMIT);
const results = new Map<string, { rps: number[]; cpuUs: number[] }>(variants.map(([name]) => [name, { rps: [], cpuUs: [] }]));
await round(channel, variants[0]![1]); // warm-up
// Variants interleaved round by round, so drift (other load on the machine) hits them alike.
for (let r = 0; r < ROUNDS; r++) {
  for (const [name, request] of variants) {
    const { rps, cpuUs } = await round(channel, request);
    results.get(name)?.rps.push(rps);
    results.get(name)?.cpuUs.push(cpuUs);
  }
}
channel.close();
server.close();
await fsp.rm(dir, { recursive: true, force: true });
process.stdout.write(`| variant | req/s | CPU µs/req |\n|---|---|---|\n`);
for (const [name, { rps, cpuUs }] of results) {
  process.stdout.write(`| ${name} | ${Math.round(median(rps)).toLocaleString('en')} | ${median(cpuUs).toFixed(2)} |\n`);
}
