/**
 * The server's listening socket: HTTP, or HTTPS when a certificate is configured, with the limits
 * that keep one client from holding the server's memory or connections (request head size, time
 * to send the head, time to send the whole request), and the warning printed when it listens
 * beyond this machine.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type stream from 'node:stream';
import tls from 'node:tls';
import type { ServerConfig } from '../config/index.js';
import { FerryError, invalidParameter } from '../errors.js';

/** The request limits node:http enforces itself, before any Ferry code sees the request. */
export type ListenLimits = Pick<ServerConfig, 'maxHeaderBytes' | 'headersTimeoutMs' | 'bodyTimeoutMs' | 'maxConnections' | 'maxPendingConnectionsPerIp'>;

/** A certificate chain and its private key, PEM, read and checked by `loadTlsCredentials`. */
export interface TlsCredentials {
  cert: Buffer;
  key: Buffer;
}

/** Idle keep-alive connections close after this; above the 60 s idle timeout of common load balancers. */
const KEEP_ALIVE_TIMEOUT_MS = 65_000;

/**
 * Reads the configured certificate and key and checks that they parse and belong together, so a
 * bad file stops the start with a message that names the key and the path.
 * @throws FerryError INVALID_PARAMETER_VALUE naming `tlsCert` or `tlsKey` and the file.
 */
export async function loadTlsCredentials(files: ServerConfig['tls']): Promise<TlsCredentials | undefined> {
  if (files === undefined) return undefined;
  const read = async (field: string, file: string, what: string): Promise<Buffer> => {
    try {
      return await fsp.readFile(file);
    } catch (err) {
      throw invalidParameter(field, file, `a readable ${what} file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
  };
  const check = (field: string, file: string, what: string, options: tls.SecureContextOptions): void => {
    try {
      tls.createSecureContext(options);
    } catch (err) {
      throw invalidParameter(field, file, `${what} (${(err as Error).message})`);
    }
  };
  const cert = await read('tlsCert', files.certFile, 'PEM certificate');
  const key = await read('tlsKey', files.keyFile, 'PEM private key');
  check('tlsCert', files.certFile, 'a PEM certificate (chain)', { cert });
  check('tlsKey', files.keyFile, 'an unencrypted PEM private key', { key });
  check('tlsKey', files.keyFile, `the private key of the certificate in ${files.certFile}`, { cert, key });
  return { cert, key };
}

/**
 * Creates the server with node's own request limits: a head over `maxHeaderBytes` is answered 431,
 * a head not complete within `headersTimeoutMs` or a request (body included) not complete within
 * `bodyTimeoutMs` is answered 408; each closes the connection. Node checks the timeouts every
 * `connectionsCheckingInterval` (30 s by default, far too coarse for a 10 s limit), so that is set
 * to half the shortest timeout, at most 1 s. With `credentials`, the server speaks HTTPS only
 * and a client gets `headersTimeoutMs` for its TLS handshake as well.
 */
export function createServer(handler: http.RequestListener, limits: ListenLimits, credentials: TlsCredentials | undefined): http.Server | https.Server {
  const timeouts = [limits.headersTimeoutMs, limits.bodyTimeoutMs].filter((ms) => ms > 0);
  const options: http.ServerOptions = {
    maxHeaderSize: limits.maxHeaderBytes,
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.bodyTimeoutMs,
    connectionsCheckingInterval: Math.max(10, Math.min(1000, ...timeouts.map((ms) => Math.floor(ms / 2)))),
  };
  const server = credentials === undefined
    ? http.createServer(options, handler)
    : https.createServer({ ...options, ...credentials, ...(limits.headersTimeoutMs > 0 ? { handshakeTimeout: limits.headersTimeoutMs } : {}) }, handler);
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  // Connections past this are closed as they arrive, before they cost a request: a flood of idle
  // connections cannot use up the process's file descriptors (the database, replicas' sockets).
  server.maxConnections = limits.maxConnections ?? defaultMaxConnections();
  limitPendingPerAddress(server, limits.maxPendingConnectionsPerIp);
  server.on('clientError', answerClientError(limits));
  return server;
}

/**
 * Closes a new connection at once when its client address already has `max` connections whose
 * first request head has not arrived: one address trickling heads (each may take
 * `headersTimeout`) cannot hold the server's connections. A connection stops counting at its
 * first request or when it closes. Connections are keyed by address and port, which the TCP
 * socket and, with TLS, the TLS socket a request arrives on share.
 */
function limitPendingPerAddress(server: http.Server | https.Server, max: number): void {
  const pendingByAddress = new Map<string, number>();
  const release = new Map<string, () => void>();
  server.on('connection', (socket: net.Socket) => {
    const address = socket.remoteAddress ?? '';
    const pending = pendingByAddress.get(address) ?? 0;
    if (pending >= max) {
      socket.destroy();
      return;
    }
    pendingByAddress.set(address, pending + 1);
    const key = `${address}|${socket.remotePort ?? ''}`;
    const done = (): void => {
      if (release.get(key) !== done) return;
      release.delete(key);
      const left = (pendingByAddress.get(address) ?? 1) - 1;
      if (left <= 0) pendingByAddress.delete(address);
      else pendingByAddress.set(address, left);
    };
    release.set(key, done);
    socket.once('close', done);
  });
  server.on('request', (req: http.IncomingMessage) => release.get(`${req.socket.remoteAddress ?? ''}|${req.socket.remotePort ?? ''}`)?.());
}

/**
 * Three quarters of the soft open-file limit (the rest stays for the databases, replica sockets
 * and log files), between 64 and 10,000: 1024 → 768, 1048576 → 10000. 10,000 where /proc cannot
 * be read (not Linux).
 */
export function defaultMaxConnections(limits = readProcLimits()): number {
  const soft = /^Max open files\s+(\d+)/m.exec(limits ?? '')?.[1];
  return soft === undefined ? 10_000 : Math.max(64, Math.min(10_000, Math.floor(Number(soft) * 0.75)));
}

function readProcLimits(): string | undefined {
  try {
    return fs.readFileSync('/proc/self/limits', 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * What node:http cannot parse or wait for any longer (a head too big, a timeout, bytes that are
 * not HTTP) is answered in the one error shape, then the connection is closed. node's own answer
 * would be a bare status line without the body every other error has.
 */
function answerClientError(limits: ListenLimits): (err: NodeJS.ErrnoException, socket: stream.Duplex) => void {
  return (err, socket) => {
    // A response already on its way (a timeout while a handler streams) cannot be replaced.
    const started = (socket as { _httpMessage?: http.ServerResponse })._httpMessage?.headersSent === true;
    if (err.code === 'ECONNRESET' || !socket.writable || started) {
      socket.destroy();
      return;
    }
    const e = err.code === 'HPE_HEADER_OVERFLOW'
      ? new FerryError('REQUEST_HEADER_FIELDS_TOO_LARGE', `The request line and headers exceed ${limits.maxHeaderBytes} bytes (the server's maxHeaderSize).`)
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? new FerryError('REQUEST_TIMEOUT', `The request was not received in time (the server's headersTimeout is ${limits.headersTimeoutMs} ms for the head, bodyTimeout ${limits.bodyTimeoutMs} ms for the whole request).`)
        : new FerryError('MALFORMED_REQUEST', `The request is not valid HTTP/1.1 (${err.code ?? err.message}).`);
    const body = JSON.stringify(e.toBody());
    socket.end(`HTTP/1.1 ${e.status} ${http.STATUS_CODES[e.status] ?? ''}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  };
}

/** True for an address of this machine only: 127.0.0.0/8, ::1, or either as an IPv4-mapped IPv6 address. */
export function isLoopback(address: string): boolean {
  const a = address.toLowerCase();
  const v4 = a.startsWith('::ffff:') ? a.slice('::ffff:'.length) : a;
  if (net.isIPv4(v4)) return v4.startsWith('127.');
  return a === '::1';
}

/**
 * What a server bound to `address` (the bound address, not a host name) exposes, or undefined when
 * it is a loopback address. Example: ("0.0.0.0", 8080, false) → "Listening on 0.0.0.0:8080 (every
 * IPv4 interface): reachable from other machines. TLS is off: tokens and payloads travel in clear
 * text ..."
 */
export function bindWarning(address: string, port: number, tlsOn: boolean): string | undefined {
  if (isLoopback(address)) return undefined;
  const host = net.isIPv6(address) ? `[${address}]` : address;
  const scope = address === '0.0.0.0' ? ' (every IPv4 interface)' : address === '::' ? ' (every interface)' : '';
  const transport = tlsOn
    ? 'TLS is on: clients must use https:// and trust the certificate.'
    : 'TLS is off: tokens and payloads travel in clear text; set tlsCert and tlsKey (--tls-cert, --tls-key) or put a TLS proxy in front.';
  return `Listening on ${host}:${port}${scope}: reachable from other machines. ${transport} See docs/security.md.`;
}

/** The error of a failed listen: a port in use or not ours to take names the setting. */
export function listenError(config: Pick<ServerConfig, 'host' | 'port'>, err: NodeJS.ErrnoException): Error {
  return err.code === 'EADDRINUSE' || err.code === 'EACCES' || err.code === 'EADDRNOTAVAIL'
    ? new FerryError('INVALID_PARAMETER_VALUE', `Cannot listen on ${config.host}:${config.port} (${err.code}): ${err.code === 'EADDRINUSE' ? 'another process uses that port; stop it or pass --port' : 'choose another --host/--port'}.`)
    : err;
}
