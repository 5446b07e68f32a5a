"""Bad and hostile input, as a matrix: every case is one clear line on stderr (what is wrong,
and how to fix it), exit code 1 or 2, no traceback, nothing executed, and the project (its
trainings directory, its MLflow database) byte for byte as it was. The matrix runs netrain
in this process (click's CliRunner); netrain.yaml's own values are checked in
tests/unit/test_config.py.

Then the inputs that must succeed although they look hostile (--desc), the disk check, and,
as real processes, two `add`s racing on one batch and Ctrl-C during generate's check.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN
from tests.hostile.conftest import (
    BASE_YAML,
    CLEAN_ENV,
    Template,
    assert_one_line_error,
    assert_unchanged,
    ni,
    no_marker_files,
    picture,
)

Setup = Callable[[Path, str], None]


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    #: Must all appear in the message: the offending thing, and the way out.
    fragments: tuple[str, ...]
    code: int = 2
    setup: Setup | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: Run in an empty directory instead of the project.
    elsewhere: bool = False
    #: Must not appear anywhere in the output (secrets).
    forbidden: tuple[str, ...] = ()
    #: Fail fast: the command must finish within this many seconds.
    max_seconds: float | None = None


# --- setups -------------------------------------------------------------------------------

def conf(*lines: str, files: dict[str, str] | None = None) -> Setup:
    """netrain.yaml = make_userproj's, with the top-level keys of ``lines`` replaced."""

    def setup(p: Path, batch: str) -> None:
        keys = {ln.split(":", 1)[0] for ln in lines if not ln.startswith((" ", "-"))}
        base = [ln for ln in BASE_YAML.splitlines() if ln.split(":", 1)[0] not in keys]
        (p / "netrain.yaml").write_text("\n".join([*base, *lines]) + "\n", encoding="utf-8")
        for name, text in (files or {}).items():
            (p / name).write_text(text)

    return setup


def raw_conf(data: str | bytes) -> Setup:
    def setup(p: Path, batch: str) -> None:
        target = p / "netrain.yaml"
        if isinstance(data, bytes):
            target.write_bytes(data)
        else:
            target.write_text(data, encoding="utf-8")

    return setup


def override(*body: str) -> Setup:
    """Wrap the fixture's configure(): ``out`` is its output dict, changed by ``body``."""
    code = "\n".join(["", "_configure = configure", "", "", "def configure(inputs):",
                      "    out = _configure(inputs)", *("    " + b for b in body),
                      "    return out", ""])

    def setup(p: Path, batch: str) -> None:
        with open(p / "src" / "mymodels.py", "a", encoding="utf-8") as fh:
            fh.write(code)

    return setup


def main_script(text: str, name: str = "main.py") -> Setup:
    def setup(p: Path, batch: str) -> None:
        (p / "src" / name).write_text(text, encoding="utf-8")

    return setup


def manifest(change: Callable[[dict], object]) -> Setup:
    """Rewrite the template batch's batch.yaml: ``change`` returns a dict, text or bytes."""

    def setup(p: Path, batch: str) -> None:
        path = p / "runs" / batch / "batch.yaml"
        # without its copy (read instead of a damaged batch.yaml: tests/integration/
        # test_corrupt_state.py), as a batch written before the copy existed
        (path.parent / ".batch.yaml.bak").unlink(missing_ok=True)
        new = change(yaml.safe_load(path.read_text()))
        if isinstance(new, bytes):
            path.write_bytes(new)
        elif isinstance(new, str):
            path.write_text(new, encoding="utf-8")
        else:
            path.write_text(yaml.safe_dump(new), encoding="utf-8")

    return setup


def set_model(key: str, value: object) -> Callable[[dict], dict]:
    def change(d: dict) -> dict:
        d["models"][0][key] = value
        return d

    return change


def twin_batch(p: Path, batch: str) -> None:
    """A second batch whose id shares the template's first 16 characters."""
    twin = batch[:-4] + ("ffff" if not batch.endswith("ffff") else "eeee")
    shutil.copytree(p / "runs" / batch, p / "runs" / twin, symlinks=True)


# --- the matrix ---------------------------------------------------------------------------

GEN = ("generate", "--no-check", "--models")
OK_MODELS = "regressor.narrow=1"
FIX_SPEC = "class.architecture=N"
FIX_NAME = "use only letters, digits, '_' and '-'"
FIX_COUNT = "positive whole number"
HEX = "0123456789abcdef0123456789abcdef"

MODELS_CASES = [
    Case("models-empty", (*GEN, ""), ("--models is empty", 'give e.g. --models "')),
    Case("models-blank", (*GEN, " \t "), ("--models is empty", 'give e.g. --models "')),
    Case("models-no-equals", (*GEN, "regressor.narrow"), ("'regressor.narrow'", "no '=N'",
                                                          FIX_SPEC)),
    Case("models-zero", (*GEN, "regressor.narrow=0"), ("'regressor.narrow=0'", "at least 1")),
    Case("models-negative", (*GEN, "regressor.narrow=-3"), ("'regressor.narrow=-3'", FIX_COUNT)),
    Case("models-fraction", (*GEN, "regressor.narrow=2.5"), ("got '2.5'", FIX_COUNT)),
    Case("models-word", (*GEN, "regressor.narrow=ten"), ("got 'ten'", FIX_COUNT)),
    Case("models-exponent", (*GEN, "regressor.narrow=1e3"), ("got '1e3'", FIX_COUNT)),
    Case("models-empty-count", (*GEN, "regressor.narrow="), ("got ''", FIX_COUNT)),
    Case("models-double-equals", (*GEN, "regressor.narrow==2"), ("got '=2'", FIX_COUNT)),
    Case("models-fullwidth-digit", (*GEN, "regressor.narrow=\uff13"), ("'\uff13'", FIX_COUNT)),
    Case("models-too-many", (*GEN, "regressor.narrow=100001"), ("100001 networks per task",
                                                                "more than 100000",
                                                                "use more array tasks")),
    Case("models-duplicate", (*GEN, "regressor.narrow=1, narrow=2"),
         ("regressor.narrow twice", "give each model once")),
    Case("models-duplicate-later", (*GEN, "regressor.narrow=1, other.x=1, regressor.narrow=3"),
         ("regressor.narrow twice", "give each model once")),
    Case("models-stray-comma", (*GEN, "regressor.narrow=1,,wide=1"),
         ("item 2 is empty (stray comma?)", FIX_SPEC)),
    Case("models-trailing-comma", (*GEN, "regressor.narrow=1,"), ("item 2 is empty",)),
    Case("models-leading-comma", (*GEN, ",regressor.narrow=1"), ("item 1 is empty",)),
    Case("models-carry-without-class", (*GEN, "narrow=1, regressor.wide=1"),
         ("'narrow=1' has no class", "write class.architecture=N for the first model")),
    Case("models-empty-class", (*GEN, ".narrow=1"), ("model class ''", FIX_NAME)),
    Case("models-empty-architecture", (*GEN, "regressor.=1"), ("model architecture ''",
                                                               FIX_NAME)),
    Case("models-dotted", (*GEN, "regressor.a.b=1"), ("'a.b'", FIX_NAME)),
    Case("models-path", (*GEN, "regressor.../../etc=1"), ("'../../etc'", FIX_NAME)),
    Case("models-space", (*GEN, "regressor.my net=1"), ("'my net'", FIX_NAME)),
    Case("models-single-quote", (*GEN, "regressor.nar'row=1"), ("nar'row", FIX_NAME)),
    Case("models-double-quote", (*GEN, 'regressor.nar"row=1'), ('nar"row', FIX_NAME)),
    Case("models-command-substitution", (*GEN, "regressor.$(touch PWNED)=1"),
         ("'$(touch PWNED)'", FIX_NAME)),
    Case("models-backticks", (*GEN, "regressor.`touch PWNED`=1"), ("'`touch PWNED`'",
                                                                    FIX_NAME)),
    Case("models-semicolon", (*GEN, "regressor.narrow;touch PWNED=1"),
         ("'narrow;touch PWNED'", FIX_NAME)),
    Case("models-newline", (*GEN, "regressor.nar\nrow=1"), ("'nar\\nrow'", FIX_NAME)),
    Case("models-newline-in-class", (*GEN, "regressor\ntouch PWNED.narrow=1"),
         ("'regressor\\ntouch PWNED'", FIX_NAME)),
    Case("models-terminal-escape", (*GEN, "regressor.nar\x1b[2Jrow=1"), ("\\x1b[2J", FIX_NAME)),
    Case("models-non-ascii", (*GEN, "r\u00e9gresseur.narrow=1"), ("'r\u00e9gresseur'",
                                                                 FIX_NAME)),
    Case("add-models-bad", ("add", "{batch}", "--no-check", "--models", "regressor.wide=0"),
         ("'regressor.wide=0'", "at least 1")),
]

NUMBER_CASES = [
    Case("array-zero", (*GEN, OK_MODELS, "--array", "0"),
         ("'--array'", "0 is not in the range x>=1")),
    Case("array-negative", (*GEN, OK_MODELS, "--array", "-5"),
         ("'--array'", "-5 is not in the range x>=1")),
    Case("array-word", (*GEN, OK_MODELS, "--array", "many"),
         ("'--array'", "'many' is not a valid integer", "netrain generate --help")),
    Case("array-fraction", (*GEN, OK_MODELS, "--array", "1.5"),
         ("'--array'", "'1.5' is not a valid integer")),
    Case("array-beyond-any-cluster", (*GEN, OK_MODELS, "--array", "10000001"),
         ("--array 10000001 is larger than any cluster allows", "use fewer array tasks")),
    Case("array-enormous", (*GEN, OK_MODELS, "--array", "1" + "0" * 30),
         ("larger than any cluster allows",)),
    Case("nb-epoch-zero", (*GEN, OK_MODELS, "--nb-epoch", "0"),
         ("'--nb-epoch'", "0 is not in the range x>=1")),
    Case("epoch-samples-negative", (*GEN, OK_MODELS, "--epoch_samples", "-1"),
         ("'--epoch-samples'", "-1 is not in the range x>=1")),
    Case("max-running-zero", (*GEN, OK_MODELS, "--max-running", "0"),
         ("--max-running", "not in the range x>=1")),
    Case("workers-zero", (*GEN, OK_MODELS, "--workers", "0"),
         ("--workers", "not in the range x>=1")),
    Case("intelligent-maybe", (*GEN, OK_MODELS, "--intelligent", "maybe"),
         ("'--intelligent'", "'maybe' is not a valid boolean")),
    Case("models-option-missing", ("generate", "--no-check"), ("Missing option '--models'",
                                                               "netrain generate --help")),
    Case("unknown-option", (*GEN, OK_MODELS, "--gpus"), ("No such option", "--gpus",
                                                         "netrain generate --help")),
    Case("unknown-command", ("frobnicate",), ("No such command 'frobnicate'", "netrain --help")),
    Case("run-workers-zero", ("run", "{batch}", "--workers", "0"), ("--workers",
                                                                    "not in the range x>=1")),
    Case("run-tasks-backwards", ("run", "{batch}", "--tasks", "3-1"),
         ("'3-1' runs backwards", "write 1-3")),
    Case("run-tasks-hostile", ("run", "{batch}", "--tasks", "0;touch PWNED"),
         ("'0;touch PWNED'", "an index or a range like 0-3")),
    Case("run-models-no-class", ("run", "{batch}", "--models", "narrow"),
         ("'narrow' needs a class", "write class.architecture")),
    Case("add-array-zero", ("add", "{batch}", "--no-check", "--models", "regressor.wide=1",
                            "--array", "0"), ("'--array'", "not in the range x>=1")),
]

CONFIG_CASES = [
    Case("config-missing", (*GEN, OK_MODELS), ("no netrain.yaml in", "netrain init"), code=1,
         elsewhere=True),
    Case("config-option-missing", ("--config", "nope.yaml", *GEN, OK_MODELS),
         ("config file", "nope.yaml does not exist", "check --config"), code=1),
    Case("config-env-missing", (*GEN, OK_MODELS), ("nope.yaml does not exist",
                                                   "NETRAIN_CONFIG"),
         code=1, env={"NETRAIN_CONFIG": "nope.yaml"}),
    Case("config-is-a-directory", ("--config", "src", *GEN, OK_MODELS),
         ("'--config'", "'src' is a directory")),
    Case("yaml-syntax", (*GEN, OK_MODELS), ("netrain.yaml line", "YAML syntax error",
                                            "fix the file"),
         code=1, setup=raw_conf("trainings_dir: [runs\nmain_script: src/main.py\n")),
    Case("config-python-missing", (*GEN, OK_MODELS), ("the task Python /nonexistent/bin/python "
                                                      "does not exist", "fix environments"),
         code=1, setup=conf("environments:", "  cpu: python:/nonexistent/bin/python")),
    Case("config-credentials-in-env-uri", (*GEN, OK_MODELS), ("$NETRAIN_TRACKING_URI",
                                                              "contains credentials"), code=1,
         env={"NETRAIN_TRACKING_URI": "https://bob:hunter2-pw@mlflow.example.org"},
         forbidden=("hunter2-pw",)),
    Case("config-unreachable-server", (*GEN, OK_MODELS), ("tracking server http://127.0.0.1:9 "
                                                          "is unreachable", "start it or fix"),
         code=1, setup=conf("tracking_uri: http://127.0.0.1:9"), max_seconds=30),
    Case("trainings-dir-under-a-file", (*GEN, OK_MODELS), ("cannot create trainings_dir",
                                                           "afile/sub", "fix trainings_dir"),
         code=1, setup=conf("trainings_dir: afile/sub", files={"afile": "not a directory\n"})),
    Case("trainings-dir-with-quote", (*GEN, OK_MODELS), ("contains a quote",
                                                         "point trainings_dir"),
         code=1, setup=conf("trainings_dir: \"runs'x\"")),
    Case("main-script-missing", (*GEN, OK_MODELS), ("main_script", "src/nope.py does not exist",
                                                    "fix main_script"),
         code=1, setup=conf("main_script: src/nope.py")),
    Case("main-script-outside-code-dir", (*GEN, OK_MODELS), ("is outside code_dir",
                                                             "set code_dir"),
         code=1, setup=conf("code_dir: tracking")),
    Case("code-dir-missing", (*GEN, OK_MODELS), ("code_dir", "nowhere is not a directory",
                                                 "fix code_dir in"),
         code=1, setup=conf("code_dir: nowhere")),
    Case("disk-refuse", (*GEN, OK_MODELS), ("need about", "GiB free", "disk.check: warn"),
         code=1, setup=conf("disk:", "  check: refuse", "  mb_per_network: 1e9")),
]

CHECKED = ("generate", "--models", OK_MODELS)
USER_CODE_CASES = [
    Case("code-import-fails", CHECKED, ("main script main.py failed to import",
                                        "ModuleNotFoundError", "--no-check"),
         code=1, setup=main_script("import no_such_module_xyz\n")),
    Case("code-syntax-error", CHECKED, ("failed to import: SyntaxError",), code=1,
         setup=main_script("def configure(:\n", name="mymodels.py")),
    Case("code-raises-at-import", CHECKED, ("failed to import: RuntimeError: boom at import "
                                            "(at main.py:1)",),
         code=1, setup=main_script("raise RuntimeError('boom at import\\nsecond line')\n")),
    Case("code-never-calls-run", CHECKED, ("never calls Netrain(model_configuration_function)"
                                           ".run()", "add those lines"),
         code=1, setup=main_script("from mymodels import configure\n")),
    Case("code-exits-at-import", CHECKED,
         ("main.py exited with code 3 while loading", "remove the exit"), code=1,
         setup=main_script("import sys\nsys.exit(3)\n")),
    Case("code-app-not-callable", CHECKED, ("takes the model configuration function itself",),
         code=1, setup=main_script("from netrain import Netrain\nNetrain(42).run()\n")),
    Case("config-function-raises", CHECKED, ("regressor.narrow: configure raised RuntimeError",
                                             "deliberate failure", "(at mymodels.py:",
                                             "fix configure"),
         code=1, env={"USERPROJ_FAIL_INDEX": "0"}),
    Case("config-function-unknown-architecture", ("generate", "--models", "regressor.huge=1"),
         ("regressor.huge: configure raised KeyError", "'huge'"), code=1),
    Case("returns-none", CHECKED, ("returned NoneType, not a dict",
                                   "return the output dictionary"),
         code=1, setup=override("out = None")),
    Case("returns-list", CHECKED, ("returned list, not a dict",), code=1,
         setup=override("out = [out]")),
    Case("misses-a-field", CHECKED, ("regressor.narrow", "output is missing 'loss'",
                                     "add it to the returned dict"),
         code=1, env={"USERPROJ_OMIT": "loss"}),
    Case("misses-fields", CHECKED, ("missing 'name', 'optimizer'", "add them"), code=1,
         setup=override("del out['name'], out['optimizer']")),
    Case("nb-epoch-wrong-type", CHECKED, ("'nb_epoch' = 'ten'", "whole number >= 1"), code=1,
         setup=override("out['nb_epoch'] = 'ten'")),
    Case("optimizer-wrong-type", CHECKED, ("'optimizer' = 3", "give a keras optimizer name"),
         code=1, setup=override("out['optimizer'] = 3")),
    Case("path-wrong-type", CHECKED, ("'wpath' = 7", "directory path"), code=1,
         setup=override("out['wpath'] = 7")),
    Case("params-not-scalar", CHECKED, ("params['w'] of type object", "scalars"), code=1,
         setup=override("out['params'] = {'w': object()}")),
    Case("model-generator-not-callable", CHECKED, ("'model_generator' that is not callable",),
         code=1, setup=override("out['model_generator'] = 'dense'")),
    Case("model-generator-not-a-model", CHECKED, ("model_generator returned str, not a keras "
                                                  "model", "return a keras.Model"),
         code=1, setup=override("out['model_generator'] = lambda: 'a model'")),
    Case("x-and-y-lengths-differ", CHECKED, ("training_generator yielded x and y with 10 and 7 "
                                             "rows", "must be equal"),
         code=1, setup=override("x, y = out['training_generator']",
                                "out['training_generator'] = (x[:10], y[:7])")),
    Case("generator-yields-not-a-tuple", CHECKED, ("training_generator yielded ndarray, not an "
                                                   "(x, y) tuple", "yield (x_batch, y_batch)"),
         code=1, setup=override("x, y = out['training_generator']",
                                "out['training_generator'] = (b for b in [x[:8]] * 9)")),
    Case("generator-yields-nothing", CHECKED, ("training_generator yielded nothing",), code=1,
         setup=override("out['training_generator'] = iter([])")),
    Case("evaluation-generator-wrong-type", CHECKED, ("'evaluation_generator' of type int",),
         code=1, setup=override("out['evaluation_generator'] = 5")),
    Case("add-check-fails", ("add", "{batch}", "--models", "regressor.wide=1"),
         ("configure raised RuntimeError", "deliberate failure"), code=1,
         env={"USERPROJ_FAIL_INDEX": "0"}),
]

BATCH_CASES = [
    Case("show-unknown-batch", ("show", "19990101-000000-dead"),
         ("no batch '19990101-000000-dead'", "'netrain show' lists the batches"), code=1),
    Case("show-ambiguous-prefix", ("show", "{batch15}"), ("is ambiguous", "give more of the id"),
         code=1, setup=twin_batch),
    Case("show-path-not-a-batch", ("show", "../../etc"), ("'../../etc' is not a batch "
                                                         "directory", "check the path"), code=1),
    Case("show-name-too-long", ("show", "a" * 300), ("is not a batch id or path",
                                                     "File name too long", "(300 characters)"),
         code=1),
    Case("show-hostile-reference", ("show", "$(touch PWNED)"),
         ("no batch '$(touch PWNED)'",), code=1),
    Case("batch-yaml-syntax", ("show", "{batch}"), ("batch.yaml is not valid YAML",
                                                    "restore it from a backup"),
         code=1, setup=manifest(lambda d: "id: [oops\n")),
    Case("batch-yaml-not-a-manifest", ("show", "{batch}"), ("is not a netrain batch manifest",
                                                            "restore it"),
         code=1, setup=manifest(lambda d: "a: 1\n")),
    Case("batch-yaml-not-utf8", ("show", "{batch}"), ("is not UTF-8 text",), code=1,
         setup=manifest(lambda d: b"\xff\xfe\x00id: x\n")),
    Case("batch-yaml-nested-too-deep", ("show", "{batch}"), ("is not valid YAML",), code=1,
         setup=manifest(lambda d: "[" * 50_000)),
    Case("batch-yaml-missing-field", ("show", "{batch}"), ("batch.yaml is corrupt", "'tracking'",
                                                           "restore it"),
         code=1, setup=manifest(lambda d: {k: v for k, v in d.items() if k != "tracking"})),
    Case("batch-yaml-ill-typed-segment", ("show", "{batch}"), ("is corrupt", "count"), code=1,
         setup=manifest(lambda d: (d["models"][0]["segments"][0].update(count="three"), d)[1])),
    Case("batch-yaml-hostile-class", ("add", "{batch}", "--no-check", "--models",
                                      "regressor.wide=1"),
         ("is corrupt", "class 'x\\ntouch PWNED'"),
         code=1, setup=manifest(set_model("class", "x\ntouch PWNED"))),
    Case("batch-yaml-hostile-architecture", ("run", "{batch}"),
         ("is corrupt", "architecture '$(touch PWNED)'"),
         code=1, setup=manifest(set_model("architecture", "$(touch PWNED)"))),
    Case("add-to-missing-batch", ("add", "19990101-000000-dead", "--no-check", "--models",
                                  "regressor.wide=1"), ("no batch '19990101-000000-dead'",),
         code=1),
    Case("retrain-unknown-run", ("retrain", HEX), (f"no MLflow run '{HEX}'",
                                                   "copy the run id from 'netrain show"),
         code=1),
    Case("retrain-garbage-id", ("retrain", "zz;touch PWNED"),
         ("'zz;touch PWNED' is not an MLflow run id (32 hex characters)", "copy it from"),
         code=1),
    Case("retrain-uppercase-id", ("retrain", HEX.upper()), ("is not an MLflow run id",), code=1),
    Case("retrain-unreachable-server", ("retrain", HEX),
         ("tracking server http://127.0.0.1:9 is unreachable", "start it or fix"), code=1,
         setup=conf("tracking_uri: http://127.0.0.1:9"), max_seconds=60),
    Case("note-empty", ("note", "{batch}", "  "), ("the note is empty", "give some text"),
         code=1),
    Case("note-unknown-batch", ("note", "19990101-000000-dead", "hello"),
         ("no batch '19990101-000000-dead'",), code=1),
    Case("init-over-a-project", ("init", "."), ("netrain.yaml already exists", "use --force"),
         code=1),
    Case("init-under-a-file", ("init", "afile/sub"), ("cannot write into afile/sub",
                                                      "pick another"), code=1,
         setup=conf(files={"afile": "a file\n"})),
]

CASES = MODELS_CASES + NUMBER_CASES + CONFIG_CASES + USER_CODE_CASES + BATCH_CASES
if len({c.id for c in CASES}) != len(CASES):  # a collection error, not a test
    raise ValueError("two cases of the matrix share an id")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, proj: Path, template: Template, tmp_path: Path) -> None:
    if case.setup is not None:
        case.setup(proj, template.batch)
    cwd = tmp_path / "elsewhere" if case.elsewhere else proj
    cwd.mkdir(exist_ok=True)
    args = [a.replace("{batch15}", template.batch[:15]).replace("{batch}", template.batch)
            for a in case.args]
    before = picture(proj)
    start = time.monotonic()
    r = ni(*args, cwd=cwd, env=case.env)
    seconds = time.monotonic() - start
    message = assert_one_line_error(r, case.code)
    for fragment in case.fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    for secret in case.forbidden:
        assert secret not in r.text
    assert_unchanged(before, picture(proj))
    # The copy's manifest points at the template's database: that must not change either.
    assert_unchanged(template.before, picture(template.path))
    no_marker_files(tmp_path, template.path)
    if case.max_seconds is not None:
        assert seconds < case.max_seconds, f"took {seconds:.1f} s"


# --- hostile-looking input that must succeed ---------------------------------------------

DESC = ("it's \"quoted\" $(touch PWNED) `touch PWNED2`; touch PWNED3 && echo $HOME | cat\n"
        "second line\twith a tab, a backslash \\ and ünïcödé")


def test_desc_is_stored_and_shown_verbatim_and_never_executed(proj: Path,
                                                              tmp_path: Path) -> None:
    r = ni(*GEN, OK_MODELS, "--desc", DESC, cwd=proj)
    assert r.code == 0, r.text
    batch = Path(r.out.strip().splitlines()[-1])
    assert yaml.safe_load((batch / "batch.yaml").read_text())["description"] == DESC
    r = ni("show", "--json", "--no-scheduler", cwd=proj)
    assert r.code == 0, r.text
    assert {b["id"]: b["description"] for b in json.loads(r.out)}[batch.name] == DESC
    r = ni("show", batch.name, "--json", "--no-scheduler", cwd=proj)
    assert r.code == 0 and json.loads(r.out)["description"] == DESC, r.text
    r = ni("show", batch.name, "--no-scheduler", cwd=proj)
    assert r.code == 0 and repr(DESC) in r.out, r.text
    from tests.conftest import mlflow_client

    exp = mlflow_client(f"sqlite:///{proj / 'tracking' / 'custom.db'}").get_experiment_by_name(
        batch.name)
    assert exp.tags["mlflow.note.content"] == DESC
    no_marker_files(tmp_path)
    assert not (Path.home() / "PWNED").exists()


def test_disk_warn_succeeds_with_one_warning_line(proj: Path) -> None:
    conf("disk:", "  check: warn", "  mb_per_network: 1e9")(proj, "")
    r = ni(*GEN, OK_MODELS, cwd=proj)
    assert r.code == 0, r.text
    warnings = [ln for ln in r.err.splitlines() if ln.startswith("netrain: warning:")]
    assert len(warnings) == 1, r.err
    assert "GiB free" in warnings[0] and "disk.mb_per_network=1000000000.0" in warnings[0]
    assert Path(r.out.strip().splitlines()[-1]).is_dir()


def test_failed_generate_in_a_fresh_project_leaves_no_trainings_dir(template: Template,
                                                                     tmp_path: Path) -> None:
    """No runs/ yet: a failing check must not leave an empty trainings directory behind."""
    fresh = tmp_path / "fresh"
    shutil.copytree(template.path, fresh, ignore=shutil.ignore_patterns("runs"))
    for env, setup in (({"USERPROJ_FAIL_INDEX": "0"}, None),
                       ({}, conf("tracking_uri: http://127.0.0.1:9"))):
        if setup is not None:
            setup(fresh, "")
        before = picture(fresh)
        r = ni("generate", "--models", OK_MODELS, cwd=fresh, env=env)
        assert_one_line_error(r, 1)
        assert_unchanged(before, picture(fresh))
        assert not (fresh / "runs").exists()


def test_two_adds_at_once_both_take_effect(proj: Path, template: Template) -> None:
    """Four `add`s race on one batch: every one lands, indices never overlap."""
    adds = [("regressor.narrow=2", "2"), ("regressor.narrow=3", "3"),
            ("regressor.wide=1", "2"), ("regressor.narrow=4", "1")]
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", **CLEAN_ENV}
    env.pop("NETRAIN_CONFIG", None)
    procs = [subprocess.Popen([str(BIN / "netrain"), "add", template.batch, "--no-check",
                               "--models", models, "--array", array], cwd=proj, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for models, array in adds]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, out + err
    batch = proj / "runs" / template.batch
    m = yaml.safe_load((batch / "batch.yaml").read_text())
    models = {f"{x['class']}.{x['architecture']}": x for x in m["models"]}
    narrow = models["regressor.narrow"]["segments"]
    assert sorted((s["nnets"], s["count"]) for s in narrow) == [(1, 1), (2, 2), (3, 3), (4, 1)]
    starts = 0
    for s in narrow:  # consecutive, no index given twice
        assert s["start"] == starts
        starts += s["count"]
    assert [(s["start"], s["count"], s["nnets"]) for s in models["regressor.wide"]["segments"]
            ] == [(0, 2, 1)]
    script = (batch / "scripts" / "regressor-narrow-sbatch.sh").read_text()
    assert script.count("nnets=") == 4 and f"-lt {starts} ]" in script
    assert [p.name for p in batch.glob(".batch.yaml.*")] == [".batch.yaml.bak"], \
        "a temporary manifest was left behind"


@pytest.mark.parametrize("whole_group", [True, False], ids=["ctrl-c", "kill-int"])
def test_ctrl_c_during_generate_leaves_nothing_behind(proj: Path, tmp_path: Path,
                                                      whole_group: bool) -> None:
    """SIGINT while the configuration check runs: to the whole process group (Ctrl-C in a
    terminal), or to the netrain process alone (which must then stop its child itself)."""
    pidfile = tmp_path / "probe.pid"
    main_script("import os, time\n"
                f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
                "time.sleep(120)\n")(proj, "")
    before = picture(proj)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", **CLEAN_ENV}
    env.pop("NETRAIN_CONFIG", None)
    # as from a terminal: SIGINT handled, even when this test runs in a background job
    # (whose commands inherit SIGINT ignored) or an xdist worker
    p = subprocess.Popen([str(BIN / "netrain"), "generate", "--models", OK_MODELS], cwd=proj,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not pidfile.exists():  # the check is running (and sleeping) in its child process
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "the configuration check never started"
        time.sleep(0.1)
    assert list((proj / "runs").glob(".tmp-*")), "generate should be staging its batch now"
    if whole_group:
        os.killpg(p.pid, signal.SIGINT)
    else:
        os.kill(p.pid, signal.SIGINT)
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        ps = subprocess.run(["ps", "-s", str(p.pid), "-o", "pid,ppid,stat,wchan:20,etimes,args"],
                            capture_output=True, text=True).stdout
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate(timeout=10)
        pytest.fail(f"generate did not end within 60 s of SIGINT; its session:\n{ps}\n"
                    f"stdout: {out!r}\nstderr: {err!r}")
    assert p.returncode == 130, out + err
    assert err.strip().splitlines() == ["netrain: interrupted"] and out == ""
    assert_unchanged(before, picture(proj))
    assert not list((proj / "runs").glob(".tmp-*"))
    probe_pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the check's process is gone too
        try:
            os.kill(probe_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the configuration check (pid {probe_pid}) outlived generate")
