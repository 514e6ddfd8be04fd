/**
 * The local store's writer for `putNewFiles` (bulk registration): a worker thread
 * (write-thread-main.ts) that creates a call's files with synchronous system calls, one message
 * per call. Written through libuv's thread pool instead, each file is five or six pool jobs (its
 * parent directories, open, write, close), each a round trip between threads: 8,380 tiny files
 * took 2–3 s that way on the 2-core test machine. The thread starts on the first call and does
 * not keep the process alive while idle.
 */
import { Worker } from 'node:worker_threads';

/** A call's files: absolute paths, and their bytes one after another in `data` (transferred, not copied). */
export interface WriteBatch {
  paths: string[];
  sizes: number[];
  data: ArrayBuffer;
}

/** Per file: its sha256, or the error code (EEXIST: the file exists; ENOTDIR: a parent is a file) and message. */
export type WriteOutcome = { sha256: string } | { code: string; message: string };

interface Pending {
  resolve: (outcomes: WriteOutcome[]) => void;
  reject: (err: Error) => void;
}

export class WriteThread {
  private worker: Worker | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  /** Writes `files` in the thread; rejects only when the thread itself fails (then it is started afresh next time). */
  write(files: ReadonlyArray<{ dest: string; content: Uint8Array }>): Promise<WriteOutcome[]> {
    const data = new Uint8Array(files.reduce((n, f) => n + f.content.byteLength, 0));
    let at = 0;
    for (const f of files) {
      data.set(f.content, at);
      at += f.content.byteLength;
    }
    const batch: WriteBatch = { paths: files.map((f) => f.dest), sizes: files.map((f) => f.content.byteLength), data: data.buffer };
    const worker = this.worker ?? this.start();
    const id = this.nextId++;
    worker.ref();
    return new Promise<WriteOutcome[]>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ id, batch }, [data.buffer]);
    });
  }

  private start(): Worker {
    const worker = new Worker(new URL('./write-thread-main.js', import.meta.url));
    this.worker = worker;
    worker.unref();
    worker.on('message', ({ id, outcomes }: { id: number; outcomes: WriteOutcome[] }) => {
      const p = this.pending.get(id);
      this.pending.delete(id);
      if (this.pending.size === 0) worker.unref();
      p?.resolve(outcomes);
    });
    const fail = (err: Error): void => {
      if (this.worker === worker) this.worker = undefined;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`the artifact writer thread exited (code ${code})`)));
    return worker;
  }
}
