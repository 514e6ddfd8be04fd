"""Ferry's Python worker: loads ONE MLflow model and runs predict calls for the replica that started it.

The replica (a Node process) is the shell: it speaks HTTP and frames, decodes and validates requests,
batches them and encodes answers. This process only loads the model and runs `predict`. It talks to
the replica over file descriptor 3 (a Unix socketpair) in length-prefixed binary frames:

    u32 LE frame length (bytes after this field) | u32 LE header length | header (JSON, UTF-8)
    | zero padding to a multiple of 8 bytes from the frame start | payload

Numeric tensors travel in the payload as raw little-endian buffers, each at an 8-byte aligned offset
named in the header with its dtype and shape, and are used here as aligned numpy views of the
frame's buffer (no conversion, no JSON per value; see FrameReader for the one copy a small frame
gets). Strings and values that are not tensors travel in the header.

Messages (header fields):
  replica -> worker  {"op": "load", "mlmodel": {...}, "input": {...}, "limits": {"memoryLimitBytes": N}}  once, first
                     {"op": "predict", "id": N, "inputs": [...], "params": {...} | null}
  worker -> replica  {"op": "loaded", "loader": "...", "python": "3.11.2", "device": "cpu"} or {"op": "failed", "error": "..."}
                     {"id": N, "outputs": [...]} or {"id": N, "error": "ValueError: ..."}

A tensor entry is {"name", "dtype", "shape", "offset", "bytes"}, or {"name", "dtype": "string",
"shape", "values": [...]}; an output that is one JSON value per row is {"name", "rows": [...]}.
Requests are answered one at a time, in order. Stdout is redirected to stderr (the replica's log):
a model that prints must not corrupt the channel, which is fd 3, not stdout.

The device comes in the environment, as MLflow names it: MLFLOW_DEFAULT_PREDICTION_DEVICE is "cuda"
for GPU workload types (CUDA_VISIBLE_DEVICES then names the replica's one GPU) and "cpu" otherwise.
A PyTorch model is moved there, and its inputs with it; on "cuda" it fails to load, saying why, when
CUDA does not work here, rather than running on the CPU unnoticed.

Standard library + numpy (+ pandas for models with a column signature, torch for PyTorch models).
"""

import json
import math
import os
import socket
import struct
import sys
import traceback

# BLAS pools sized before numpy is imported: one replica per core, and a forked process must never
# inherit a pool of threads that do not exist in it.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

CHANNEL_FD = 3
# The replica never sends a frame larger than its body limit times a small factor; this bounds a
# corrupted length field.
MAX_FRAME_BYTES = 1 << 31
U32 = struct.Struct("<I")
PREFIX = struct.Struct("<II")  # frame length, header length
ZEROS = bytes(8)
# One read of the link asks for up to this much: a whole frame of a small batch in one system call.
RECV_BYTES = 1 << 16
NUMERIC = {
    "float16": np.float16, "float32": np.float32, "float64": np.float64,
    "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
    "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64, "bool": np.bool_,
}


class FrameReader:
    """Frames from the link, in as few reads as possible: one `recv` usually brings a whole small
    frame (a batch of a few rows is a few hundred bytes), and bytes past it stay for the next call
    (the replica may send a request before the previous one is answered). A frame larger than what
    the read brought is completed by `recv_into` straight into its own buffer.

    Each frame gets a buffer of its own, starting with its length field, so that the payload (at an
    8-byte aligned offset from the frame start) is 8-byte aligned in memory and stays valid after
    the next read: a model may keep its input arrays.
    """

    def __init__(self, sock):
        self.sock = sock
        self.pending = b""

    def read(self):
        """The next (header, payload) frame; EOFError when the replica closed the link."""
        data = self.pending
        while len(data) < 4:
            data += self._recv(RECV_BYTES)
        (length,) = U32.unpack_from(data, 0)
        if length < 4 or length > MAX_FRAME_BYTES:
            raise ValueError(f"bad frame length {length}")
        end = 4 + length
        if len(data) >= end:
            frame = bytearray(memoryview(data)[:end])
            self.pending = data[end:]
        else:
            frame = bytearray(end)
            frame[:len(data)] = data
            view = memoryview(frame)
            got = len(data)
            while got < end:
                k = self.sock.recv_into(view[got:], end - got)
                if k == 0:
                    raise EOFError("the replica closed the channel")
                got += k
            self.pending = b""
        (header_len,) = U32.unpack_from(frame, 4)
        if 8 + header_len > end:
            raise ValueError(f"bad header length {header_len}")
        header = json.loads(bytes(frame[8:8 + header_len]))
        return header, memoryview(frame)[_align(8 + header_len):]

    def _recv(self, n):
        chunk = self.sock.recv(n)
        if not chunk:
            raise EOFError("the replica closed the channel")
        return chunk


def _align(n):
    return (n + 7) & ~7


def write_frame(sock, header, buffers=()):
    head = json.dumps(header, separators=(",", ":"), default=_json_default).encode()
    pad = _align(8 + len(head)) - (8 + len(head))
    total = 4 + len(head) + pad + sum(b.nbytes for b in buffers)
    parts = [PREFIX.pack(total, len(head)) + head + ZEROS[:pad], *buffers]
    # One gather write per message: header and tensor bytes leave without being joined. It
    # usually takes all of them; a large answer may need more writes.
    sent = sock.sendmsg(parts)
    left = 4 + total - sent
    while left > 0:
        for i, part in enumerate(parts):
            size = memoryview(part).nbytes
            if sent < size:
                parts = [memoryview(part).cast("B")[sent:], *parts[i + 1:]]
                break
            sent -= size
        sent = sock.sendmsg(parts)
        left -= sent


def _json_default(value):
    # numpy scalars and arrays inside pandas records or a model's own lists (MLflow's NumpyEncoder).
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def tensor_of(entry, payload):
    """A numpy view of one input (strings: an object array of the values sent in the header)."""
    shape = tuple(entry["shape"])
    if entry["dtype"] == "string":
        return np.array(entry["values"], dtype=object).reshape(shape)
    dtype = NUMERIC[entry["dtype"]]
    if dtype is np.float16:
        # Node carries float16 tensors as float32 values.
        return np.frombuffer(payload, np.float32, math.prod(shape), entry["offset"]).reshape(shape).astype(np.float16)
    return np.frombuffer(payload, dtype, math.prod(shape), entry["offset"]).reshape(shape)


class Model:
    """The loaded model and how a request's tensors become its input (a DataFrame or arrays)."""

    def __init__(self, mlmodel, spec, base):
        self.spec = spec
        self.loader, self.predict_fn = load(mlmodel, base)

    def predict(self, inputs, params):
        data = self.model_input(inputs)
        if params:
            return self.predict_fn(data, params)
        return self.predict_fn(data, None)

    def model_input(self, inputs):
        kind = self.spec["kind"]
        if kind == "columns":
            import pandas as pd

            return pd.DataFrame({name: inputs[name] for name in self.spec["names"]})
        if kind == "tensor":
            return inputs[self.spec["names"][0]]
        return dict(inputs)


def load(mlmodel, base):
    """(loader description, predict(data, params)). MLflow itself when importable, else Ferry's own."""
    pyfunc = (mlmodel.get("flavors") or {}).get("python_function") or {}
    if pyfunc.get("loader_module") == "mlflow.pytorch":
        _require_device(DEVICE)
    try:
        import mlflow.pyfunc
    except ImportError:
        return _own_loader(mlmodel, base)
    model = mlflow.pyfunc.load_model(base)

    def predict(data, params):
        return model.predict(data, params=params) if params else model.predict(data)

    return f"mlflow {mlflow.__version__}", predict


def _own_loader(mlmodel, base):
    flavors = mlmodel.get("flavors") or {}
    pyfunc = flavors.get("python_function") or {}
    loader = pyfunc.get("loader_module")
    if loader == "mlflow.sklearn" and "sklearn" in flavors:
        sk = flavors["sklearn"]
        fmt = sk.get("serialization_format", "cloudpickle")
        path = os.path.join(base, sk.get("pickled_model") or pyfunc.get("model_path"))
        if fmt == "cloudpickle":
            try:
                import cloudpickle as unpickler
            except ImportError as err:
                raise RuntimeError("this scikit-learn model was saved with cloudpickle: install cloudpickle (or mlflow) in the model's Python environment") from err
        elif fmt == "pickle":
            import pickle as unpickler
        else:
            raise RuntimeError(f"scikit-learn serialization_format {fmt!r} needs mlflow: install mlflow in the model's Python environment")
        with open(path, "rb") as f:
            model = unpickler.load(f)
        fn = getattr(model, pyfunc.get("predict_fn") or "predict")
        return "ferry sklearn", lambda data, params: fn(data)
    if loader == "mlflow.pytorch" and "pytorch" in flavors:
        return "ferry pytorch", _torch_predict(flavors["pytorch"], pyfunc, base)
    if loader == "mlflow.xgboost" and "xgboost" in flavors:
        import importlib

        import xgboost as xgb

        xg = flavors["xgboost"]
        module, _, cls = (xg.get("model_class") or "xgboost.core.Booster").rpartition(".")
        model = getattr(importlib.import_module(module), cls)()
        model.load_model(os.path.join(base, xg["data"]))
        if isinstance(model, xgb.Booster):
            return "ferry xgboost", lambda data, params: model.predict(xgb.DMatrix(data))
        return "ferry xgboost", lambda data, params: model.predict(data)
    raise RuntimeError(
        f"loading a model saved with {loader or 'no loader_module'} needs mlflow: install "
        f"mlflow=={mlmodel.get('mlflow_version') or '<version>'} in the model's Python environment "
        "(Ferry's own loaders cover mlflow.sklearn, mlflow.xgboost and mlflow.pytorch only)"
    )


DEVICE = os.environ.get("MLFLOW_DEFAULT_PREDICTION_DEVICE") or "cpu"


def _require_device(device):
    """On "cuda", CUDA must work in this process (torch.cuda.init raises the driver's reason)."""
    if not device.startswith("cuda"):
        return
    import torch

    try:
        torch.cuda.init()
    except Exception as err:  # noqa: BLE001 - reported as the load failure
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        raise RuntimeError(
            f"this replica has a GPU workload type, but CUDA does not work in its Python worker "
            f"(torch {torch.__version__}, CUDA {torch.version.cuda or 'none: a CPU-only build'}, "
            f"CUDA_VISIBLE_DEVICES={visible!r}): {err}"
        ) from err


def _torch_predict(pt, pyfunc, base):
    """mlflow.pytorch's pyfunc without MLflow: the pickled module from data/model.pth on DEVICE, run
    under no_grad on a float32 frame's values or on the tensor as sent; the answer back on the CPU."""
    import pickle

    import torch

    if pyfunc.get("code"):
        sys.path.insert(0, os.path.join(base, pyfunc["code"]))
    data = os.path.join(base, pt.get("model_data") or pyfunc.get("data") or "data")
    path, module = data, pickle
    if os.path.isdir(data):
        path = os.path.join(data, "model.pth")
        info = os.path.join(data, "pickle_module_info.txt")
        name = "pickle"
        if os.path.exists(info):
            with open(info) as f:
                name = f.read().strip()
        if name in ("mlflow.pytorch.pickle_module", "cloudpickle"):
            import cloudpickle as module  # what mlflow.pytorch.pickle_module is
        elif name != "pickle":
            raise RuntimeError(f"this PyTorch model was saved with pickle module {name!r}: install mlflow in the model's Python environment")
    model = torch.load(path, map_location=DEVICE, pickle_module=module, weights_only=False)
    model.eval()
    model.to(DEVICE)

    def predict(data, params):
        pd = sys.modules.get("pandas")  # imported for models with a column signature
        frame = pd is not None and isinstance(data, pd.DataFrame)
        array = data.values.astype(np.float32) if frame else data
        if not isinstance(array, np.ndarray):
            raise TypeError("a PyTorch model takes a DataFrame or one tensor")
        with torch.no_grad():
            # Request tensors are read-only views of the frame; torch wants a writable array.
            out = model(torch.from_numpy(array if array.flags.writeable else array.copy()).to(DEVICE))
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"the PyTorch model returned {type(out).__name__}, not one tensor")
            out = out.cpu().numpy()
        return pd.DataFrame(out, index=data.index) if frame else out

    return predict


def describe_device():
    """Where the model runs, for the replica's log: "cpu", or "cuda:0 (NVIDIA H100 80GB HBM3)"."""
    if not DEVICE.startswith("cuda"):
        return DEVICE
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return "cuda requested; the model made no CUDA context"
    index = torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def outputs_of(result, rows):
    """(entries, buffers) for a prediction: arrays with one row per input row as tensors, else JSON."""
    pd = sys.modules.get("pandas")  # a model that returns a DataFrame has imported pandas

    if isinstance(result, dict) and result and all(isinstance(v, np.ndarray) for v in result.values()):
        named = list(result.items())
    else:
        named = [("predictions", result)]
    entries, buffers, offset = [], [], 0
    for name, value in named:
        if isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == rows and value.dtype.kind in "fiub":
            arr = np.ascontiguousarray(value.astype(np.float32) if value.dtype == np.float16 else value)
            dtype = "bool" if arr.dtype == np.bool_ else arr.dtype.name
            entries.append({"name": name, "dtype": dtype, "shape": list(arr.shape), "offset": offset, "bytes": arr.nbytes})
            buffers.append(memoryview(arr).cast("B"))
            pad = _align(arr.nbytes) - arr.nbytes
            if pad:
                buffers.append(memoryview(ZEROS)[:pad])
            offset += arr.nbytes + pad
            continue
        # MLflow's scoring server: arrays as lists, frames and series as records.
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif pd is not None and isinstance(value, pd.DataFrame):
            value = value.to_dict(orient="records")
        elif pd is not None and isinstance(value, pd.Series):
            value = pd.DataFrame(value).to_dict(orient="records")
        if not isinstance(value, list) or len(value) != rows:
            raise ValueError(f"predict returned {type(value).__name__} {_short(value)}, not one prediction per input row ({rows} rows)")
        entries.append({"name": name, "rows": value})
    return entries, buffers


def _short(value):
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def rows_of(inputs):
    first = next(iter(inputs.values()), None)
    return 0 if first is None or first.ndim == 0 else first.shape[0]


def serve(sock, reader, model):
    while True:
        try:
            header, payload = reader.read()
        except EOFError:
            return
        rid = header.get("id")
        try:
            inputs = {e["name"]: tensor_of(e, payload) for e in header["inputs"]}
            entries, buffers = outputs_of(model.predict(inputs, header.get("params")), rows_of(inputs))
        except Exception as err:  # noqa: BLE001 - the model's error goes back to the caller
            write_frame(sock, {"id": rid, "error": f"{type(err).__name__}: {err}"})
            continue
        write_frame(sock, {"id": rid, "outputs": entries}, buffers)


def apply_limits(limits):
    """Bounds this process before any model code runs: its address space by the replica's memory
    limit (an allocation past it raises MemoryError, which the caller gets as a model error)."""
    import resource

    memory = limits.get("memoryLimitBytes")
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))


def main(fd=CHANNEL_FD):
    """Serves the replica on the link `fd`: fd 3 when the replica started this process, the
    descriptor the fork server (ferry_forkserver.py) received for it in a forked worker."""
    sys.stdout = sys.stderr
    sock = socket.socket(fileno=fd)
    # A descriptor that came from Node (the fork server's) is non-blocking; this process blocks on it.
    sock.setblocking(True)
    reader = FrameReader(sock)
    header, _ = reader.read()
    try:
        if header.get("op") != "load":
            raise ValueError("the first message must be load")
        apply_limits(header.get("limits") or {})
        # The replica starts this process in the model's directory; /proc/self/cwd reaches it even
        # when a parent directory is closed to this process's user.
        model = Model(header["mlmodel"], header["input"], header.get("dir") or "/proc/self/cwd")
    except BaseException as err:  # noqa: BLE001 - reported, then exit
        traceback.print_exc()
        write_frame(sock, {"op": "failed", "error": f"{type(err).__name__}: {err}"})
        sys.exit(1)
    write_frame(sock, {"op": "loaded", "loader": model.loader, "python": ".".join(map(str, sys.version_info[:3])), "device": describe_device()})
    serve(sock, reader, model)


if __name__ == "__main__":
    main()
