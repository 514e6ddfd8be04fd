"""Real MLflow models for Ferry's python-flavor tests, and MLflow's own answers to compare with.

  python3 mlflow_models.py save OUT_DIR
      Saves, with MLflow's own save_model functions, one directory per model kind under OUT_DIR.
  python3 mlflow_models.py reference MODEL_DIR BODIES_JSON
      Prints, for each request body of the JSON list in BODIES_JSON, what `mlflow models serve` answers:
      the body parsed by MLflow's scoring server, `mlflow.pyfunc.load_model(MODEL_DIR).predict(...)`
      in this process, and the predictions written as the scoring server writes them.

Needs numpy, pandas, scikit-learn, xgboost and mlflow importable (PYTHONPATH may point at MLflow).
"""

import io
import json
import os
import sys

import numpy as np
import pandas as pd



def save(out):
    import mlflow
    import xgboost as xgb
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression, LogisticRegression

    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "b": [0.5, 0.1, 0.2, 0.9, 0.3, 0.7]})
    y = np.array([1.0, 2.0, 2.5, 4.1, 5.2, 5.9])
    mlflow.sklearn.save_model(LinearRegression().fit(frame, y), f"{out}/sk_col", input_example=frame.head(2))

    x = frame.to_numpy(dtype=np.float32)
    clf = LogisticRegression().fit(x, [0, 1, 0, 1, 0, 1])
    mlflow.sklearn.save_model(clf, f"{out}/sk_tensor", signature=infer_signature(x, clf.predict(x)), input_example=x[:2])

    mlflow.xgboost.save_model(xgb.XGBRegressor(n_estimators=10, max_depth=3).fit(frame, y), f"{out}/xgb", input_example=frame.head(2))

    class ScaledModel(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            with open(context.artifacts["scale"]) as f:
                self.scale = json.load(f)["scale"]

        def predict(self, context, model_input, params=None):
            offset = (params or {}).get("offset", 0.0)
            return pd.DataFrame({
                "y": model_input["a"] * self.scale + model_input["n"] + offset,
                "label": [f"{s}!" for s in model_input["s"]],
            })

    os.makedirs(f"{out}/tmp", exist_ok=True)
    with open(f"{out}/tmp/scale.json", "w") as f:
        json.dump({"scale": 3}, f)
    mixed = pd.DataFrame({"a": [1.5, 2.5], "n": [1, 2], "s": ["x", "y"]})
    mlflow.pyfunc.save_model(
        f"{out}/custom", python_model=ScaledModel(), artifacts={"scale": f"{out}/tmp/scale.json"},
        signature=infer_signature(mixed, params={"offset": 0.0}), input_example=mixed,
    )

    class Raising(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            if (model_input["a"] < 0).any():
                raise ValueError(f"negative a: {float(model_input['a'].min())}")
            if (model_input["a"] == 666).any():
                os._exit(3)
            return model_input["a"].to_numpy() * 2

    ab = pd.DataFrame({"a": [1.0, 2.0]})
    mlflow.pyfunc.save_model(f"{out}/raising", python_model=Raising(), signature=infer_signature(ab, np.array([2.0, 4.0])), input_example=ab)

    class Named(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return {"sum": model_input["x"].sum(axis=1) * model_input["k"], "first": model_input["x"][:, 0]}

    class Probe(mlflow.pyfunc.PythonModel):
        """Tries what a hostile model would, as told by params; answers what happened."""

        def predict(self, context, model_input, params=None):
            action, target = params["action"], params["path"]
            if action == "uid":
                return np.full(len(model_input), os.getuid())
            if action == "read":
                with open(target, "rb") as f:
                    return np.full(len(model_input), len(f.read(100)))
            if action == "write":
                with open(target, "w") as f:
                    f.write("changed")
                return np.zeros(len(model_input))
            if action == "connect":
                import socket

                host, port = target.rsplit(":", 1)
                socket.create_connection((host, int(port)), timeout=5).close()
                return np.ones(len(model_input))
            if action == "fork":
                # A fork bomb: every process forks for ever, retrying when a fork is refused.
                while True:
                    try:
                        os.fork()
                    except OSError:
                        pass
            if action == "alloc":
                block = bytearray(int(target))
                return np.full(len(model_input), len(block))
            return model_input["a"].to_numpy()

    one = pd.DataFrame({"a": [1.0]})
    mlflow.pyfunc.save_model(
        f"{out}/probe", python_model=Probe(), signature=infer_signature(one, np.array([1.0]), params={"action": "", "path": ""}),
    )

    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    sig = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3), "x"), TensorSpec(np.dtype(np.int64), (-1,), "k")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,), "sum"), TensorSpec(np.dtype(np.float32), (-1,), "first")]),
    )
    mlflow.pyfunc.save_model(f"{out}/named", python_model=Named(), signature=sig)


def reference(model_dir, bodies_file):
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server as ss

    model = mlflow.pyfunc.load_model(model_dir)
    schema = model.metadata.get_input_schema()
    answers = []
    with open(bodies_file) as f:
        bodies = json.load(f)
    for body in bodies:
        try:
            data, params = ss._split_data_and_params(json.dumps(body))
            data = ss.infer_and_parse_data(data, schema)
            raw = model.predict(data, params=params)
            out = io.StringIO()
            ss.predictions_to_json(raw, out)
            answers.append({"ok": True, "json": json.loads(out.getvalue())})
        except Exception as err:  # noqa: BLE001 - the test compares error cases too
            answers.append({"ok": False, "error": f"{type(err).__name__}: {err}"})
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    if sys.argv[1] == "save":
        save(sys.argv[2])
    else:
        reference(sys.argv[2], sys.argv[3])
