"""The date of a scheduled nightly run (issue 12, item 12): a cron run at 02:00 UTC on day
D processes the completed day D-1 (Settings.schedule_lag_days, default 1); a run given
`run_date` processes exactly that date. The end-to-end run of the real deployment on a
Prefect server is in test_deployments.py; here the same naming and date code runs on
flow runs created with a scheduled start, under the Prefect test harness."""

from __future__ import annotations

import datetime as dt

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.flow_engine import run_flow
from prefect.states import Scheduled

from flows import nightly
from tasks.config import Settings

CRON_RUN = dt.datetime(1997, 10, 3, 2, 0, tzinfo=dt.UTC)  # "0 2 * * *" on 1997-10-03


@flow(name="nightly-date-probe", flow_run_name=nightly._nightly_run_name)
def probe(run_date: dt.date | None = None, schedule_lag_days: int | None = None) -> str:
    """The nightly's own date rule and run name, without the stages."""
    return nightly.night_of(run_date, schedule_lag_days).isoformat()


def _scheduled_run(parameters: dict, at: dt.datetime = CRON_RUN) -> tuple[str, str]:
    """Run `probe` as a worker runs a scheduled flow run: (run name, date processed)."""
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(probe, parameters=parameters,
                                     state=Scheduled(scheduled_time=at))  # fmt: skip
        state = run_flow(probe, flow_run=run, parameters=parameters, return_type="state")
        name = client.read_flow_run(run.id).name
    return name, state.result()


def test_the_lag_is_the_completed_day_and_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().schedule_lag_days == 1
    assert nightly.default_run_date(CRON_RUN, 1) == dt.date(1997, 10, 2)
    assert nightly.default_run_date(CRON_RUN, 0) == dt.date(1997, 10, 3)
    # The day is the UTC day of the start, whatever the schedule's timezone: 00:30 in
    # Paris (UTC+2 in October) is still 1997-10-02 in UTC, so the completed day is 10-01.
    paris = dt.datetime(1997, 10, 3, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert nightly.default_run_date(paris, 1) == dt.date(1997, 10, 1)
    monkeypatch.setenv("METAREC_SCHEDULE_LAG_DAYS", "2")
    assert Settings().schedule_lag_days == 2
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        Settings(schedule_lag_days=-1)


@pytest.mark.usefixtures("prefect_harness")
def test_a_scheduled_run_processes_the_day_before_its_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _scheduled_run({}) == ("nightly-1997-10-02", "1997-10-02")
    assert _scheduled_run({"schedule_lag_days": 0}) == ("nightly-1997-10-03", "1997-10-03")
    monkeypatch.setenv("METAREC_SCHEDULE_LAG_DAYS", "3")  # a worker's environment
    assert _scheduled_run({}) == ("nightly-1997-09-30", "1997-09-30")


@pytest.mark.usefixtures("prefect_harness")
def test_an_explicit_run_date_is_used_as_given() -> None:
    given = {"run_date": "1997-10-03"}
    assert _scheduled_run(given) == ("nightly-1997-10-03", "1997-10-03")
    assert _scheduled_run({**given, "schedule_lag_days": 5}) == (
        "nightly-1997-10-03", "1997-10-03")  # fmt: skip
    # A direct call (the CLI, a backfill) names its date too.
    assert probe(run_date=dt.date(1997, 10, 3)) == "1997-10-03"
