/**
 * The LLM section of the benchmark: tokens/s and time to first token (TTFT) for the tiny GGUF
 * model (src/fixtures/gguf.ts) at 1 and 4 concurrent streams, two ways:
 *   direct: node-llama-cpp in this process, one context with 4 sequences, `sequence.evaluate`;
 *   ferry: a Ferry server with an llm endpoint (4 sequences), streamed `POST /v1/completions`
 *          over HTTP (SSE), each content event counted as one token (the fixture's vocabulary is
 *          byte-level and never emits EOS, so every stream is exactly `tokens` tokens long).
 * Greedy decoding of `tokens` tokens from the prompt "Ferry"; both use 1 thread per evaluation.
 * TTFT: from sending the request (direct: calling evaluate) to the first token; tokens/s: all
 * streams' tokens ÷ wall time from the first request to the last token.
 */
import http from 'node:http';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { getLlama, type Token } from 'node-llama-cpp';
import { writeTinyGguf } from '../src/fixtures/index.js';
import { ferryApi, registerVersion, startFerryServer, waitEndpointsReady } from './targets.js';
import { stopServer } from './procs.js';

export interface LlmRow {
  target: 'direct' | 'ferry';
  streams: number;
  tokensPerStream: number;
  tokensPerS: number;
  ttftP50Ms: number;
  ttftMaxMs: number;
}

const PROMPT = 'Ferry';
const SEQUENCES = 4;
const CONCURRENCY = [1, 4] as const;

const round = (x: number, d = 1): number => Math.round(x * 10 ** d) / 10 ** d;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1] ?? NaN;

function row(target: LlmRow['target'], streams: number, tokens: number, ttfts: number[], wallMs: number): LlmRow {
  return { target, streams, tokensPerStream: tokens, tokensPerS: round((streams * tokens) / (wallMs / 1000)), ttftP50Ms: round(median(ttfts), 2), ttftMaxMs: round(Math.max(...ttfts), 2) };
}

/** node-llama-cpp in this process. */
async function direct(modelPath: string, tokens: number): Promise<LlmRow[]> {
  const llama = await getLlama({ gpu: false, build: 'never', progressLogs: false });
  const model = await llama.loadModel({ modelPath });
  const context = await model.createContext({ contextSize: 2048, sequences: SEQUENCES, threads: 1 });
  const sequences = Array.from({ length: SEQUENCES }, () => context.getSequence());
  const prompt: Token[] = [...(model.tokens.bos === null ? [] : [model.tokens.bos]), ...model.tokenize(PROMPT)];
  const rows: LlmRow[] = [];
  try {
    for (const streams of CONCURRENCY) {
      const t0 = performance.now();
      const ttfts = await Promise.all(sequences.slice(0, streams).map(async (seq) => {
        await seq.clearHistory();
        const start = performance.now();
        let first = NaN;
        let n = 0;
        for await (const _ of seq.evaluate(prompt, { temperature: 0 })) {
          if (n++ === 0) first = performance.now() - start;
          if (n >= tokens) break;
        }
        return first;
      }));
      rows.push(row('direct', streams, tokens, ttfts, performance.now() - t0));
    }
  } finally {
    await context.dispose();
    await model.dispose();
    await llama.dispose();
  }
  return rows;
}

/** One streamed completion; resolves with its TTFT (ms) once `[DONE]` arrived, checking the token count. */
function stream(base: string, token: string, tokens: number): Promise<number> {
  const body = JSON.stringify({ model: 'tiny-llm', prompt: PROMPT, max_tokens: tokens, temperature: 0, stream: true });
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const start = performance.now();
    let first = NaN;
    let events = 0;
    let buffered = '';
    const req = http.request({ hostname: u.hostname, port: u.port, method: 'POST', path: '/v1/completions', agent: false, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      if (res.statusCode !== 200) reject(new Error(`ferry answered ${res.statusCode}`));
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffered += chunk;
        let i: number;
        while ((i = buffered.indexOf('\n\n')) >= 0) {
          const event = buffered.slice(0, i);
          buffered = buffered.slice(i + 2);
          if (event === 'data: [DONE]') continue;
          const c = JSON.parse(event.slice('data: '.length)) as { choices: Array<{ text: string; finish_reason: string | null }> };
          if (c.choices[0]?.text !== '') {
            if (events++ === 0) first = performance.now() - start;
          }
        }
      });
      res.on('end', () => (events > 0 ? resolve(first) : reject(new Error('the stream carried no tokens'))));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A Ferry server with the tiny model behind an llm endpoint of 4 sequences. */
async function ferry(dir: string, modelDir: string, tokens: number, token: string): Promise<LlmRow[]> {
  const proc = await startFerryServer(join(dir, 'ferry-llm'), token, [], { warmPoolSize: 0 });
  try {
    await registerVersion(proc.url, token, 'tiny-llm', modelDir);
    await ferryApi(proc.url, token, 'POST', '/api/2.0/serving-endpoints', {
      name: 'tiny-llm', config: { served_entities: [{ entity_name: 'tiny-llm', entity_version: '1', scale_to_zero_enabled: false }] },
    });
    await waitEndpointsReady(proc.url, token, ['tiny-llm']);
    await stream(proc.url, token, 8); // warm-up: the first generation allocates the compute buffers
    const rows: LlmRow[] = [];
    for (const streams of CONCURRENCY) {
      const t0 = performance.now();
      const ttfts = await Promise.all(Array.from({ length: streams }, () => stream(proc.url, token, tokens)));
      rows.push(row('ferry', streams, tokens, ttfts, performance.now() - t0));
    }
    return rows;
  } finally {
    await stopServer(proc);
  }
}

/** Runs both targets at 1 and 4 streams of `tokens` tokens each. */
export async function runLlm(tmp: string, tokens: number, token: string, log: (line: string) => void): Promise<LlmRow[]> {
  const modelDir = join(tmp, 'tiny-llm');
  await mkdir(modelDir, { recursive: true });
  const modelPath = await writeTinyGguf(modelDir);
  await writeFile(join(modelDir, 'ferry.json'), JSON.stringify({ sequences: SEQUENCES, context_size: 2048 }));
  log(`bench: llm: tiny GGUF, ${tokens} tokens per stream at ${CONCURRENCY.join(' and ')} streams, direct and through Ferry...`);
  const rows = [...await direct(modelPath, tokens), ...await ferry(tmp, modelDir, tokens, token)];
  for (const r of rows) log(`bench:   ${r.target} ×${r.streams}: ${r.tokensPerS} tokens/s, TTFT p50 ${r.ttftP50Ms} ms (max ${r.ttftMaxMs})`);
  return rows;
}

/** The section's markdown. */
export function llmMarkdown(rows: LlmRow[]): string[] {
  if (rows.length === 0) return [];
  return [
    '## LLM streaming (tiny GGUF, node-llama-cpp, greedy, 1 thread per evaluation)',
    '',
    '| target | streams | tokens per stream | tokens/s (all streams) | TTFT p50 ms | TTFT max ms |',
    '|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.target} | ${r.streams} | ${r.tokensPerStream} | ${r.tokensPerS} | ${r.ttftP50Ms} | ${r.ttftMaxMs} |`),
    '',
  ];
}
