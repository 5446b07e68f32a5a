"""What `netrain check` learns where the tasks run: sent as source text and run with the tasks'
Python, so it uses only the standard library and reports even when netrain is missing there.

Usage: python nodeprobe.py REQUEST_JSON; prints one line ``NETRAIN-CHECK-RESULT {json}``.
"""

import json
import os
import platform
import shutil
import socket
import sys
import time

MARKER = "NETRAIN-CHECK-RESULT "


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return "{}: {}".format(type(exc).__name__, text[0] if text else "").rstrip(": ")


def _fs_type(path):
    """The filesystem type of ``path`` from /proc/mounts (the longest mount point above it)."""
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return ""
    real = os.path.realpath(path)
    best, kind = "", ""
    for parts in mounts:
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, parts[2]
    return kind


def _write_test(directory, name):
    """Create, fsync and remove a file in ``directory``: '' if that works, else the error."""
    path = os.path.join(directory, name)
    try:
        with open(path, "w") as f:
            f.write("netrain check\n")
            f.flush()
            os.fsync(f.fileno())
        os.remove(path)
        return ""
    except OSError as exc:
        return _first_line(exc)


def trainings(req):
    d = req["trainings_dir"]
    out = {"path": d, "exists": os.path.isdir(d), "fs": _fs_type(d)}
    if not out["exists"]:
        return out
    token = req.get("token_name")
    if token:
        try:
            with open(os.path.join(d, token)) as f:
                out["token"] = f.read().strip() == req["token"]
        except OSError:
            out["token"] = False
    out["write_error"] = _write_test(d, f".netrain-check-{socket.gethostname()}-{os.getpid()}")
    if not out["write_error"] and token:
        # leave a file for the submitting side: it then knows it sees what the node writes
        try:
            with open(os.path.join(d, token + ".node"), "w") as f:
                f.write(req["token"] + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            pass
    return out


def tracking(req):
    uri = req.get("tracking_uri") or ""
    if uri.startswith("sqlite:///"):
        db = uri[len("sqlite:///"):]
        d = os.path.dirname(db) or "."
        out = {"kind": "sqlite", "dir": d, "exists": os.path.isdir(d), "fs": _fs_type(d)}
        if out["exists"]:
            out["write_error"] = _write_test(d, f".netrain-check-db-{os.getpid()}")
        return out
    if uri.startswith(("http://", "https://")):
        return {"kind": "http", **http_probe(uri)}
    return {"kind": "other", **_tcp(uri)}


def http_probe(uri):
    """Ask the server something that needs the tracking API (and its authentication)."""
    import base64
    import urllib.error
    import urllib.request

    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
    request = urllib.request.Request(url)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if user and password:
        pair = f"{user}:{password}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    elif token:
        request.add_header("Authorization", "Bearer " + token)
    credentials = "basic" if user and password else ("token" if token else "none")
    try:
        with urllib.request.urlopen(request, timeout=float(_timeout())) as r:
            return {"status": r.status, "credentials": credentials}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "credentials": credentials}
    except Exception as exc:  # refused, timed out, no route, bad certificate
        reason = getattr(exc, "reason", exc)
        return {"error": _first_line(reason) if isinstance(reason, BaseException)
                else str(reason), "credentials": credentials}


def _timeout():
    return os.environ.get("NETRAIN_CHECK_HTTP_TIMEOUT", "10")


def _tcp(uri):
    """Database URIs (postgresql://user@host:port/db): can the node open a connection?"""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(uri)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        return {"error": str(exc)}
    defaults = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
    scheme = (parts.scheme or "").split("+")[0]
    if not host:
        return {"skipped": True}
    port = port or defaults.get(scheme)
    if port is None:
        return {"skipped": True}
    try:
        socket.create_connection((host, port), timeout=float(_timeout())).close()
        return {"address": f"{host}:{port}"}
    except OSError as exc:
        return {"address": f"{host}:{port}", "error": _first_line(exc)}


def netrain_info():
    try:
        import netrain
    except BaseException as exc:
        return {"error": _first_line(exc)}
    return {"version": getattr(netrain, "__version__", "?"),
            "path": os.path.dirname(os.path.abspath(netrain.__file__))}


def keras_info(gpu):
    t0 = time.monotonic()
    try:
        import keras
    except BaseException as exc:
        return {"error": _first_line(exc)}
    out = {"version": getattr(keras, "__version__", "?")}
    try:
        backend = keras.backend.backend()
        out["backend"] = backend
        mod = __import__("torch" if backend == "torch" else backend)
        out["backend_version"] = getattr(mod, "__version__", "?")
    except BaseException as exc:
        out["error"] = _first_line(exc)
        return out
    out["seconds"] = round(time.monotonic() - t0, 1)
    if gpu:
        out["gpu"] = _gpus(backend)
    return out


def _gpus(backend):
    """The GPUs the backend itself sees (what training will use), not just the driver's."""
    out: dict = {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    smi = shutil.which("nvidia-smi")
    if smi:
        import subprocess

        try:
            p = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
            out["nvidia_smi"] = [x for x in p.stdout.splitlines() if x.strip()][:8]
        except Exception as exc:
            out["nvidia_smi_error"] = _first_line(exc)
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            out["devices"] = [d.name for d in tf.config.list_physical_devices("GPU")]
        elif backend == "jax":
            import jax

            out["devices"] = [str(d) for d in jax.devices() if d.platform == "gpu"]
        elif backend == "torch":
            import torch

            out["devices"] = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        else:
            out["devices"] = []
    except BaseException as exc:
        out["devices"] = []
        out["error"] = _first_line(exc)
    return out


def models(req):
    """generate's own check of the configuration function, on the node's Python and data."""
    import contextlib
    import importlib
    import io

    probe = None
    # the node's netrain may be laid out as an older or newer one is
    error: BaseException = ImportError("no netrain.probe")
    for name in ("netrain.train.probe", "netrain.probe"):
        try:
            probe = importlib.import_module(name).probe
            break
        except BaseException as exc:
            error = exc
    if probe is None:
        return {"error": "cannot load netrain's probe: " + _first_line(error)}
    here = os.getcwd()
    try:
        os.chdir(req["code_dir"])
        sys.path.insert(0, req["code_dir"])
        with contextlib.redirect_stdout(io.StringIO()):
            return probe(req)
    except BaseException as exc:
        return {"error": "checking the configuration failed: " + _first_line(exc)}
    finally:
        os.chdir(here)


def main(argv):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    req = json.loads(argv[1])
    out: dict = {
        "host": socket.gethostname(),
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "scontrol": shutil.which("scontrol"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
    }
    # each part on its own: one broken piece must not hide the others
    for key, fn in (("trainings", lambda: trainings(req)), ("tracking", lambda: tracking(req)),
                    ("netrain", netrain_info),
                    ("keras", lambda: keras_info(req.get("gpu", False)))):
        try:
            out[key] = fn()
        except BaseException as exc:
            out[key] = {"error": _first_line(exc)}
    if req.get("models") and "error" not in out["netrain"]:
        out["models"] = models(req["models"])
    sys.stdout.write("\n" + MARKER + json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
