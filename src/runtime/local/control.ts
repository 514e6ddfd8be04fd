/**
 * The runtime's end of a replica process's control channel (frames: `src/channel/control.ts`),
 * the child's descriptor 3. Every byte from a replica is untrusted: the replica runs a user's
 * model, which can write anything to that descriptor. So frames are bounded (a few KiB, no
 * payload), each message is checked field by field and against what the process may say in its
 * state, and the first thing that is not a valid message is a protocol violation: `onViolation`
 * is called once (the runtime SIGKILLs the process and reports it) and nothing from it is read
 * again. Nothing here throws into the server.
 */
import type { Socket } from 'node:net';
import { ControlDecoder, encodeControlFrame, type ControlFrame } from '../../channel/index.js';
import type { ReplicaToRuntime, RuntimeToReplica, StageRequest } from '../../replica/index.js';

/** A replica's messages are tiny: `{"type":"stage","id":…,"name":…,"version":…}` with a ≤ 200-character name. */
const LIMITS = { maxHeaderBytes: 4096, maxPayloadBytes: 0 };
/**
 * Stage requests one family replica may have outstanding here; more is a violation. The replica
 * keeps itself to 16 (one more is answered 503 inside it); twice that leaves room for requests it
 * gave up on (its 30 s timeout) that this side has not answered yet. Each is one file read.
 */
const MAX_STAGE_REQUESTS = 32;
/** Longest model name in a stage request (registered model names are shorter). */
const MAX_NAME_CHARS = 256;
/**
 * A replica that closes its end of the channel while it runs has cut its lifeline (it would
 * outlive the server); it gets this long to exit on its own (a normal exit closes it too).
 */
const CLOSED_CHANNEL_GRACE_MS = 1000;

/** What a process may say now. */
export interface LinkState {
  /** An idle pool process that has not said `warm` yet. */
  pool: boolean;
  /** A process serving a model family: it may ask for members. */
  family: boolean;
}

export class ReplicaLink {
  private readonly decoder = new ControlDecoder(LIMITS);
  private readonly listeners: ((msg: ReplicaToRuntime) => void)[] = [];
  private violated: string | undefined;
  private warmSeen = false;
  private listeningSeen = false;
  private exited = false;
  /** Stage requests received and not answered yet. */
  private outstanding = 0;

  constructor(
    private readonly socket: Socket,
    private state: LinkState,
    /** Called once, with what the replica sent (for its log and exit report). */
    private readonly onViolation: (what: string) => void,
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    // EPIPE/ECONNRESET once the process is gone: its exit is reported elsewhere.
    socket.on('error', () => undefined);
    socket.once('end', () => {
      setTimeout(() => {
        if (!this.exited) this.violate('closed its control channel while running');
      }, CLOSED_CHANNEL_GRACE_MS).unref();
    });
  }

  /** What the process sent that broke the protocol, once it did. */
  get violation(): string | undefined {
    return this.violated;
  }

  /** Valid messages, in order. */
  onMessage(listener: (msg: ReplicaToRuntime) => void): void {
    this.listeners.push(listener);
  }

  /** The process was claimed, or its spec is known: what it may say from now on. */
  setState(state: LinkState): void {
    this.state = state;
  }

  /** The process exited: a closed channel is expected now. */
  markExited(): void {
    this.exited = true;
  }

  send(msg: Exclude<RuntimeToReplica, { type: 'staged' }>): void {
    if (!this.socket.destroyed) this.socket.write(encodeControlFrame(msg));
  }

  /** Answers a stage request: the model file's bytes as the frame's payload, or the error. */
  sendStaged(reply: { id: number; modelFile: string; bytes: Buffer } | { id: number; error: { error_code: string; message: string } }): void {
    this.outstanding = Math.max(0, this.outstanding - 1);
    if (this.socket.destroyed) return;
    this.socket.write('bytes' in reply
      ? encodeControlFrame({ type: 'staged', id: reply.id, modelFile: reply.modelFile }, reply.bytes)
      : encodeControlFrame({ type: 'staged', id: reply.id, error: reply.error }));
  }

  /** Stops reading; the socket is destroyed. */
  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    if (this.violated !== undefined) return;
    const { frames, error } = this.decoder.push(chunk);
    for (const frame of frames) {
      const msg = this.check(frame);
      if (typeof msg === 'string') {
        this.violate(msg);
        return;
      }
      for (const listener of this.listeners) listener(msg);
    }
    if (error !== undefined) this.violate(`sent ${error}`);
  }

  /** The message, or what is wrong with it. */
  private check({ header, payload }: ControlFrame): ReplicaToRuntime | string {
    const type = JSON.stringify(header.type).slice(0, 64);
    if (payload.length > 0) return `sent a payload with a ${type} message`;
    switch (header.type) {
      case 'warm':
        if (!this.state.pool || this.warmSeen) return `sent 'warm' ${this.state.pool ? 'twice' : 'while not an idle pool process'}`;
        this.warmSeen = true;
        return { type: 'warm' };
      case 'listening':
        if (this.state.pool || this.listeningSeen) return `sent 'listening' ${this.state.pool ? 'before it was given a model' : 'twice'}`;
        this.listeningSeen = true;
        return { type: 'listening' };
      case 'stage': {
        if (!this.state.family || this.state.pool) return "sent 'stage' but serves no model family";
        const { id, name, version } = header;
        if (!Number.isSafeInteger(id) || typeof name !== 'string' || name.length > MAX_NAME_CHARS || !Number.isSafeInteger(version)) {
          return `sent a malformed 'stage' message (${JSON.stringify({ id, name, version }).slice(0, 200)})`;
        }
        if (this.outstanding >= MAX_STAGE_REQUESTS) return `sent more than ${MAX_STAGE_REQUESTS} outstanding 'stage' requests`;
        this.outstanding++;
        return { type: 'stage', id: id as number, name, version: version as number } satisfies StageRequest;
      }
      default:
        return `sent an unknown message type ${type}`;
    }
  }

  private violate(what: string): void {
    if (this.violated !== undefined) return;
    this.violated = what;
    this.onViolation(what);
  }
}
