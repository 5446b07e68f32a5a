"""The generated scripts under hostile values: run them through bash with recording stand-ins
for sbatch, python, mlflow and conda, and prove that nothing in a value is executed and that
every value reaches the program it is meant for intact (one argument, byte for byte)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from netrain.define.batch import Segment
from netrain.define.config import parse_environment
from netrain.define.scripts import ScriptSpec, render_runbatch, render_sbatch
from netrain.errors import BatchError, ConfigError
from tests.hostile.conftest import Template, no_marker_files, nr

BASH = shutil.which("bash") or "/bin/bash"
#: A directory name that breaks any script that forgets to quote (no ':' - it goes on PATH).
HOSTILE = "dir $(touch PWNED) `touch PWNED2` it's \"q\"; touch PWNED3 & *"
#: The same without quotes: what an #SBATCH --chdir line can hold (quotes are refused).
HOSTILE_NQ = "dir $(touch PWNED) `touch PWNED2` & touch PWNED3; *"
URI = "http://mlflow.example.org:5000/it's \"q\" $(touch PWNED) `touch PWNED2`"
ENV_KEYS = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "NETRAIN_BATCH_DIR",
            "NETRAIN_INDEX_OFFSET")

RECORDER = """#!{python}
import json, os, sys
prog = os.path.basename(sys.argv[0])
rec = {{"prog": prog, "argv0": sys.argv[0], "argv": sys.argv[1:], "cwd": os.getcwd(),
        "env": {{k: os.environ.get(k) for k in {keys!r}}}}}
with open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as fh:
    fh.write(json.dumps(rec) + "\\n")
if prog == "sbatch":
    print("4242")
elif prog == "scontrol":
    print("MaxArraySize = 1001")
"""


class Recorder:
    """Stand-ins for sbatch, squeue, scontrol, python, mlflow and conda in a hostile-named
    directory; each appends its argv, cwd and a few variables to a JSON-lines file."""

    def __init__(self, root: Path) -> None:
        self.bin = root / f"bin {HOSTILE}"
        self.bin.mkdir(parents=True)
        self.file = root / "record.jsonl"
        text = RECORDER.format(python=sys.executable, keys=ENV_KEYS)
        for name in ("sbatch", "squeue", "scontrol", "python", "mlflow", "conda"):
            path = self.bin / name
            path.write_text(text)
            path.chmod(0o755)

    @property
    def python(self) -> str:
        return str(self.bin / "python")

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "NETRAIN_"))}
        env.update(PATH=f"{self.bin}:{os.environ.get('PATH', '')}", RECORD_FILE=str(self.file),
                   **extra)
        return env

    def records(self) -> list[dict]:
        if not self.file.exists():
            return []
        return [json.loads(line) for line in self.file.read_text().splitlines()]


@pytest.fixture
def rec(tmp_path: Path) -> Recorder:
    return Recorder(tmp_path)


def run_bash(script: Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BASH, str(script)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def spec(batch_dir: Path, env_kind: str, env_value: str, launcher: str,
         extra: tuple[tuple[str, str], ...] = ()) -> ScriptSpec:
    return ScriptSpec(
        batch_id="20240102-030405-abcd", batch_dir=str(batch_dir), cls="regressor",
        architecture="narrow", array="0-4%2",
        segments=(Segment(0, 2, 3, 5, 100, False), Segment(2, 3, 1, 7, 64, True)),
        tracking_uri=URI, experiment_id="7", env_kind=env_kind, env_value=env_value,
        launcher=launcher, slurm={"partition": "cpu", "extra": ["--exclusive"]},
        extra_params=extra,
    )


WEIGHTS = f"/weights {HOSTILE}/net.weights.h5"
RETRAIN = (("net_index", "0"), ("retrain_of", "0123abc"), ("from_weights", WEIGHTS))
# Index 3 is in the second segment: nnets 1, nb_epoch 7, epoch_samples 64, intelligent.
DIRECT_ARGS = ["mlproject/entry.py", "--class", "regressor", "--architecture", "narrow",
               "--nb-epoch", "7", "--epoch-samples", "64", "--nnets", "1", "--intelligent",
               "true", "--trainingrun", "3", "--net-index", "0", "--retrain-of", "0123abc",
               "--from-weights", WEIGHTS, "--pack", "false"]


def mlflow_args(batch_dir: Path, env_manager: str) -> list[str]:
    return ["run", str(batch_dir), "-e", "train", "--env-manager", env_manager,
            "--experiment-id", "7", "-P", "class=regressor", "-P", "architecture=narrow",
            "-P", "nb_epoch=7", "-P", "epoch_samples=64", "-P", "nnets=1",
            "-P", "intelligent=true", "-P", "trainingrun=3", "-P", "net_index=0",
            "-P", "retrain_of=0123abc", "-P", f"from_weights={WEIGHTS}", "-P", "pack=false"]


@pytest.mark.parametrize("launcher, env_kind", [("direct", "python"), ("mlflow", "python"),
                                                ("mlflow", "conda-name"),
                                                ("mlflow", "conda-yaml")])
def test_sbatch_script_passes_hostile_values_intact(rec: Recorder, tmp_path: Path,
                                                    launcher: str, env_kind: str) -> None:
    batch_dir = tmp_path / f"batch {HOSTILE_NQ}"
    batch_dir.mkdir()
    env_value = {"python": rec.python, "conda-name": "tf-2.16_env",
                 "conda-yaml": str(tmp_path / "conda.yaml")}[env_kind]
    script = tmp_path / "task.sh"
    script.write_text(render_sbatch(spec(batch_dir, env_kind, env_value, launcher, RETRAIN)))
    # Run from elsewhere, as SLURM does: the script must cd into the batch itself.
    p = run_bash(script, rec.env(SLURM_ARRAY_TASK_ID="3"), cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    records = rec.records()
    if env_kind == "conda-name":
        assert [r["argv"] for r in records if r["prog"] == "conda"] == [
            ["shell.bash", "hook"], ["activate", "tf-2.16_env"]]
    task = [r for r in records if r["prog"] != "conda"]
    assert len(task) == 1, records
    t = task[0]
    if launcher == "direct":
        assert t["argv0"] == rec.python and t["argv"] == DIRECT_ARGS
    elif env_kind == "conda-yaml":
        assert t["prog"] == "mlflow" and t["argv"] == mlflow_args(batch_dir, "conda")
    else:
        assert t["prog"] == "python" and t["argv"] == [
            "-m", "netrain.execute.launcher", *mlflow_args(batch_dir, "local")[1:]]
        if env_kind == "python":
            assert t["argv0"] == rec.python
    assert t["cwd"] == str(batch_dir)
    assert t["env"]["MLFLOW_TRACKING_URI"] == URI
    assert t["env"]["MLFLOW_EXPERIMENT_ID"] == "7"
    assert t["env"]["NETRAIN_BATCH_DIR"] == str(batch_dir)
    no_marker_files(tmp_path)


def test_sbatch_script_refuses_an_index_outside_its_segments(rec: Recorder,
                                                             tmp_path: Path) -> None:
    batch_dir = tmp_path / f"batch {HOSTILE_NQ}"
    batch_dir.mkdir()
    script = tmp_path / "task.sh"
    script.write_text(render_sbatch(spec(batch_dir, "python", rec.python, "direct")))
    p = run_bash(script, rec.env(SLURM_ARRAY_TASK_ID="5"), cwd=tmp_path)
    assert p.returncode == 2 and "array index 5 is not a task of regressor.narrow" in p.stderr
    assert rec.records() == []
    no_marker_files(tmp_path)


@pytest.mark.parametrize("bad", ["it's", 'say "hi"', "line\nbreak"])
def test_batch_dir_an_sbatch_line_cannot_hold_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(BatchError, match="#SBATCH line"):
        render_sbatch(spec(tmp_path / bad, "python", "/usr/bin/python3", "direct"))


@pytest.mark.parametrize("name", ["my env", "it's", 'a"b', "$(touch PWNED)", "`id`", "a;b",
                                  "a&b", "a|b", "a>b", "a\nb", ""])
def test_conda_environment_names_are_validated(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="not a valid conda environment name"):
        parse_environment(f"conda:{name}", tmp_path, "netrain.yaml: environments.cpu")


def test_runbatch_in_a_hostile_directory_submits_each_script_once(rec: Recorder,
                                                                  tmp_path: Path) -> None:
    import dataclasses

    batch_dir = tmp_path / f"batch {HOSTILE_NQ}"
    (batch_dir / "scripts").mkdir(parents=True)
    (batch_dir / "records").mkdir()
    names = [("regressor.narrow", "regressor-narrow-sbatch.sh"),
             ("regressor.wide", "regressor-wide-sbatch.sh")]
    for (_, name), arch in zip(names, ("narrow", "wide"), strict=True):
        text = render_sbatch(dataclasses.replace(spec(batch_dir, "python", rec.python, "direct"),
                                                 architecture=arch))
        (batch_dir / "scripts" / name).write_text(text)
    runbatch = batch_dir / "runbatch.sh"
    runbatch.write_text(render_runbatch("20240102-030405-abcd", names))
    p = run_bash(runbatch, rec.env(), cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    records = rec.records()
    assert [r["prog"] for r in records] == ["sbatch", "sbatch"]  # submitted, nothing trained
    for r, (_, name) in zip(records, names, strict=True):
        assert r["cwd"] == str(batch_dir)
        assert Path(r["argv"][-1]) == batch_dir / "scripts" / name
        assert "--parsable" in r["argv"]
    assert (batch_dir / "records" / "runbatch-jobs.txt").read_text() == \
        "regressor.narrow 4242\nregressor.wide 4242\n"
    assert "regressor.narrow: submitted array job 4242" in p.stdout
    no_marker_files(tmp_path)


def test_a_model_script_run_by_hand_submits_its_array(rec: Recorder, tmp_path: Path) -> None:
    """The original guide: cd scripts/ and 'bash <class>-<architecture>-sbatch.sh'."""
    batch_dir = tmp_path / f"batch {HOSTILE_NQ}"
    (batch_dir / "scripts").mkdir(parents=True)
    (batch_dir / "records").mkdir()
    script = batch_dir / "scripts" / "regressor-narrow-sbatch.sh"
    script.write_text(render_sbatch(spec(batch_dir, "python", rec.python, "direct")))
    p = run_bash(Path(script.name), rec.env(), cwd=script.parent)
    assert p.returncode == 0, p.stdout + p.stderr
    [r] = rec.records()
    assert r["prog"] == "sbatch" and r["argv"] == ["--parsable", f"--chdir={batch_dir}",
                                                   str(script)]
    jobs_file = batch_dir / "records" / "runbatch-jobs.txt"
    assert jobs_file.read_text() == "regressor.narrow 4242\n"
    # a retrain's script submits itself too, but its job is not a model task's
    retrain = batch_dir / "scripts" / "retrain-0123abc-1.sh"
    retrain.write_text(render_sbatch(dataclasses_replace_suffix(
        spec(batch_dir, "python", rec.python, "direct", RETRAIN))))
    p = run_bash(retrain, rec.env(), cwd=tmp_path)
    assert p.returncode == 0 and "regressor.narrow-retrain1: submitted" in p.stdout
    assert jobs_file.read_text() == "regressor.narrow 4242\n"
    # no sbatch here: one line saying what to do, nothing run
    bare = tmp_path / "bare-bin"
    bare.mkdir()
    for tool in ("dirname", "basename"):
        (bare / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    env = rec.env()
    env["PATH"] = str(bare)
    p = run_bash(script, env, cwd=tmp_path)
    assert p.returncode == 2 and "sbatch is not on PATH" in p.stderr
    assert len(rec.records()) == 2
    no_marker_files(tmp_path)


def dataclasses_replace_suffix(s: ScriptSpec) -> ScriptSpec:
    import dataclasses

    return dataclasses.replace(s, job_suffix="-retrain1")


@pytest.fixture(params=["direct", "mlflow"])
def hostile_batch(request: pytest.FixtureRequest, template: Template, tmp_path: Path,
                  rec: Recorder) -> tuple[Path, dict]:
    """A real batch, generated with a hostile trainings_dir and the recorder as its Python."""
    proj = tmp_path / "proj"
    shutil.copytree(template.path, proj, symlinks=True)
    conf = yaml.safe_load((proj / "netrain.yaml").read_text())
    conf.update(trainings_dir=f"runs {HOSTILE_NQ}", launcher=request.param,
                environments={"cpu": f"python:{rec.python}"})
    (proj / "netrain.yaml").write_text(yaml.safe_dump(conf))
    r = nr("generate", "--no-check", "--models", "regressor.narrow=2", "--array", "3",
           "--nb-epoch", "3", "--epoch-samples", "64", "--desc", HOSTILE, cwd=proj)
    assert r.code == 0, r.text
    batch = Path(r.out.strip().splitlines()[-1])
    assert batch.parent == proj / f"runs {HOSTILE_NQ}"
    return batch, yaml.safe_load((batch / "batch.yaml").read_text())


def test_generated_batch_scripts_under_a_hostile_path(hostile_batch: tuple[Path, dict],
                                                      rec: Recorder, tmp_path: Path) -> None:
    batch, m = hostile_batch
    assert m["environment"] == {"kind": "python", "value": rec.python}
    p = run_bash(batch / "runbatch.sh", rec.env(), cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    # the array, then (a SQLite store: one writer) its sync job after it
    [sub, sync] = rec.records()
    assert sub["prog"] == "sbatch" and sub["cwd"] == str(batch)
    assert Path(sub["cwd"], sub["argv"][-1]).resolve() == \
        batch / "scripts" / "regressor-narrow-sbatch.sh"
    assert sync["prog"] == "sbatch" and sync["cwd"] == str(batch)
    assert "--dependency=afterany:4242,singleton" in sync["argv"]
    assert f"--chdir={batch}" in sync["argv"]
    wrap = next(a for a in sync["argv"] if a.startswith("--wrap="))
    assert shlex.split(wrap.removeprefix("--wrap="))[-3:] == ["netrain", "sync", str(batch)]
    rec.file.unlink()

    p = run_bash(batch / "scripts" / "regressor-narrow-sbatch.sh",
                 rec.env(SLURM_ARRAY_TASK_ID="2"), cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    [task] = rec.records()
    params = [("class", "regressor"), ("architecture", "narrow"), ("nb_epoch", "3"),
              ("epoch_samples", "64"), ("nnets", "2"), ("intelligent", "false"),
              ("trainingrun", "2"), ("pack", "false")]
    if m["launcher"] == "direct":
        expected = ["mlproject/entry.py"]
        for k, v in params:
            expected += [f"--{k.replace('_', '-')}", v]
    else:
        expected = ["-m", "netrain.execute.launcher", str(batch), "-e", "train",
                    "--env-manager", "local",
                    "--experiment-id", str(m["tracking"]["experiment_id"])]
        for k, v in params:
            expected += ["-P", f"{k}={v}"]
    assert task["argv0"] == rec.python and task["argv"] == expected
    assert task["cwd"] == str(batch)
    assert task["env"]["MLFLOW_TRACKING_URI"] == m["tracking"]["uri"]
    assert task["env"]["MLFLOW_EXPERIMENT_ID"] == str(m["tracking"]["experiment_id"])
    assert task["env"]["NETRAIN_BATCH_DIR"] == str(batch)
    assert "NETRAIN_SHIP_LATER" not in task["env"]  # not under SLURM: it may ship itself
    assert m["description"] == HOSTILE
    no_marker_files(tmp_path)


def test_netrain_submit_passes_the_hostile_script_path_as_one_argument(
        hostile_batch: tuple[Path, dict], rec: Recorder, tmp_path: Path) -> None:
    batch, _ = hostile_batch
    proj = tmp_path / "proj"
    r = nr("submit", batch.name, cwd=proj, env={"PATH": rec.env()["PATH"],
                                                "RECORD_FILE": str(rec.file)})
    assert r.code == 0, r.text
    sb = [x for x in rec.records() if x["prog"] == "sbatch"]
    assert len(sb) == 2  # the array, then the batch's sync job after it
    assert sb[0]["argv"][-1] == str(batch / "scripts" / "regressor-narrow-sbatch.sh")
    assert "--array=0-2" in sb[0]["argv"]
    sync = sb[1]["argv"]
    assert "--dependency=afterany:4242,singleton" in sync and f"--chdir={batch}" in sync
    wrap = next(a for a in sync if a.startswith("--wrap="))
    assert shlex.split(wrap.removeprefix("--wrap="))[-3:] == ["netrain", "sync", str(batch)]
    jobs = yaml.safe_load((batch / "batch.yaml").read_text())["models"][0]["jobs"]
    assert [j["job_id"] for j in jobs] == ["4242"]
    no_marker_files(tmp_path)
