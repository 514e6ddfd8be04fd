/**
 * A TCP relay in front of a local server that a test can block and unblock: the client behind it
 * loses its server (connections reset, new ones dropped) while the server itself carries on, as in
 * a network partition.
 */
import net from 'node:net';

export interface TcpRelay {
  /** The relay's address, in the target's scheme: `http://127.0.0.1:PORT`. */
  url: string;
  /** Resets every open connection and drops new ones until `unblock()`. */
  block(): void;
  unblock(): void;
  close(): Promise<void>;
}

export async function startTcpRelay(target: string): Promise<TcpRelay> {
  const { protocol, port } = new URL(target);
  const sockets = new Set<net.Socket>();
  let blocked = false;
  const server = net.createServer((client) => {
    if (blocked) return void client.destroy();
    const upstream = net.connect(Number(port), '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => {
        sockets.delete(s);
        (s === client ? upstream : client).destroy();
      });
      s.on('error', () => s.destroy());
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const block = (): void => {
    blocked = true;
    for (const s of sockets) s.destroy();
  };
  return {
    url: `${protocol}//127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    block,
    unblock: () => {
      blocked = false;
    },
    close: async () => {
      block();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
