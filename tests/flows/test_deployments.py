"""deployments/prefect.yaml and flows/ops.py end to end: a real Prefect server on 127.0.0.1,
real process workers for metarec-cpu and metarec-gpu, the deployments registered by
`flows.ops.deploy`, runs triggered and checked through the REST API, tables through DuckDB.

Data: ML-100K (from ../shared/data) landed in a tmp lake, cut to its first 17 days so
each night is small; training is 20 steps.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from flows import ops
from tasks.lake.storage import Lake

LAST_DAY = "1997-10-06"  # raw partitions after it are dropped: a small, quick history
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
STAGE_KEYS = {
    "metarec-validate",
    "metarec-episodes",
    "metarec-training",
    "metarec-training-progress",
    "metarec-evaluation",
    "metarec-gate",
    "metarec-recommendations",
    "metarec-partition",
}


# ---- fast checks (no server) ---------------------------------------------------------


def test_prefect_yaml_declares_schedules_pools_and_parameters(tmp_path: Path) -> None:
    spec = yaml.safe_load(ops.PREFECT_FILE.read_text())
    deps = {d["name"]: d for d in spec["deployments"]}
    assert set(deps) == {"nightly", "backfill", "train", "ingest"}
    nightly = deps["nightly"]
    assert nightly["schedules"] == [{"cron": "0 2 * * *", "timezone": "UTC", "active": True}]
    assert "run_date" not in nightly["parameters"]  # from the schedule
    assert nightly["parameters"]["schedule_lag_days"] is None  # Settings: the completed day
    assert {"storage", "top_k", "train_deployment"} <= set(nightly["parameters"])
    assert nightly["parameters"]["train_deployment"] == "train/train"
    assert deps["backfill"]["parameters"]["max_parallel_dates"] == 2
    assert deps["train"]["work_pool"]["name"] == "metarec-gpu"
    assert deps["train"]["concurrency_limit"] == 1
    for name in ("nightly", "backfill", "ingest"):
        assert deps[name]["work_pool"]["name"] == "metarec-cpu"
    assert spec["pull"][0]["prefect.deployments.steps.set_working_directory"] == {
        "directory": "{{ $METAREC_REPO }}"
    }
    for dep in spec["deployments"]:  # every entrypoint exists in the clone
        file, fn = dep["entrypoint"].split(":")
        assert f"def {fn}(" in (ops.REPO / file).read_text()

    out = ops.render_prefect_file(tmp_path / "p.yaml", cron="30 3 * * *",
                                  timezone="Europe/Paris", storage="s3://b/lake")  # fmt: skip
    rendered = {d["name"]: d for d in yaml.safe_load(out.read_text())["deployments"]}
    assert rendered["nightly"]["schedules"][0] == {
        "cron": "30 3 * * *", "timezone": "Europe/Paris", "active": True}  # fmt: skip
    assert all(d["parameters"]["storage"] == "s3://b/lake" for d in rendered.values())
    assert "definitions" not in yaml.safe_load(out.read_text())


# ---- the stack -----------------------------------------------------------------------


class Stack:
    def __init__(self, api: str, lake: Lake, logs: Path) -> None:
        self.api, self.lake, self.logs = api, lake, logs

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call(lambda: ops.api_post(self.api, path, body), path)

    def get(self, path: str) -> Any:
        import urllib.request

        def call() -> Any:
            with urllib.request.urlopen(f"{self.api}/{path}", timeout=30) as r:
                return json.loads(r.read())

        return self._call(call, path)

    @staticmethod
    def _call(fn, path: str) -> Any:
        """Retry a server error (SQLite busy under load); any error says what the API said."""
        import urllib.error

        for attempt in range(5):
            try:
                return fn()
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")[:2000]
                if exc.code < 500 or attempt == 4:
                    raise AssertionError(f"{path}: HTTP {exc.code}: {detail}") from exc
                time.sleep(1 + attempt)
        raise AssertionError("unreachable")

    def trigger(self, deployment: str, parameters: dict, scheduled: str | None = None) -> str:
        dep = self.get(f"deployments/name/{deployment}")
        body: dict[str, Any] = {"parameters": parameters}
        if scheduled:
            body["state"] = {"type": "SCHEDULED", "state_details": {"scheduled_time": scheduled}}
        return self.post(f"deployments/{dep['id']}/create_flow_run", body)["id"]

    def wait(self, run_id: str, timeout: float = 240.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.get(f"flow_runs/{run_id}")
            if run["state_type"] in TERMINAL:
                return run
            time.sleep(1.0)
        tails = {p.name: p.read_text()[-3000:] for p in self.logs.glob("*.log")}
        raise AssertionError(f"flow run {run_id} not finished after {timeout}s; logs: {tails}")

    def flow_runs(self, **flt: Any) -> list[dict]:
        return self.post("flow_runs/filter", {"flow_runs": flt, "sort": "START_TIME_ASC"})

    def artifacts(self, **flt: Any) -> list[dict]:
        """Newest first."""
        return self.post("artifacts/filter", {"artifacts": flt, "sort": "CREATED_DESC"})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, shared_data: Path):
    from tasks.sources.movielens import import_movielens

    root = tmp_path_factory.mktemp("stack")
    lake = Lake(str(root / "lake"))
    import_movielens(shared_data / "ml-100k", lake)
    for value in lake.partitions("raw/interactions"):
        if value > LAST_DAY:
            lake.delete_partition("raw/interactions", dt=value)
    logs = root / "logs"
    logs.mkdir()
    env = ops.child_env(PREFECT_HOME=str(root / "prefect-home"))
    procs = []
    try:
        server, api = ops.start_server(port=ops.free_port(), env=env,
                                       log_path=logs / "server.log")  # fmt: skip
        procs.append(server)
        ops.deploy(api, storage=lake.root, train_max_steps=20)
        fast = {
            "PREFECT_HOME": str(root / "prefect-home"),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
        for pool in ops.POOLS:
            procs.append(ops.start_worker(pool, api, log_path=logs / f"{pool}.log",
                                          extra_env=fast))  # fmt: skip
        yield Stack(api, lake, logs)
    finally:
        for proc in reversed(procs):  # workers first (SIGINT), then the server
            ops.stop_process(proc)
    assert all(p.poll() is not None for p in procs)


@pytest.mark.slow
def test_scheduled_nightly_runs_on_the_pools_and_tells_its_story(stack: Stack) -> None:
    # A run of the scheduled deployment, as the cron would make it: no run_date given. The
    # 02:00 run of 10-04 processes the completed day, 10-03 (schedule_lag_days, default 1).
    run_id = stack.trigger("nightly/nightly", {}, scheduled="1997-10-04T02:00:00+00:00")
    run = stack.wait(run_id)
    assert run["state_type"] == "COMPLETED", run["state"]
    assert run["name"] == "nightly-1997-10-03"
    assert run["expected_start_time"].startswith("1997-10-04T02:00:00")
    assert run["work_pool_name"] == "metarec-cpu"
    # The pull step was not frozen at deploy time: each worker resolves its own clone.
    pull = stack.get("deployments/name/train/train")["pull_steps"]
    assert pull == [{"prefect.deployments.steps.set_working_directory": {
        "directory": "{{ $METAREC_REPO }}"}}]  # fmt: skip

    children = [r for r in stack.flow_runs() if r["id"] != run_id]
    by_name = {r["name"]: r for r in children}
    train = by_name["train-1997-10-03"]
    assert train["state_type"] == "COMPLETED" and train["work_pool_name"] == "metarec-gpu"

    run_ids = [run_id, *(r["id"] for r in children)]
    tasks = stack.post(
        "task_runs/filter", {"task_runs": {}, "flow_runs": {"id": {"any_": run_ids}}}
    )
    names = {t["task_key"].rsplit("-", 1)[0] for t in tasks} | {t["name"] for t in tasks}
    for stage in ("ingest-validate", "episodes", "train", "evaluate", "score", "publish"):
        assert any(n.startswith(stage) for n in names), (stage, names)

    found: dict[str, dict] = {}
    for artifact in stack.artifacts(flow_run_id={"any_": run_ids}):
        found.setdefault(artifact["key"], artifact)
    assert set(found) >= STAGE_KEYS, set(found)
    recs = _table(found["metarec-recommendations"])
    assert {"user_id", "rank", "item_id", "score", "user_segment"} <= set(recs[0])
    assert [r["rank"] for r in recs if r["user_id"] == recs[0]["user_id"]] == list(range(1, 21))
    assert "Published models" in found["metarec-gate"]["data"]
    assert "| segment | holdout users | serves it | why |" in found["metarec-gate"]["data"]
    evaluation = _table(found["metarec-evaluation"])
    assert {"most_popular", "metalearner"} <= {r["model"] for r in evaluation}
    assert sum(r["champion"] == "yes" for r in evaluation if r["segment"] == "all") == 1
    assert _table(found["metarec-episodes"])[0]["run_date"] == "1997-10-03"
    curve = _table(found["metarec-training"])
    assert curve[-1]["step"] == 20 and "train_loss" in curve[-1]
    assert found["metarec-training-progress"]["data"] == pytest.approx(100.0)
    assert found["metarec-partition"]["data"].endswith("/run_date=1997-10-03)")
    validate_rows = _table(found["metarec-validate"])
    assert {r["status"] for r in validate_rows} == {"ok"}

    from tasks.serve.warehouse import connect_warehouse

    con = connect_warehouse(stack.lake)
    n_rows, n_users = con.sql(
        "SELECT count(*), count(DISTINCT user_id) FROM recommendations "
        "WHERE run_date = DATE '1997-10-03'"
    ).fetchall()[0]
    assert n_rows == 20 * n_users and n_users > 500
    status = con.sql("SELECT status FROM runs WHERE stage = 'nightly' AND dt = '1997-10-03'")
    assert status.fetchall()[0][0].startswith("published")


@pytest.mark.slow
def test_backfill_deployment_then_rerun_skips_recomputes_and_reports(stack: Stack) -> None:
    params = {"start": "1997-10-04", "end": LAST_DAY}
    run = stack.wait(stack.trigger("backfill/backfill", params))
    assert run["state_type"] == "COMPLETED", run["state"]
    assert run["name"] == f"backfill-1997-10-04-{LAST_DAY}"
    nights = {r["name"]: r for r in stack.flow_runs(name={"like_": "nightly-1997-10-0"})}
    for day in ("1997-10-04", "1997-10-05", LAST_DAY):
        assert nights[f"nightly-{day}"]["state_type"] == "COMPLETED"
    trains = {r["name"]: r for r in stack.flow_runs(name={"like_": "train-"})}
    assert trains["train-1997-10-05"]["work_pool_name"] == "metarec-gpu"
    (report,) = stack.artifacts(
        key={"any_": ["metarec-backfill"]}, flow_run_id={"any_": [run["id"]]}
    )
    assert {r["run_date"]: r["result"] for r in _table(report)} == {
        "1997-10-04": "ok", "1997-10-05": "ok", LAST_DAY: "ok"}  # fmt: skip
    published = _published(stack.lake)
    assert set(published) >= {"1997-10-03", "1997-10-04", "1997-10-05", LAST_DAY}

    # A late file for 10-05 (valid rows) and a broken file for the last day (most rows
    # quarantined: bad share over the threshold), then the same backfill again.
    lake = stack.lake
    silver_before = lake.read_partition("silver/interactions", dt=dt.date(1997, 10, 5)).height
    late = "user_id,item_id,ts,event_type,value\n" + "".join(
        f"{u},{i},1997-10-05T12:00:00Z,rating,4\n" for u, i in ((1, 1000), (2, 1001), (3, 1002))
    )
    lake.write_file("raw/interactions", "late.csv", late.encode(), dt="1997-10-05")
    broken = "user_id,item_id,ts,event_type,value\n" + "".join(
        f"u{k},i{k},1997-10-06T10:00:00Z,bogus-event,1\n" for k in range(2000)
    )
    lake.write_file("raw/interactions", "broken.csv", broken.encode(), dt=LAST_DAY)

    run2 = stack.wait(stack.trigger("backfill/backfill", params))
    assert run2["state_type"] == "FAILED"
    (report,) = stack.artifacts(key={"any_": ["metarec-backfill"]},
                                flow_run_id={"any_": [run2["id"]]})  # fmt: skip
    results = {r["run_date"]: r["result"] for r in _table(report)}
    assert results["1997-10-04"].startswith("skipped")  # inputs unchanged
    assert results["1997-10-05"] == "ok"  # the late file was picked up
    assert results[LAST_DAY].startswith(f"failed: data of {LAST_DAY}")
    assert "1997-10-06" in run2["state"]["message"]
    after = _published(stack.lake)
    assert after["1997-10-04"] == published["1997-10-04"]  # not recomputed
    assert after["1997-10-05"] > published["1997-10-05"]  # recomputed
    silver = lake.read_partition("silver/interactions", dt=dt.date(1997, 10, 5))
    assert silver.height == silver_before + 3


def _table(artifact: dict) -> list[dict]:
    """Rows of a table artifact (the API returns the table as a JSON string)."""
    data = artifact["data"]
    return json.loads(data) if isinstance(data, str) else data


def _published(lake: Lake) -> dict[str, Any]:
    """run_date -> finished_at of the nightly run records."""
    folder = Path(lake.path("gold/runs", stage="nightly"))
    return {
        p.parent.name.removeprefix("dt="): pl.read_parquet(p, columns=["finished_at"]).item()
        for p in sorted(folder.glob("dt=*/part-0.parquet"))
    }
