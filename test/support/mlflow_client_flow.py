"""The MLflow user's path against a Ferry server, with the real MLflow client and its defaults.

Run once per test file (Python start-up is slow): `mlflow_client_flow.py <model-name> <rows.json>`
with MLFLOW_TRACKING_URI and MLFLOW_TRACKING_TOKEN set. Every step is recorded as
{"ok": true, "value": ...} or {"ok": false, "error": "..."} and printed as one JSON object on
stdout, which the Node test asserts on. The flow: set_experiment -> start_run ->
log_params/metrics -> sklearn.log_model(registered_model_name=...) -> set alias "champion"; the
reference predictions come from mlflow.pyfunc.load_model("models:/<name>@champion") loaded
through Ferry; then every MlflowClient tracking and registry method a user calls, on objects of
their own so that the served model stays as it is.
"""
import json
import os
import sys
import tempfile
import traceback

import numpy as np
import pandas as pd

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from sklearn.linear_model import LinearRegression

results = {}


def step(name, fn):
    try:
        value = fn()
        results[name] = {"ok": True, "value": value}
        return value
    except Exception as e:  # noqa: BLE001 - every failure is a result the test reports
        results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc(limit=3)}
        return None


def main():
    name, rows_file = sys.argv[1], sys.argv[2]
    with open(rows_file) as f:
        rows = json.load(f)
    frame = pd.DataFrame(rows, columns=["a", "b"])
    client = MlflowClient()

    # ---- the flow ------------------------------------------------------------------------
    exp = step("set_experiment", lambda: mlflow.set_experiment(f"{name}-exp").experiment_id)
    x = np.array([[1.0, 2.0], [2.0, 1.0], [3.0, 5.0], [4.0, 3.0]])
    y = x @ np.array([1.5, -0.5]) + 0.25
    model = LinearRegression().fit(x, y)
    run_id = None
    with mlflow.start_run() as run:
        run_id = run.info.run_id
        step("log_param", lambda: mlflow.log_param("fit_intercept", True))
        step("log_params", lambda: mlflow.log_params({"alpha": 0.5, "solver": "lsq"}))
        step("log_metric", lambda: [mlflow.log_metric("rmse", v, step=i) for i, v in enumerate([0.9, 0.4, 0.6])] and None)
        step("log_metrics", lambda: mlflow.log_metrics({"r2": 0.97, "mae": 0.3}))
        step("set_tags", lambda: mlflow.set_tags({"team": "churn", "stage": "dev"}))
        step("log_text", lambda: mlflow.log_text("hello", "notes/readme.txt"))
        step("log_input", lambda: mlflow.log_input(mlflow.data.from_pandas(pd.DataFrame(x, columns=["a", "b"]), name="train"), context="training"))
        info = step("log_model", lambda: mlflow.sklearn.log_model(
            model, "model", registered_model_name=name,
            input_example=pd.DataFrame(x[:2], columns=["a", "b"])).model_uri)
    step("run_artifact_uri", lambda: run.info.artifact_uri)
    step("set_registered_model_alias", lambda: client.set_registered_model_alias(name, "champion", "1"))
    step("reference", lambda: [float(v) for v in mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(frame)])
    step("reference_by_version", lambda: [float(v) for v in mlflow.pyfunc.load_model(f"models:/{name}/1").predict(frame)])
    step("download_artifacts_models_uri", lambda: sorted(os.listdir(mlflow.artifacts.download_artifacts(f"models:/{name}/1"))))
    step("model_version_source", lambda: [client.get_model_version(name, "1").source, client.get_model_version(name, "1").run_id])

    # ---- tracking methods ----------------------------------------------------------------
    step("get_experiment", lambda: client.get_experiment(exp).name)
    step("get_experiment_by_name", lambda: client.get_experiment_by_name(f"{name}-exp").experiment_id)
    step("search_experiments", lambda: sorted(e.name for e in client.search_experiments()))
    side = step("create_experiment", lambda: client.create_experiment(f"{name}-side", tags={"k": "v"}))
    step("search_experiments_filter", lambda: [e.name for e in client.search_experiments(filter_string=f"name LIKE '{name}%'", order_by=["name DESC"])])
    step("set_experiment_tag", lambda: client.set_experiment_tag(side, "k", "w") or client.get_experiment(side).tags)
    step("rename_experiment", lambda: client.rename_experiment(side, f"{name}-side2") or client.get_experiment(side).name)
    step("delete_experiment", lambda: client.delete_experiment(side) or client.get_experiment(side).lifecycle_stage)
    step("search_experiments_deleted", lambda: [e.name for e in client.search_experiments(view_type=mlflow.entities.ViewType.DELETED_ONLY)])
    step("restore_experiment", lambda: client.restore_experiment(side) or client.get_experiment(side).lifecycle_stage)
    step("get_run", lambda: (lambda r: {
        "params": r.data.params, "metrics": r.data.metrics, "tags": {k: v for k, v in r.data.tags.items() if k in ("team", "stage")},
        "status": r.info.status, "has_logged_model": "mlflow.log-model.history" in r.data.tags, "inputs": len(r.inputs.dataset_inputs)})(client.get_run(run_id)))
    step("get_metric_history", lambda: [(m.step, m.value) for m in client.get_metric_history(run_id, "rmse")])
    step("search_runs", lambda: [r.info.run_id for r in client.search_runs([exp])])
    step("search_runs_filter", lambda: [r.info.run_id for r in client.search_runs([exp], filter_string="metrics.rmse < 1 and params.alpha = '0.5'", order_by=["metrics.rmse DESC"])])
    step("search_runs_no_match", lambda: [r.info.run_id for r in client.search_runs([exp], filter_string="metrics.rmse > 1")])
    step("mlflow_search_runs", lambda: len(mlflow.search_runs([exp])))
    other = step("create_run", lambda: client.create_run(exp, run_name="second").info.run_id)
    step("log_batch", lambda: client.log_batch(other, metrics=[Metric("m", 1.5, 1700000000000, 0)], params=[Param("p", "1")], tags=[RunTag("t", "x")]) or (
        lambda r: [r.data.metrics, r.data.params, r.data.tags.get("t")])(client.get_run(other)))
    step("log_param_conflict", lambda: client.log_param(other, "p", "2"))
    step("set_tag", lambda: client.set_tag(other, "t2", "y") or client.get_run(other).data.tags.get("t2"))
    step("delete_tag", lambda: client.delete_tag(other, "t2") or ("t2" in client.get_run(other).data.tags))
    step("update_run", lambda: client.update_run(other, status="FAILED", name="renamed") or [client.get_run(other).info.status, client.get_run(other).info.run_name])
    step("set_terminated", lambda: client.set_terminated(other) or client.get_run(other).info.status)
    step("delete_run", lambda: client.delete_run(other) or client.get_run(other).info.lifecycle_stage)
    step("search_runs_after_delete", lambda: [r.info.run_id for r in client.search_runs([exp])])
    step("restore_run", lambda: client.restore_run(other) or client.get_run(other).info.lifecycle_stage)
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "extra.txt")
        with open(p, "w") as f:
            f.write("extra")
        step("log_artifact", lambda: client.log_artifact(other, p, "files"))
    step("list_artifacts", lambda: sorted((a.path, a.is_dir) for a in client.list_artifacts(run_id)))
    step("list_artifacts_model", lambda: sorted(a.path for a in client.list_artifacts(run_id, "model")))
    step("download_artifacts_run", lambda: sorted(os.listdir(client.download_artifacts(run_id, "model", tempfile.mkdtemp()))))
    step("load_text", lambda: mlflow.artifacts.load_text(f"runs:/{run_id}/notes/readme.txt"))
    step("download_other_run", lambda: open(os.path.join(mlflow.artifacts.download_artifacts(f"runs:/{other}/files/extra.txt")), encoding="utf8").read())

    # ---- registry methods ----------------------------------------------------------------
    step("get_registered_model", lambda: (lambda m: [m.name, m.aliases])(client.get_registered_model(name)))
    step("search_registered_models", lambda: [m.name for m in client.search_registered_models()])
    step("search_model_versions", lambda: [(v.name, v.version) for v in client.search_model_versions()])
    step("search_model_versions_filter", lambda: [v.version for v in client.search_model_versions(f"name = '{name}'")])
    step("get_model_version_by_alias", lambda: client.get_model_version_by_alias(name, "champion").version)
    step("get_model_version_download_uri", lambda: client.get_model_version_download_uri(name, "1"))
    aside = f"{name}-b"
    step("register_model_runs_uri", lambda: (lambda v: [v.version, v.run_id, v.status])(mlflow.register_model(f"runs:/{run_id}/model", aside)))
    step("create_model_version", lambda: (lambda v: [v.version, v.run_id])(client.create_model_version(aside, f"runs:/{run_id}/model", run_id=run_id)))
    step("create_registered_model", lambda: client.create_registered_model(f"{name}-c", tags={"a": "1"}, description="d").name)
    step("update_registered_model", lambda: client.update_registered_model(aside, description="new").description)
    step("set_registered_model_tag", lambda: client.set_registered_model_tag(aside, "k", "v") or client.get_registered_model(aside).tags)
    step("delete_registered_model_tag", lambda: client.delete_registered_model_tag(aside, "k") or client.get_registered_model(aside).tags)
    step("update_model_version", lambda: client.update_model_version(aside, "1", description="vd").description)
    step("set_model_version_tag", lambda: client.set_model_version_tag(aside, "1", "k", "v") or client.get_model_version(aside, "1").tags)
    step("delete_model_version_tag", lambda: client.delete_model_version_tag(aside, "1", "k") or client.get_model_version(aside, "1").tags)
    step("transition_model_version_stage", lambda: client.transition_model_version_stage(aside, "1", "Production").current_stage)
    step("transition_archive_existing", lambda: client.transition_model_version_stage(aside, "2", "Production", archive_existing_versions=True) and [
        client.get_model_version(aside, "1").current_stage, client.get_model_version(aside, "2").current_stage])
    step("get_latest_versions", lambda: [(v.version, v.current_stage) for v in client.get_latest_versions(aside)])
    step("get_latest_versions_stage", lambda: [v.version for v in client.get_latest_versions(aside, stages=["Archived"])])
    step("search_registered_models_order", lambda: [m.name for m in client.search_registered_models(filter_string=f"name LIKE '{name}%'", order_by=["name DESC"])])
    step("set_alias_b", lambda: client.set_registered_model_alias(aside, "best", "2"))
    # MlflowClient.rename_registered_model returns None in 2.12 (its docstring says otherwise).
    step("rename_registered_model", lambda: client.rename_registered_model(aside, f"{name}-renamed") or (lambda m: [m.name, m.aliases])(client.get_registered_model(f"{name}-renamed")))
    step("get_after_rename", lambda: [client.get_model_version_by_alias(f"{name}-renamed", "best").version, client.get_model_version(f"{name}-renamed", "1").run_id])
    step("load_after_rename", lambda: [float(v) for v in mlflow.pyfunc.load_model(f"models:/{name}-renamed@best").predict(frame)])
    step("delete_registered_model_alias", lambda: client.delete_registered_model_alias(f"{name}-renamed", "best") or client.get_registered_model(f"{name}-renamed").aliases)
    step("delete_model_version", lambda: client.delete_model_version(f"{name}-renamed", "1") or [v.version for v in client.search_model_versions(f"name = '{name}-renamed'")])
    step("delete_registered_model", lambda: client.delete_registered_model(f"{name}-c") or [m.name for m in client.search_registered_models(filter_string=f"name = '{name}-c'")])

    print(json.dumps(results))


if __name__ == "__main__":
    main()
