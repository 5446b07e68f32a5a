"""The shipping plan (netrain.track.plan): who ships a journal, when, and with which
settings, as one decision table; what the submitting side tells its tasks is what the task
side reads back."""

from __future__ import annotations

import math

import pytest

from netrain import env as names
from netrain.track import plan
from netrain.track.plan import Facts, Live, Who

SERVER = "http://tracking.example:5000"
SQLITE = "sqlite:////shared/mlflow.db"
POSTGRES = "postgresql://u@db/mlflow"

# (facts, live, then, NETRAIN_SHIP_LATER told to the tasks, warns)
TABLE = [
    (Facts("local", ""), Live.NEVER, Who.NOBODY, None, False),
    (Facts("slurm", "", tasks=9), Live.NEVER, Who.NOBODY, None, False),
    (Facts("local", SERVER, tasks=3), Live.LATER, Who.COURIER, "1", False),
    (Facts("local", SQLITE), Live.LATER, Who.COURIER, "1", False),
    (Facts("local", SERVER, retrain=True), Live.NOW, Who.NOBODY, None, False),
    (Facts("slurm", SERVER, tasks=2), Live.LATER, Who.SYNC_JOB, "1", False),
    (Facts("slurm", POSTGRES, tasks=2), Live.LATER, Who.SYNC_JOB, "1", False),
    (Facts("slurm", SERVER, tasks=1), Live.NOW, Who.NOBODY, None, False),
    (Facts("slurm", SERVER, tasks=5, retrain=True), Live.NOW, Who.NOBODY, None, False),
    (Facts("slurm", SERVER, tasks=5, launcher="mlflow-cli"), Live.NOW, Who.NOBODY, None, False),
    (Facts("slurm", SERVER, tasks=5, env_kind="conda-yaml"), Live.NOW, Who.NOBODY, None, False),
    (Facts("slurm", SQLITE, tasks=1), Live.NEVER, Who.SYNC_JOB, "always", False),
    (Facts("slurm", SQLITE, tasks=1, retrain=True), Live.NEVER, Who.SYNC_JOB, "always", False),
    (Facts("slurm", SQLITE, tasks=4, launcher="direct"), Live.NEVER, Who.SYNC_JOB, "always",
     False),
    (Facts("slurm", SQLITE, tasks=4, launcher="mlflow-cli"), Live.NOW, Who.NOBODY, None, True),
    (Facts("slurm", SQLITE, env_kind="conda-yaml"), Live.NOW, Who.NOBODY, None, True),
    (Facts("slurm", SQLITE, env_kind="conda-yaml", retrain=True), Live.NOW, Who.NOBODY, None,
     False),
]


@pytest.mark.parametrize(("facts", "live", "then", "told", "warns"), TABLE,
                         ids=[f"{f.executor}-{f.uri.split(':')[0] or 'none'}-{f.tasks}"
                              f"{'-retrain' if f.retrain else ''}-{f.launcher}-{f.env_kind}"
                              for f, *_ in TABLE])
def test_the_decision_table(facts: Facts, live: Live, then: Who, told: str | None,
                            warns: bool) -> None:
    p = plan.decide(facts, environ={})
    assert (p.live, p.then) == (live, then)
    assert p.task_env() == ({names.SHIP_LATER: told} if told else {})
    assert p.courier == (then is Who.COURIER) and p.sync_job == (then is Who.SYNC_JOB)
    assert p.one_writer == (told == "always")
    assert bool(p.warning) == warns


@pytest.mark.parametrize(("facts", "live", "then", "told", "warns"), TABLE[2:])
@pytest.mark.parametrize("launcher", [True, False])
def test_the_task_reads_back_what_it_was_told(facts: Facts, live: Live, then: Who,
                                              told: str | None, warns: bool,
                                              launcher: bool) -> None:
    environ = {**plan.decide(facts, environ={}).task_env(), names.SHIP_AFTER: "12"}
    mine = plan.for_task(facts.uri, launcher=launcher, environ=environ)
    if live is Live.NEVER:
        assert (mine.where, mine.after) == ("", math.inf) and "SQLite" in mine.note
    else:
        assert mine.where == ("launcher" if launcher else "task") and not mine.note
        assert mine.after == (12.0 if live is Live.LATER else 0.0)


def test_a_task_under_the_launcher_or_without_tracking_ships_nothing_itself() -> None:
    for shipper in ("launcher", "off"):
        mine = plan.for_task(SERVER, launcher=False, environ={names.SHIPPER: shipper})
        assert (mine.where, mine.note) == ("", "")
    # the launcher itself ships whatever NETRAIN_SHIPPER says (it sets it for its child)
    assert plan.for_task(SERVER, launcher=True,
                         environ={names.SHIPPER: "launcher"}).where == "launcher"
    assert plan.for_task("", launcher=False, environ={}) == plan.TaskShipping("")
    said = plan.for_task("", launcher=True, environ={})
    assert said.where == "" and "netrain sync" in said.note


def test_settings_from_the_environment() -> None:
    assert plan.settings({}) == plan.Settings()
    s = plan.settings({names.SHIP_AFTER: "-5", names.DRAIN_TIMEOUT: "7.5",
                       names.SHIP_JOURNALS: "0", names.SHIP_CHUNK_EVENTS: "100",
                       names.SHIP_BACKOFF: "0.1", names.SHIP_BACKOFF_MAX: "2",
                       names.SHIP_HTTP_TIMEOUT: "9"})
    assert s == plan.Settings(ship_after=0.0, drain_timeout=7.5, journals=1, chunk_events=100,
                              backoff=0.1, backoff_max=2.0, http_timeout=9.0)
    # a value that is not a number keeps its default
    bad = plan.settings({n: "soon" for n in (names.SHIP_AFTER, names.DRAIN_TIMEOUT,
                                             names.SHIP_JOURNALS, names.SHIP_CHUNK_EVENTS)})
    assert bad == plan.Settings()
    later = plan.for_task(SERVER, launcher=True,
                          environ={names.SHIP_LATER: "1", names.DRAIN_TIMEOUT: "3"})
    assert (later.after, later.drain) == (30.0, 3.0)


def test_journals_at_once() -> None:
    assert plan.journals_at_once(SERVER, {}) == 8
    assert plan.journals_at_once(SERVER, {}, beside_training=True) == 4
    assert plan.journals_at_once("https://x", {names.SHIP_JOURNALS: "2"},
                                 beside_training=True) == 2
    assert plan.journals_at_once(SERVER, {names.SHIP_JOURNALS: "16"}) == 16
    for uri in (SQLITE, POSTGRES, "./mlruns"):  # one writer at a time: one journal
        assert plan.journals_at_once(uri, {names.SHIP_JOURNALS: "16"}) == 1
