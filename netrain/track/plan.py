"""Who ships a journal to MLflow, when, and with which settings: the one place that decides.

Pure functions of the facts (the executor, the tracking store, how many tasks start
together, the batch's launcher and environment, the environment variables). Every side
asks here: the executor (``decide``: a courier, a sync job, what the tasks are told), the
scripts (``leaves_to_sync_job``), the launcher and the task (``for_task``: ship live, from
where, after how long), sync and the courier (``journals_at_once``), heal and the shipper
(``settings().drain_timeout``).

The submitting side tells its tasks its decision through NETRAIN_SHIP_LATER (``Plan.
task_env``); ``for_task`` reads it back there. The decision table, for tasks started with a
tracking URI:

=========  =======================================  ===========  ======================
executor   store, tasks                             live         then (what is left)
=========  =======================================  ===========  ======================
local      any (``netrain run``)                    after 30 s   courier
local      a retrain                                now          netrain sync
slurm      SQLite, with a sync job                  never        sync job (one writer)
slurm      a server or database, 2+ tasks, sync job after 30 s   sync job
slurm      otherwise (1 task, retrain, no sync job) now          netrain sync
=========  =======================================  ===========  ======================

Without a tracking URI nobody ships until `netrain sync`. "after 30 s": a task that ends
sooner leaves its whole journal to the one that ships after it, since importing MLflow
and opening the store would cost a short task more than its training (NETRAIN_SHIP_AFTER).
A sync job cannot be used where MLflow builds the task's environment (conda.yaml) or
launches it (``launcher: mlflow-cli``): those tasks ship for themselves.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from netrain import env as names


class Who(str, Enum):
    """Who ships a journal."""

    #: a shipper beside the task while it trains: a thread of the launcher, or a follower
    #: process the task starts (no launcher)
    LIVE = "live"
    #: `netrain run` on the submitting machine, as each task ends (one MLflow client)
    COURIER = "courier"
    #: the batch's SLURM sync job, once its arrays end
    SYNC_JOB = "sync job"
    #: nobody now: `netrain sync` later
    NOBODY = "netrain sync"


class Live(str, Enum):
    """When the shipper beside a task starts."""

    NOW = "now"
    #: once the task has trained Settings.ship_after seconds (a task that ends sooner
    #: leaves its journal to the plan's ``then``)
    LATER = "later"
    NEVER = "never"


#: NETRAIN_SHIP_LATER's values: the submitting side's decision, as its tasks read it
_LATER = {Live.LATER: "1", Live.NEVER: "always"}

#: journals shipped at once to a tracking server: a server answers a few requests at a
#: time (its database commits, its uploads) while each shipper waits on its own answers
DEFAULT_JOURNALS = 8
#: runs of one journal shipped at once to a server: each waits on its own answers while the
#: server works on the others'
DEFAULT_LANES = 4
#: at most this many beside training (the courier of `netrain run` shares the machine)
COURIER_JOURNALS = 4

#: NETRAIN_SHIPPER's value in a task the launcher runs: the launcher ships its journal
LAUNCHER_SHIPS = "launcher"

NO_URI = "no tracking URI (MLFLOW_TRACKING_URI or batch.yaml): run netrain sync later"
ONE_WRITER = ("the tracking store is a SQLite file: this task does not open it; its journal "
              "is shipped by the batch's sync job (or netrain sync --follow)")
NO_ONE_WRITER = ("warning: with this launcher or a conda.yaml environment each task opens "
                 "the SQLite tracking database itself: use launcher: mlflow for one writer")


def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class Settings:
    """The shipping knobs, read from the environment (netrain.env describes each)."""

    #: seconds a task trains before it ships for itself, when someone ships after it
    ship_after: float = 30.0
    #: seconds a shipper keeps going after its task ended; then `netrain sync`
    drain_timeout: float = 60.0
    #: journals shipped at once to a tracking server (a SQLite file: always one)
    journals: int = DEFAULT_JOURNALS
    #: runs of one journal shipped at once to a tracking server (a SQLite file: one)
    lanes: int = DEFAULT_LANES
    #: journal events read and shipped in one round: a network whose whole life is in one
    #: round goes in one request to a netrain server (a packed task of 100 networks writes
    #: about 100 events an epoch)
    chunk_events: int = 10000
    #: first and longest retry delay while tracking is unreachable
    backoff: float = 0.5
    backoff_max: float = 10.0
    #: seconds one MLflow request may take
    http_timeout: float = 60.0


def settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings the environment gives (``os.environ`` by default); a value that is not
    a number keeps its default."""
    e = os.environ if environ is None else environ
    try:
        journals = max(1, int(e.get(names.SHIP_JOURNALS, DEFAULT_JOURNALS)))
    except ValueError:
        journals = DEFAULT_JOURNALS
    return Settings(
        ship_after=max(0.0, _number(e, names.SHIP_AFTER, 30.0)),
        drain_timeout=_number(e, names.DRAIN_TIMEOUT, 60.0),
        journals=journals,
        lanes=max(1, int(_number(e, names.SHIP_LANES, DEFAULT_LANES))),
        chunk_events=int(_number(e, names.SHIP_CHUNK_EVENTS, 10000)),
        backoff=_number(e, names.SHIP_BACKOFF, 0.5),
        backoff_max=_number(e, names.SHIP_BACKOFF_MAX, 10.0),
        http_timeout=_number(e, names.SHIP_HTTP_TIMEOUT, 60.0),
    )


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def is_sqlite(uri: str) -> bool:
    """A SQLite file takes one writer (many network filesystems do not keep its locks)."""
    return uri.startswith("sqlite:")


def journals_at_once(uri: str, environ: Mapping[str, str] | None = None, *,
                     beside_training: bool = False) -> int:
    """How many journals to ship at once to this store: several to a server, one to a file
    or database (it takes one writer at a time; more would only wait on its lock); fewer
    beside training (the courier)."""
    if not is_server(uri):
        return 1
    n = settings(environ).journals
    return min(COURIER_JOURNALS, n) if beside_training else n


def leaves_to_sync_job(launcher: str, env_kind: str) -> bool:
    """Whether a batch's tasks can leave shipping to a sync job (`netrain sync` in the
    task environment): not where MLflow builds that environment (conda.yaml) or launches
    the task (mlflow-cli), whose tasks ship for themselves."""
    return env_kind != "conda-yaml" and launcher != "mlflow-cli"


def one_writer(uri: str, launcher: str, env_kind: str) -> bool:
    """A SQLite store whose SLURM tasks leave all shipping to the batch's sync job."""
    return is_sqlite(uri) and leaves_to_sync_job(launcher, env_kind)


@dataclass(frozen=True)
class Facts:
    """What the submitting side knows when it starts tasks."""

    executor: str  # "local" | "slurm"
    uri: str  # the batch's tracking URI ("" none)
    tasks: int = 1  # tasks started together
    retrain: bool = False
    launcher: str = "mlflow"  # the batch's launcher: mlflow | mlflow-cli | direct
    env_kind: str = "python"  # python | conda-name | conda-yaml


@dataclass(frozen=True)
class Plan:
    """How the journals of tasks started together get to MLflow."""

    live: Live  # when the shipper beside each task starts
    then: Who  # who ships what it leaves (all of it when live is NEVER)
    #: the SQLite store's one writer is the sync job (or `netrain sync --follow`)
    one_writer: bool = False
    #: a line to say as the tasks are started ("" none)
    warning: str = ""
    settings: Settings = field(default_factory=Settings)

    @property
    def courier(self) -> bool:
        return self.then is Who.COURIER

    @property
    def sync_job(self) -> bool:
        return self.then is Who.SYNC_JOB

    def task_env(self) -> dict[str, str]:
        """What the tasks are told (``for_task`` reads it): NETRAIN_SHIP_LATER, set when
        someone ships after them."""
        if self.then in (Who.COURIER, Who.SYNC_JOB) and self.live in _LATER:
            return {names.SHIP_LATER: _LATER[self.live]}
        return {}


def decide(facts: Facts, environ: Mapping[str, str] | None = None) -> Plan:
    """The plan for tasks started together (this module's table)."""
    s = settings(environ)
    if not facts.uri:
        return Plan(Live.NEVER, Who.NOBODY, settings=s)
    if facts.executor == "local":
        # `netrain run` ships each journal as its task ends; a retrain ships itself
        if facts.retrain:
            return Plan(Live.NOW, Who.NOBODY, settings=s)
        return Plan(Live.LATER, Who.COURIER, settings=s)
    can_sync = leaves_to_sync_job(facts.launcher, facts.env_kind)
    if is_sqlite(facts.uri):
        if can_sync:
            return Plan(Live.NEVER, Who.SYNC_JOB, one_writer=True, settings=s)
        # (a retrain has never said this; kept as it was)
        return Plan(Live.NOW, Who.NOBODY, settings=s,
                    warning="" if facts.retrain else NO_ONE_WRITER)
    # Several tasks leave their journals to one sync job after the arrays, rather than each
    # importing MLflow beside its training; one task ships for itself, since a sync job
    # would cost it more than it saves.
    if facts.tasks > 1 and not facts.retrain and can_sync:
        return Plan(Live.LATER, Who.SYNC_JOB, settings=s)
    return Plan(Live.NOW, Who.NOBODY, settings=s)


@dataclass(frozen=True)
class TaskShipping:
    """How one task's journal is shipped from where the task runs."""

    #: "launcher" (a thread of the launcher), "task" (a follower process the task starts),
    #: or "" (nothing ships from here)
    where: str
    #: seconds the task trains before that shipper starts (0: at once)
    after: float = 0.0
    #: seconds it keeps shipping after the task ended
    drain: float = 60.0
    #: why nothing ships from here, to say once ("" nothing to say)
    note: str = ""


def for_task(uri: str, *, launcher: bool,
             environ: Mapping[str, str] | None = None) -> TaskShipping:
    """The task side of the plan: ``launcher`` when asked by the launcher (which runs the
    task as its child), else by the task itself. A task under the launcher (NETRAIN_SHIPPER
    launcher), or told not to ship (off), leaves it to the launcher."""
    e = os.environ if environ is None else environ
    s = settings(e)
    if not launcher and e.get(names.SHIPPER) in (LAUNCHER_SHIPS, "off"):
        return TaskShipping("", drain=s.drain_timeout)
    if not uri:
        return TaskShipping("", drain=s.drain_timeout, note=NO_URI if launcher else "")
    later = e.get(names.SHIP_LATER)
    if later == _LATER[Live.NEVER]:
        return TaskShipping("", math.inf, s.drain_timeout, ONE_WRITER)
    after = s.ship_after if later == _LATER[Live.LATER] else 0.0
    return TaskShipping("launcher" if launcher else "task", after, s.drain_timeout)
