/**
 * The worker thread that runs a user's JS module (the js flavor starts one per loaded model). It
 * imports the module, awaits `load(context)`, then answers predict calls. The module is the only
 * user code on this thread, so a module that loops forever blocks only this thread: the flavor
 * terminates it and starts a fresh one. Everything crossing back is structured-cloned data.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';
import type { HostInit, HostReply, HostRequest } from './messages.js';

const port = parentPort;
if (!port) throw new Error('the js model host must run as a worker thread');
const init = workerData as HostInit;

interface UserModule {
  load?: (context: { dir: string; params: Record<string, unknown> }) => unknown;
  predict?: (input: Record<string, unknown[]>, params: Record<string, unknown>) => unknown;
}

/**
 * An error's message, with Node's code when it has one (e.g. ERR_ACCESS_DENIED from the permission
 * model). The model directory's server-side path (under the data directory) becomes "." : callers
 * see paths relative to their own artifact, never where the server keeps it.
 */
function describe(err: unknown): string {
  const text = (() => {
    if (!(err instanceof Error)) return String(err);
    const code = (err as NodeJS.ErrnoException).code;
    return typeof code === 'string' && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
  })();
  return text.replaceAll(pathToFileURL(init.dir).href, '.').replaceAll(init.dir, '.');
}

function send(msg: HostReply): void {
  try {
    port?.postMessage(msg);
  } catch (err) {
    // A result holding functions, symbols or class instances with private state cannot be cloned.
    if (msg.type === 'result') port?.postMessage({ type: 'failed', id: msg.id, message: `predict returned a value that cannot leave the module: ${describe(err)}` } satisfies HostReply);
    else throw err;
  }
}

async function start(): Promise<void> {
  let mod: UserModule;
  try {
    mod = (await import(pathToFileURL(init.modulePath).href)) as UserModule;
    if (typeof mod.predict !== 'function') throw new Error(`${init.main} exports no predict(input, params) function`);
    if (mod.load !== undefined && typeof mod.load !== 'function') throw new Error(`${init.main} exports a load that is not a function`);
    await mod.load?.({ dir: init.dir, params: init.params });
  } catch (err) {
    send({ type: 'load-failed', message: describe(err) });
    return;
  }
  const predict = mod.predict.bind(mod);
  port?.on('message', (msg: HostRequest) => {
    Promise.resolve()
      .then(() => predict(msg.input, msg.params))
      .then(
        (output) => send({ type: 'result', id: msg.id, output }),
        (err: unknown) => send({ type: 'failed', id: msg.id, message: describe(err) }),
      );
  });
  send({ type: 'ready' });
}

void start();
