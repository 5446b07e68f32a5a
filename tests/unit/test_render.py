"""render: sbatch scripts, runbatch.sh and MLproject, golden-tested and quoting-checked."""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netrain.define import scripts as render
from netrain.define.batch import Segment
from netrain.define.builder import template
from netrain.define.params import OPTIONAL_DEFAULTS, TASK_PARAM_NAMES
from netrain.define.scripts import ScriptSpec, directive, render_sbatch
from netrain.errors import BatchError

REPO = Path(__file__).resolve().parents[2]
PWN = "$(touch /tmp/pwned)"

Golden = Callable[[str, str], None]


def basic_spec(**changes: Any) -> ScriptSpec:
    spec = ScriptSpec(
        batch_id="20240102-030405-abcd",
        batch_dir="/scratch/trainings/20240102-030405-abcd",
        cls="classifier",
        architecture="clu_one",
        array="0-199",
        segments=(Segment(0, 200, 10, 5, 1000, False),),
        tracking_uri="sqlite:////scratch/trainings/mlflow.db",
        experiment_id="7",
        env_kind="python",
        env_value="/opt/venv/bin/python",
        slurm={"signal": "B:USR1@120", "gres": "gpu:1"},
    )
    return dataclasses.replace(spec, **changes)


def gpu_direct_spec() -> ScriptSpec:
    return basic_spec(
        cls="autoencoder",
        architecture="classical",
        array="0-149%4",
        segments=(Segment(0, 100, 45, 20, 5000, True),
                  Segment(100, 50, 10, 30, 5000, False, pack=True)),
        tracking_uri="http://tracking.example:5000",
        experiment_id="12",
        env_kind="conda-name",
        env_value="netrain-gpu",
        launcher="direct",
        gpu=True,
        slurm={"partition": "gpu", "time": "02:00:00", "mem": "8G", "cpus_per_task": 4,
               "account": "proj-42", "qos": None, "gres": "gpu:a100:1",
               "signal": "B:USR1@120", "max_running": 4,
               "extra": ["--constraint=a100", "exclusive"]},
        extra_params=(("net_index", "3"), ("retrain_of", "abc123")),
        job_suffix="-retrain1",
    )


def bash_syntax_ok(script: str) -> None:
    p = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr


def quote_states(line: str) -> list[str]:
    """Per character: 'S' inside single quotes, 'D' inside double quotes, 'U' unquoted."""
    states: list[str] = []
    mode = "U"
    i = 0
    while i < len(line):
        c = line[i]
        if mode == "S":
            if c == "'":
                states.append("q")
                mode = "U"
            else:
                states.append("S")
        elif c == "\\":
            states.extend([mode, mode])
            i += 2
            continue
        elif mode == "D" and c == '"':
            states.append("q")
            mode = "U"
        elif mode == "U" and c == "'":
            states.append("q")
            mode = "S"
        elif mode == "U" and c == '"':
            states.append("q")
            mode = "D"
        else:
            states.append(mode)
        i += 1
    return states[: len(line)]


def only_single_quoted(script: str, needle: str) -> int:
    """Assert every occurrence of ``needle`` in shell code sits inside single quotes."""
    seen = 0
    for line in script.splitlines():
        if line.lstrip().startswith("#"):
            continue  # comments and #SBATCH lines: bash never expands them
        states = quote_states(line)
        start = line.find(needle)
        while start >= 0:
            seen += 1
            assert set(states[start:start + len(needle)]) == {"S"}, (
                f"{needle!r} is not single-quoted in: {line}")
            start = line.find(needle, start + 1)
    return seen


# ------------------------------------------------------------------------------ goldens

def test_golden_sbatch_basic(golden: Golden) -> None:
    text = render_sbatch(basic_spec())
    golden("sbatch_basic.sh", text)
    bash_syntax_ok(text)


def test_golden_sbatch_gpu_direct(golden: Golden) -> None:
    text = render_sbatch(gpu_direct_spec())
    golden("sbatch_gpu_direct.sh", text)
    bash_syntax_ok(text)


def test_golden_runbatch(golden: Golden) -> None:
    text = render.render_runbatch("20240102-030405-abcd", [
        ("classifier.clu_one", "classifier-clu_one-sbatch.sh"),
        ("classifier.chransynth", "classifier-chransynth-sbatch.sh"),
        ("autoencoder.classical", "autoencoder-classical-sbatch.sh")])
    golden("runbatch.sh", text)
    bash_syntax_ok(text)


def test_golden_mlproject(golden: Golden) -> None:
    golden("MLproject", render.render_mlproject())


def test_repository_mlproject_is_the_rendered_one() -> None:
    assert (REPO / "MLproject").read_text(encoding="utf-8") == render.render_mlproject()


def test_batch_entry_point_is_the_repository_one() -> None:
    assert (REPO / "mlproject" / "entry.py").read_text(encoding="utf-8") == template("entry.py")


@pytest.mark.parametrize("name", ["conda-cpu.yaml", "conda-gpu.yaml"])
def test_repository_conda_files_are_the_templates(name: str) -> None:
    assert (REPO / name).read_text(encoding="utf-8") == template(name)


def test_mlproject_parses_as_yaml_with_every_task_param() -> None:
    import yaml

    data = yaml.safe_load(render.render_mlproject())
    params = data["entry_points"]["train"]["parameters"]
    assert list(params) == list(TASK_PARAM_NAMES)
    for key, default in OPTIONAL_DEFAULTS.items():
        assert params[key] == {"type": "string", "default": default}
    command = data["entry_points"]["train"]["command"]
    for key in TASK_PARAM_NAMES:
        assert f"--{key.replace('_', '-')} {{{key}}}" in command


# ---------------------------------------------------------------------- script content

def test_basic_script_structure() -> None:
    text = render_sbatch(basic_spec())
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "#SBATCH --job-name=classifier-clu_one-20240102-030405-abcd" in lines
    assert "#SBATCH --array=0-199" in lines
    assert "#SBATCH --output=logs/%x_%A_%a.log" in lines
    assert "#SBATCH --signal=B:USR1@120" in lines
    assert 'index=$(( SLURM_ARRAY_TASK_ID + ${NETRAIN_INDEX_OFFSET:-0} ))' in lines
    # all #SBATCH lines come before the first command, or sbatch ignores them
    first_cmd = next(i for i, ln in enumerate(lines[1:], 1) if not ln.startswith("#"))
    assert all(i < first_cmd for i, ln in enumerate(lines) if ln.startswith("#SBATCH"))
    assert text.endswith("\n")


def test_mlflow_launcher_command() -> None:
    text = render_sbatch(basic_spec())
    cmd = next(ln for ln in text.splitlines() if "netrain.execute.launcher" in ln)
    words = shlex.split(cmd.rstrip(" &"))
    assert words[:3] == ["/opt/venv/bin/python", "-m", "netrain.execute.launcher"]
    assert words[words.index("--env-manager") + 1] == "local"
    assert words[words.index("-e") + 1] == "train"
    params = [words[i + 1] for i, w in enumerate(words) if w == "-P"]
    assert [p.split("=")[0] for p in params] == [*TASK_PARAM_NAMES[:7], "pack"]
    assert "class=classifier" in params and "architecture=clu_one" in params


def test_conda_yaml_uses_mlflow_conda_env_manager() -> None:
    text = render_sbatch(basic_spec(env_kind="conda-yaml", env_value="/b/conda.yaml"))
    cmd = next(ln for ln in text.splitlines() if "mlflow run" in ln or "mlflow' run" in ln)
    words = shlex.split(cmd.rstrip(" &"))
    assert words[:2] == ["mlflow", "run"]
    assert words[words.index("--env-manager") + 1] == "conda"


def test_direct_launcher_and_extra_params() -> None:
    text = render_sbatch(gpu_direct_spec())
    cmd = next(ln for ln in text.splitlines() if "mlproject/entry.py" in ln)
    words = shlex.split(cmd.rstrip(" &"))
    assert words[:2] == ["python", "mlproject/entry.py"]
    assert words[words.index("--net-index") + 1] == "3"
    assert words[words.index("--retrain-of") + 1] == "abc123"
    assert "--from-weights" not in words
    assert 'conda activate netrain-gpu' in text


def test_segments_become_a_case_over_the_index() -> None:
    text = render_sbatch(gpu_direct_spec())
    assert ('if [ "$index" -ge 0 ] && [ "$index" -lt 100 ]; then nnets=45; nb_epoch=20; '
            'epoch_samples=5000; intelligent=true') in text
    assert ('elif [ "$index" -ge 100 ] && [ "$index" -lt 150 ]; then nnets=10; nb_epoch=30; '
            'epoch_samples=5000; intelligent=false') in text


def test_unknown_extra_param_is_refused() -> None:
    with pytest.raises(BatchError, match="bogus"):
        render_sbatch(basic_spec(extra_params=(("bogus", "1"),)))


def test_gres_only_with_gpu() -> None:
    assert "--gres" not in render_sbatch(basic_spec())
    assert "#SBATCH --gres=gpu:1" in render_sbatch(basic_spec(gpu=True)).splitlines()
    text = render_sbatch(basic_spec(gpu=True, slurm={"gres": "gpu:a100:2"}))
    assert "#SBATCH --gres=gpu:a100:2" in text.splitlines()
    assert "#SBATCH --gres=gpu:1" in render_sbatch(basic_spec(gpu=True, slurm={})).splitlines()


def test_max_running_only_through_the_array_string() -> None:
    text = render_sbatch(basic_spec(slurm={"max_running": 4}))
    assert "#SBATCH --array=0-199" in text.splitlines()
    assert "%4" not in text
    text = render_sbatch(basic_spec(array="0-199%4", slurm={"max_running": 4}))
    assert "#SBATCH --array=0-199%4" in text.splitlines()
    assert text.count("%4") == 1


def test_slurm_options_and_extra_lines() -> None:
    lines = render_sbatch(gpu_direct_spec()).splitlines()
    for expected in ("#SBATCH --partition=gpu", "#SBATCH --time=02:00:00", "#SBATCH --mem=8G",
                     "#SBATCH --cpus-per-task=4", "#SBATCH --account=proj-42",
                     "#SBATCH --constraint=a100", "#SBATCH --exclusive"):
        assert expected in lines
    assert not any(ln.startswith("#SBATCH --qos") for ln in lines)  # None is left out


def test_no_signal_no_signal_line() -> None:
    assert "--signal" not in render_sbatch(basic_spec(slurm={}))


def test_extra_with_newline_is_refused() -> None:
    with pytest.raises(BatchError):
        render_sbatch(basic_spec(slurm={"extra": ["--a\necho pwned"]}))


@pytest.mark.parametrize("value", ['a"b', "a'b", "a\nb", "a\rb", "gpu\n#SBATCH --x"])
def test_directive_rejects_quotes_and_newlines(value: str) -> None:
    with pytest.raises(BatchError, match="#SBATCH"):
        directive(value)


def test_directive_values() -> None:
    assert directive("gpu") == "gpu"
    assert directive(4) == "4"
    assert directive("/my batch/dir") == '"/my batch/dir"'


@pytest.mark.parametrize("key", ["partition", "time", "mem", "account", "qos", "signal"])
def test_quoted_slurm_values_are_refused_in_scripts(key: str) -> None:
    with pytest.raises(BatchError):
        render_sbatch(basic_spec(slurm={key: "x'; touch /tmp/pwned; '"}))


# ---------------------------------------------------------------------- hostile values

def hostile_spec() -> ScriptSpec:
    return basic_spec(
        batch_dir=f"/scratch/my trainings/{PWN}/b1",
        tracking_uri=f"http://tracking.example/it's'{PWN}'",
        experiment_id=f"7{PWN}",
        env_value=f"/opt/my env/{PWN}/bin/python",
    )


def test_hostile_values_pass_bash_syntax_check() -> None:
    bash_syntax_ok(render_sbatch(hostile_spec()))
    bash_syntax_ok(render_sbatch(dataclasses.replace(hostile_spec(), launcher="direct")))


def test_hostile_values_are_single_quoted() -> None:
    text = render_sbatch(hostile_spec())
    # batch_dir, URI, experiment id, PATH and the interpreter
    assert only_single_quoted(text, PWN) >= 5
    assert only_single_quoted(text, "/tmp/pwned") >= 5


def test_hostile_values_round_trip_through_the_shell_words() -> None:
    spec = hostile_spec()
    lines = render_sbatch(spec).splitlines()

    def value_of(prefix: str) -> str:
        line = next(ln for ln in lines if ln.startswith(prefix))
        words = shlex.split(line)
        return words[-1].split("=", 1)[1]

    assert value_of("batch_dir=") == spec.batch_dir
    assert value_of("export MLFLOW_TRACKING_URI=") == spec.tracking_uri
    assert value_of("export MLFLOW_EXPERIMENT_ID=") == spec.experiment_id
    cmd = next(ln for ln in lines if "netrain.execute.launcher" in ln)
    assert shlex.split(cmd.rstrip(" &"))[0] == spec.env_value


def test_hostile_batch_dir_in_the_chdir_directive() -> None:
    text = render_sbatch(hostile_spec())
    assert f'#SBATCH --chdir="{hostile_spec().batch_dir}"' in text.splitlines()


def test_runbatch_quotes_script_names() -> None:
    text = render.render_runbatch("b", [("a.b", "a b-sbatch.sh"), ("c.d", f"{PWN}.sh")])
    bash_syntax_ok(text)
    assert only_single_quoted(text, PWN) == 1
    assert "bash 'scripts/a b-sbatch.sh'" in text


def test_mlflow_cli_launcher_is_the_literal_mlflow_run() -> None:
    import dataclasses

    text = render_sbatch(dataclasses.replace(basic_spec(), launcher="mlflow-cli"))
    cmd = next(ln for ln in text.splitlines() if "mlflow run" in ln)
    words = shlex.split(cmd.rstrip(" &"))
    assert words[:5] == ["/opt/venv/bin/python", "-m", "mlflow", "run", "$batch_dir"]


def test_sync_job_runs_netrain_sync_in_the_task_environment() -> None:
    got = render.sync_job(basic_spec())
    assert got is not None
    opts, command = got
    assert opts == ["--job-name=sync-20240102-030405-abcd",
                    "--chdir=/scratch/trainings/20240102-030405-abcd",
                    "--output=logs/sync_%j.log", "--error=logs/sync_%j.log"]
    assert command == ("export PATH=/opt/venv/bin:\"$PATH\"; exec /opt/venv/bin/python -m "
                       "netrain sync /scratch/trainings/20240102-030405-abcd")
    opts, command = render.sync_job(gpu_direct_spec()) or ([], "")
    # the queue and account of the batch, none of its GPU, memory or CPU requests
    assert opts[4:] == ["--partition=gpu", "--time=02:00:00", "--account=proj-42"]
    assert command.startswith('eval "$(conda shell.bash hook)"; conda activate netrain-gpu; ')
    assert render.sync_job(basic_spec(env_kind="conda-yaml")) is None
    assert render.sync_job(basic_spec(launcher="mlflow-cli")) is None
    tricky = render.sync_job(basic_spec(batch_dir="/x/a b;$(touch /tmp/pwned)"))
    assert tricky is not None and shlex.split(tricky[1])[-1] == "/x/a b;$(touch /tmp/pwned)"
