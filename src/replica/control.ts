/**
 * The replica's end of the control channel to the local runtime (frames: `src/channel/control.ts`),
 * on descriptor 3 when `ferry replica` runs with `--control`. The channel is the replica's
 * lifeline: when the server goes (even by SIGKILL) the socketpair closes and `closed` settles, so
 * the replica drains and exits. The runtime is trusted here (it started this process); still, a
 * frame this end cannot decode closes the channel rather than throw.
 */
import net from 'node:net';
import { CONTROL_FD, ControlDecoder, encodeControlFrame, type ControlFrame } from '../channel/index.js';

/** What the runtime may send: the options, a member's bytes, up to a model file of 4 GiB - 1. */
const LIMITS = { maxHeaderBytes: 1024 * 1024, maxPayloadBytes: 0xffff_ffff };

export interface ControlChannel {
  /** Sends one frame; dropped when the channel is closed (the replica is going away then). */
  send(header: Record<string, unknown> & { type: string }, payload?: Buffer): void;
  /** Calls `listener` with every frame from the runtime. */
  onFrame(listener: (frame: ControlFrame) => void): void;
  /** Settles when the runtime closed the channel (the server is gone) or it broke. */
  readonly closed: Promise<void>;
  readonly isOpen: boolean;
}

let channel: ControlChannel | undefined;

/** Opens the channel on descriptor 3 (once per process). */
export function openControl(): ControlChannel {
  if (channel !== undefined) return channel;
  const socket = new net.Socket({ fd: CONTROL_FD, readable: true, writable: true });
  const decoder = new ControlDecoder(LIMITS);
  const listeners: ((frame: ControlFrame) => void)[] = [];
  let open = true;
  const closed = new Promise<void>((resolve) => {
    const end = (): void => {
      open = false;
      resolve();
    };
    socket.once('close', end);
    socket.once('end', end);
    socket.on('error', end);
  });
  socket.on('data', (chunk: Buffer) => {
    const { frames, error } = decoder.push(chunk);
    for (const frame of frames) for (const listener of listeners) listener(frame);
    if (error !== undefined) {
      process.stdout.write(`${JSON.stringify({ ts: new Date().toISOString(), level: 'error', msg: 'malformed control frame from the runtime; closing the channel', error })}\n`);
      socket.destroy();
    }
  });
  channel = {
    send(header, payload) {
      if (open) socket.write(encodeControlFrame(header, payload));
    },
    onFrame(listener) {
      listeners.push(listener);
    },
    closed,
    get isOpen() {
      return open;
    },
  };
  return channel;
}

/** The channel, when this process was started with one (`openControl` ran). */
export function controlChannel(): ControlChannel | undefined {
  return channel;
}
