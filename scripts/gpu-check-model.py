"""The PyTorch model of the GPU check (scripts/gpu-check.mjs), and its reference answers.

  python3 gpu-check-model.py save OUT_DIR [IN HIDDEN OUT]
      Saves a seeded MLP (Linear IN→HIDDEN, ReLU, Linear HIDDEN→HIDDEN, ReLU, Linear HIDDEN→OUT; float32;
      default 256 1024 16) as an MLflow model with the mlflow.pytorch flavor: with mlflow.pytorch.save_model
      when mlflow is importable, else the same files written here (MLmodel, data/model.pth pickled by
      cloudpickle as mlflow.pytorch does, data/pickle_module_info.txt, input_example.json). Prints
      {"saved_with": ..., "torch": ...} as one JSON line.
  python3 gpu-check-model.py reference MODEL_DIR ROWS_JSON
      Prints the model's output for the rows of ROWS_JSON (a list of lists), computed on the CPU in
      this process from data/model.pth, as one JSON line: the values Ferry's answers are compared with.

The model is a torch.nn.Sequential of torch's own layers: its pickle names only torch classes, so any
Python with torch (and cloudpickle) loads it, with or without MLflow.
"""

import json
import os
import sys

import numpy as np
import torch


def mlp(n_in, hidden, n_out):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(n_in, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, n_out),
    ).eval()


def save(out, n_in, hidden, n_out):
    model = mlp(n_in, hidden, n_out)
    example = np.random.RandomState(0).rand(2, n_in).astype(np.float32)
    try:
        import mlflow.pytorch
        from mlflow.models import infer_signature
    except ImportError:
        mlflow = None
    if mlflow is not None:
        with torch.no_grad():
            y = model(torch.from_numpy(example)).numpy()
        mlflow.pytorch.save_model(model, out, signature=infer_signature(example, y), input_example=example)
        return f"mlflow {mlflow.__version__}"
    import cloudpickle

    os.makedirs(os.path.join(out, "data"))
    torch.save(model, os.path.join(out, "data", "model.pth"), pickle_module=cloudpickle)
    with open(os.path.join(out, "data", "pickle_module_info.txt"), "w") as f:
        f.write("mlflow.pytorch.pickle_module")
    with open(os.path.join(out, "input_example.json"), "w") as f:
        json.dump({"inputs": example.tolist()}, f)
    spec = lambda n: json.dumps([{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, n]}}])  # noqa: E731
    python = ".".join(map(str, sys.version_info[:3]))
    with open(os.path.join(out, "MLmodel"), "w") as f:
        f.write(
            "flavors:\n"
            "  python_function:\n"
            "    data: data\n"
            "    loader_module: mlflow.pytorch\n"
            "    pickle_module_name: mlflow.pytorch.pickle_module\n"
            f"    python_version: {python}\n"
            "  pytorch:\n"
            "    code: null\n"
            "    model_data: data\n"
            f"    pytorch_version: {torch.__version__}\n"
            "saved_input_example_info:\n"
            "  artifact_path: input_example.json\n"
            "  format: tf-serving\n"
            "  type: ndarray\n"
            "signature:\n"
            f"  inputs: '{spec(n_in)}'\n"
            f"  outputs: '{spec(n_out)}'\n"
            "  params: null\n"
        )
    return "gpu-check-model.py (mlflow.pytorch layout, no mlflow here)"


def reference(model_dir, rows_file):
    import cloudpickle

    model = torch.load(os.path.join(model_dir, "data", "model.pth"), map_location="cpu", pickle_module=cloudpickle, weights_only=False)
    with open(rows_file) as f:
        rows = np.asarray(json.load(f), dtype=np.float32)
    with torch.no_grad():
        return model(torch.from_numpy(rows)).numpy().tolist()


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "save":
        sizes = [int(v) for v in sys.argv[3:6]] or [256, 1024, 16]
        print(json.dumps({"saved_with": save(sys.argv[2], *sizes), "torch": torch.__version__}))
    elif len(sys.argv) == 4 and sys.argv[1] == "reference":
        print(json.dumps(reference(sys.argv[2], sys.argv[3])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
