"""netrain check's pure middle: facts -> verdicts and fixes -> the table; the node probe's HTTP
answer against a real (stdlib) server; the hint when a batch's first tasks fail alike."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netrain.execute import nodeprobe
from netrain.execute.check import (
    FAIL,
    OK,
    Facts,
    failed,
    first_failures_hint,
    judge,
    parse_time_limit,
    render,
    signal_lead,
)

HERE = {"host": "login1", "python": "3.11.7", "executable": "/venv/bin/python",
        "netrain": "0.1.0", "keras": "3.15.1", "trainings": {"writable": True}}


def node(**over: Any) -> dict[str, Any]:
    n: dict[str, Any] = {
        "host": "c042", "python": {"version": "3.11.7", "executable": "/venv/bin/python"},
        "scontrol": "/usr/bin/scontrol", "slurm_job_id": "77", "partition": "gpu",
        "netrain": {"version": "0.1.0", "path": "/venv/lib/netrain"},
        "keras": {"version": "3.15.1", "backend": "tensorflow", "backend_version": "2.21.0"},
        "trainings": {"path": "/scratch/t", "exists": True, "token": True, "write_error": "",
                      "fs": "nfs4"},
        "tracking": {"kind": "sqlite", "dir": "/scratch/t", "exists": True, "write_error": "",
                     "fs": "nfs4"},
    }
    n.update(over)
    return n


def facts(**over: Any) -> Facts:
    f = Facts(executor="slurm", gpu=False, env_kind="python", env_value="/venv/bin/python",
              env_key="cpu", trainings_dir="/scratch/t",
              tracking_uri="sqlite:////scratch/t/mlflow.db", here=dict(HERE), node=node(),
              node_file_seen=True,
              cluster={"max_array_size": 1001, "array": 200, "time": "12:00:00",
                       "signal_value": "B:USR1@120", "requeue_on": True, "base": "",
                       "requeue": "", "signal": "", "array_error": ""})
    for k, v in over.items():
        setattr(f, k, v)
    return f


def by_name(f: Facts) -> dict[str, Any]:
    return {x.name: x for x in judge(f)}


def test_everything_fine_passes_and_says_so() -> None:
    lines = judge(facts())
    assert not failed(lines)
    assert [x.name for x in lines] == ["job", "python", "netrain", "keras", "trainings_dir",
                                       "tracking", "sbatch options", "requeue", "signal",
                                       "array"]
    text = render(lines, "t", "login1", "c042")
    assert "every check passed" in text and "fix:" not in text
    assert "one writer only" in by_name(facts())["tracking"].node  # SQLite on NFS


def test_node_without_netrain_fails_on_the_netrain_line_with_its_fix() -> None:
    lines = by_name(facts(node=node(netrain={"error": "ModuleNotFoundError: No module named "
                                                      "'netrain'"})))
    bad = lines["netrain"]
    assert bad.status == FAIL
    assert "pip install netrain==0.1.0" in bad.fix and "environments.cpu" in bad.fix
    assert [x.name for x in lines.values() if x.status == FAIL] == ["netrain"]


def test_other_netrain_version_fails() -> None:
    bad = by_name(facts(node=node(netrain={"version": "0.0.9", "path": "/x"})))["netrain"]
    assert bad.status == FAIL and "same version" in bad.fix


def test_trainings_dir_verdicts() -> None:
    t = node()["trainings"]
    missing = by_name(facts(node=node(trainings={**t, "exists": False})))["trainings_dir"]
    assert missing.status == FAIL and "mount" in missing.fix
    other = by_name(facts(node=node(trainings={**t, "token": False})))["trainings_dir"]
    assert other.status == FAIL and "another directory" in other.node
    unseen = by_name(facts(node_file_seen=False))["trainings_dir"]
    assert unseen.status == FAIL
    ro = by_name(facts(node=node(trainings={**t, "write_error": "PermissionError: denied"})))
    assert ro["trainings_dir"].status == FAIL and "writable" in ro["trainings_dir"].fix
    assert ro["tracking"].status == FAIL  # the journals live there too


def test_no_answer_from_a_refused_job_fails_on_the_job_line_only() -> None:
    f = facts(node=None, run_error="srun: error: Unable to allocate resources: Invalid "
                                   "account or account/partition combination specified")
    lines = by_name(f)
    assert lines["job"].status == FAIL and "slurm.partition" in lines["job"].fix
    assert lines["python"].status == "-" and lines["netrain"].status == "-"


def test_python_that_does_not_start_fails_on_the_python_line() -> None:
    f = facts(node=None, run_error="bash: line 1: /nope/bin/python: No such file or directory")
    lines = by_name(f)
    assert lines["python"].status == FAIL and "environments.cpu" in lines["python"].fix


def test_gpu_line() -> None:
    k = node()["keras"]
    none = by_name(facts(gpu=True, env_key="gpu",
                         node=node(keras={**k, "gpu": {"devices": [], "nvidia_smi": []}})))
    assert none["gpu"].status == FAIL and "slurm.gres" in none["gpu"].fix
    driver = by_name(facts(gpu=True, node=node(keras={**k, "gpu": {
        "devices": [], "nvidia_smi": ["GPU 0: NVIDIA H100"]}})))["gpu"]
    assert driver.status == FAIL and "GPU build" in driver.fix
    seen = by_name(facts(gpu=True, node=node(keras={**k, "gpu": {
        "devices": ["/physical_device:GPU:0"]}})))["gpu"]
    assert seen.status == OK


def test_tracking_server_verdicts() -> None:
    uri = "http://mlflow.lab:5000"

    def line(here: dict[str, Any], there: dict[str, Any]) -> Any:
        return by_name(facts(tracking_uri=uri, here={**HERE, "tracking": here},
                             node=node(tracking={"kind": "http", **there})))["tracking"]

    assert line({"status": 200}, {"status": 200, "credentials": "basic"}).status == OK
    anon = line({"status": 401}, {"status": 401, "credentials": "none"})
    assert anon.status == FAIL and "export MLFLOW_TRACKING_USERNAME" in anon.fix
    wrong = line({"status": 401}, {"status": 401, "credentials": "basic"})
    assert wrong.status == FAIL and "refused the name or password" in wrong.fix
    cut = line({"status": 200}, {"error": "URLError: timed out", "credentials": "none"})
    assert cut.status == FAIL and "--host" in cut.fix
    down = line({"error": "refused"}, {"error": "refused", "credentials": "none"})
    assert down.status == FAIL and "from here either" in down.fix


def test_cluster_lines() -> None:
    c = facts().cluster
    refused = by_name(facts(cluster={**c, "base": "Invalid qos specification"}))
    assert refused["sbatch options"].status == FAIL and "requeue" not in refused
    early = by_name(facts(cluster={**c, "time": "1:30", "signal_value": "B:USR1@120"}))
    assert early["signal"].status == FAIL and "slurm.time" in early["signal"].fix
    no_scontrol = by_name(facts(node=node(scontrol=None)))["requeue"]
    assert no_scontrol.status == FAIL and "slurm.requeue: false" in no_scontrol.fix
    split = by_name(facts(cluster={**c, "max_array_size": 4, "array": 10}))["array"]
    assert split.status == OK and "3 jobs" in split.node


def test_parse_time_limit_and_signal_lead() -> None:
    assert parse_time_limit("90") == 5400
    assert parse_time_limit("1:30") == 90
    assert parse_time_limit("12:00:00") == 43200
    assert parse_time_limit("2-12") == 2 * 86400 + 12 * 3600
    assert parse_time_limit("1-0:30:00") == 86400 + 1800
    assert parse_time_limit(None) is None and parse_time_limit("UNLIMITED") is None
    assert signal_lead("B:USR1@120") == 120 and signal_lead("USR1") == 60


def test_render_puts_the_fix_under_the_failing_row() -> None:
    lines = judge(facts(node=node(netrain={"error": "No module named 'netrain'"})))
    text = render(lines, "title", "login1", "c042").splitlines()
    row = next(i for i, x in enumerate(text) if x.startswith("netrain  "))
    assert "FAIL" in text[row] and text[row + 1].startswith("  fix: install netrain")
    assert text[-1].startswith("1 check(s) failed")


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # a server that wants basic auth for alice:s3cret
        ok = self.headers.get("Authorization") == "Basic YWxpY2U6czNjcmV0"
        self.send_response(404 if ok else 401)  # 404: no Default experiment, but answered
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def auth_server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()


def test_probe_http_sends_the_environment_credentials(auth_server: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    assert nodeprobe.http_probe(auth_server) == {"status": 401, "credentials": "none"}
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    assert nodeprobe.http_probe(auth_server)["status"] == 401
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
    assert nodeprobe.http_probe(auth_server) == {"status": 404, "credentials": "basic"}
    closed = nodeprobe.http_probe("http://127.0.0.1:9")
    assert "status" not in closed and "refused" in closed["error"].lower()


def test_first_failures_hint(tmp_path: Path) -> None:
    logs = []
    for i in range(4):
        p = tmp_path / f"t{i}.log"
        p.write_text(f"starting task {i}\nTraceback (most recent call last):\n"
                     "ModuleNotFoundError: No module named 'netrain'\n")
        logs.append(p)
    hint = first_failures_hint([(1, p) for p in logs], 4)
    assert "netrain check" in hint and "No module named 'netrain'" in hint
    assert first_failures_hint([(1, logs[0]), (0, logs[1]), (1, logs[2])], 4) == ""
    other = tmp_path / "other.log"
    other.write_text("ValueError: bad shape\n")
    assert first_failures_hint([(1, logs[0]), (1, other), (1, logs[2])], 4) == ""
    assert first_failures_hint([(1, logs[0])], 4) == ""  # too early to say
    assert "netrain check" in first_failures_hint([(2, logs[0])], 1)
    # killed (kill -9, the OOM killer): nothing said of the environment
    assert first_failures_hint([(137, p) for p in logs], 4) == ""
    assert first_failures_hint([(-9, p) for p in logs], 4) == ""


@pytest.mark.parametrize(("rc", "name"), [(-9, "SIGKILL"), (137, "SIGKILL"), (143, "SIGTERM"),
                                          (1, ""), (0, ""), (2, ""), (128, ""), (255, "")])
def test_killed_by_reads_the_signal_from_the_exit_code(rc: int, name: str) -> None:
    from netrain.execute.check import killed_by

    assert killed_by(rc) == name


def test_watch_skips_sacct_row_of_the_whole_array(tmp_path: Path) -> None:
    """Recorded from the local cluster: before its tasks have rows, sacct lists a failed array
    as one row ``138|FAILED``; that row is no task and has no log."""
    from netrain.execute.check import watch_first_tasks
    from netrain.execute.slurm import Result

    (tmp_path / "logs").mkdir()
    for t in range(3):
        (tmp_path / "logs" / f"m-b_138_{t}.log").write_text(
            "ModuleNotFoundError: No module named 'netrain'\n")
    answers = iter(["138_[0-2]|PENDING\n", "138|FAILED\n",
                    "138_0|FAILED\n138_1|FAILED\n138_2|FAILED\n"])

    def runner(argv: list[str]) -> Result:
        return Result(0, next(answers) if argv[0] == "sacct" else "", "")

    hint = watch_first_tasks(tmp_path, ["138"], 3, 30, runner=runner, every=0.01)
    assert "the first 3 task(s) all failed the same way" in hint, hint
