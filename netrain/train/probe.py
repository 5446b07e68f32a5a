"""generate's check, run in a child process: import the main script from the snapshot,
call the configuration function once per model, validate the output.

Usage: python -m netrain.train.probe REQUEST.json RESULT.json
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any


def probe(request: dict[str, Any]) -> dict[str, Any]:
    from netrain.define.contract import build_input, call_config_function, first_line, raised_at
    from netrain.define.loader import ScriptError, load_config_function
    from netrain.errors import NetrainError

    code_dir = Path(request["code_dir"])
    main = code_dir / request["main_script"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            fn = load_config_function(main)
    except ScriptError as exc:
        text = str(exc).replace(f"main script {main.name}",
                                f"main script {request['main_script_label']}")
        return {"error": text}
    except BaseException as exc:
        at = "" if isinstance(exc, SyntaxError) else raised_at(exc)
        return {"error": f"main script {request['main_script_label']} failed to import: "
                         f"{type(exc).__name__}: {first_line(str(exc))}{at} (fix it, or run "
                         "generate with --no-check)"}
    warnings: list[str] = []
    for m in request["models"]:
        key = f"{m['cls']}.{m['architecture']}"
        inputs = build_input(
            cls=m["cls"], architecture=m["architecture"], nb_epoch=m["nb_epoch"],
            epoch_samples=m["epoch_samples"], nnets=m["nnets"], intelligent=m["intelligent"],
            batch_dir=Path(request["batch_dir"]), batch=request["batch"], trainingrun=0,
            net_index=0,
        )
        try:
            with contextlib.redirect_stdout(out):
                cfg = call_config_function(fn, inputs, key)
                if request.get("deep", True):
                    from netrain.train.sequential import peek_data

                    peek_data(cfg.training_generator, key, "training_generator")
                    if cfg.evaluation_generator is not None:
                        peek_data(cfg.evaluation_generator, key, "evaluation_generator")
                    model = cfg.model_generator()
                    if not hasattr(model, "fit") or not hasattr(model, "compile"):
                        return {"error": f"{key}: model_generator returned "
                                         f"{type(model).__name__}, not a keras model: return "
                                         "a keras.Model (e.g. keras.Sequential([...]))"}
        except NetrainError as exc:
            return {"error": str(exc)}
        except Exception as exc:
            return {"error": f"{key}: checking the configuration raised {type(exc).__name__}: "
                             f"{first_line(str(exc))}{raised_at(exc)} (fix it, or run generate "
                             "with --no-check)"}
        if cfg.unknown_keys:
            warnings.append(f"{key}: output keys {', '.join(cfg.unknown_keys)} are not part of "
                            "the contract and will be ignored")
    return {"ok": True, "warnings": warnings}


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    request_path, result_path = Path(sys.argv[1]), Path(sys.argv[2])
    request = json.loads(request_path.read_text())
    os.chdir(request["code_dir"])
    try:
        result = probe(request)
    except BaseException as exc:
        result = {"error": f"checking the configuration failed: {type(exc).__name__}: {exc}"}
    result_path.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
