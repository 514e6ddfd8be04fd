/** Messages between the js flavor and the worker thread hosting a user's module (./host.ts). */

export interface HostInit {
  /** Absolute path of the module. */
  modulePath: string;
  /** `main` as ferry.json names it, for messages. */
  main: string;
  /** The model directory, handed to `load` as `context.dir`. */
  dir: string;
  /** ferry.json `params`, handed to `load` as `context.params`. */
  params: Record<string, unknown>;
}

export interface HostRequest {
  id: number;
  input: Record<string, unknown[]>;
  params: Record<string, unknown>;
}

export type HostReply =
  | { type: 'ready' }
  | { type: 'load-failed'; message: string }
  | { type: 'result'; id: number; output: unknown }
  | { type: 'failed'; id: number; message: string };
