"""Ferry's Python fork server: one pre-started interpreter per model environment that has imported
the heavy modules (numpy, pandas, scikit-learn, ...) once and forks a Python worker
(ferry_worker.py) for each replica of ONE model, so that a replica's worker starts in milliseconds
and every worker shares the imported modules' pages with the fork server (copy on write).

The runtime (src/runtime/local/python-pool.ts) starts this process in a sandbox of its own whose
model directory is still empty; the process waits, idle, in the warm pool. The first replica of a
model claims it: the model is staged into that directory, and from then on the fork server only
forks workers for that model (one model = one sandbox: its workers share the pid namespace and the
model directory, never with another model's).

Channel: file descriptor 3 is a Node IPC channel ("json" serialization: one JSON object per line,
descriptors passed with SCM_RIGHTS). Messages:
  runtime -> here  {"cmd": "NODE_HANDLE", "type": "net.Socket", "msg": {"op": "fork", "id": N}}
                   with one descriptor: the link to a replica (a Unix socket). Acknowledged with
                   {"cmd": "NODE_HANDLE_ACK"}; the forked worker serves the replica on it.
                   {"op": "kill", "id": N}: SIGKILL worker N (its replica is gone).
  here -> runtime  {"op": "ready", "python": "3.11.2", "preloaded": [...]} once the imports are done
                   {"op": "forked", "id": N} and {"op": "exited", "id": N, "status": S}
When the channel closes (the runtime is gone) every worker is killed and this process exits.

Usage: python3 -I -B ferry_forkserver.py MODULE...   (the modules to import before forking)
"""

import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys

# Before any import: BLAS and OpenMP pools of one thread. A forked child inherits no threads, so a
# pool created here would be unusable (or deadlock) in the workers.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

CHANNEL_FD = 3
MAX_LINE_BYTES = 1 << 16

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ferry_worker  # noqa: E402  (imports numpy)


def preload(modules):
    """Imports each module; one that is missing is skipped (the environment may not have it)."""
    done = []
    for name in modules:
        try:
            importlib.import_module(name)
            done.append(name)
        except Exception as err:  # noqa: BLE001 - a module that fails to import is the worker's problem later
            print(f"ferry fork server: not preloaded {name}: {type(err).__name__}: {err}", file=sys.stderr)
    return done


class Channel:
    """The Node IPC channel: JSON lines, with descriptors attached to NODE_HANDLE messages."""

    def __init__(self, fd):
        self.sock = socket.socket(fileno=fd)
        self.buf = b""
        self.fds = []

    def send(self, message):
        self.sock.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def receive(self):
        """The messages completed by one read, each with its descriptor or None; None at EOF."""
        data, fds, _flags, _addr = socket.recv_fds(self.sock, 1 << 16, 4)
        if not data:
            for fd in fds:
                os.close(fd)
            return None
        self.fds.extend(fds)
        self.buf += data
        if len(self.buf) > MAX_LINE_BYTES and b"\n" not in self.buf:
            raise ValueError("a message from the runtime is too long")
        out = []
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            message = json.loads(line)
            handle = None
            if message.get("cmd") == "NODE_HANDLE":
                # Node sends one descriptor per NODE_HANDLE and waits for the ack before the next.
                handle = self.fds.pop(0) if self.fds else None
                self.send({"cmd": "NODE_HANDLE_ACK"})
                message = message.get("msg") or {}
            out.append((message, handle))
        return out


def fork_worker(channel, link_fd):
    """The forked worker: drops everything of the fork server and serves its replica on `link_fd`."""
    pid = os.fork()
    if pid != 0:
        os.close(link_fd)
        return pid
    try:
        channel.sock.close()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        ferry_worker.main(link_fd)
        os._exit(0)
    except SystemExit as err:
        os._exit(err.code if isinstance(err.code, int) else 1)
    except BaseException:  # noqa: BLE001 - a worker never returns into the fork server's loop
        import traceback

        traceback.print_exc()
        os._exit(1)


def not_dumpable():
    """PR_SET_DUMPABLE 0, inherited by the workers: a worker (the model's code) may not ptrace or
    read the memory of the fork server or of another worker, although they share a user."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)


def main():
    sys.stdout = sys.stderr
    not_dumpable()
    channel = Channel(CHANNEL_FD)
    preloaded = preload(sys.argv[1:])
    # Everything imported so far is permanent: moved out of the collector's generations so that a
    # collection in a worker does not touch (and so copy) those pages.
    gc.collect()
    gc.freeze()
    workers = {}  # pid -> id
    ids = {}  # id -> pid
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    channel.send({"op": "ready", "python": ".".join(map(str, sys.version_info[:3])), "preloaded": preloaded})
    selector = selectors.DefaultSelector()
    selector.register(channel.sock, selectors.EVENT_READ, "channel")
    selector.register(wake_r, selectors.EVENT_READ, "signal")
    try:
        while True:
            for key, _ in selector.select():
                if key.data == "signal":
                    os.read(wake_r, 512)
                    reap(channel, workers, ids)
                    continue
                messages = channel.receive()
                if messages is None:
                    return
                for message, handle in messages:
                    op, wid = message.get("op"), message.get("id")
                    if op == "fork" and handle is not None and isinstance(wid, int):
                        pid = fork_worker(channel, handle)
                        workers[pid], ids[wid] = wid, pid
                        channel.send({"op": "forked", "id": wid})
                    elif op == "kill" and wid in ids:
                        os.kill(ids[wid], signal.SIGKILL)
                    elif handle is not None:
                        os.close(handle)
    finally:
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def reap(channel, workers, ids):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        wid = workers.pop(pid, None)
        if wid is not None:
            ids.pop(wid, None)
            channel.send({"op": "exited", "id": wid, "status": status})


if __name__ == "__main__":
    main()
