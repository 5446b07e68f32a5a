"""exit_now ends a process as a normal exit would, less the interpreter's teardown."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from netrain.exits import exit_code


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(code), encoding="utf-8")
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)


def test_exit_now_keeps_what_a_normal_exit_does(tmp_path: Path) -> None:
    out = tmp_path / "written-by-thread"
    p = _run(f"""
        import atexit, sys, threading, time
        from netrain.exits import exit_now

        atexit.register(lambda: print("atexit ran", flush=True))
        def late():
            time.sleep(0.5)
            open({str(out)!r}, "w").write("done")
        threading.Thread(target=late).start()          # a non-daemon thread: waited for
        sys.stdout.write("buffered, not flushed")      # flushed on the way out
        sys.stderr.write("to stderr")
        exit_now(7)
        print("never")
        """, tmp_path)
    assert p.returncode == 7
    assert p.stdout.startswith("buffered, not flushed")
    assert "atexit ran" in p.stdout and "never" not in p.stdout
    assert "to stderr" in p.stderr
    assert out.read_text() == "done"


def test_exit_now_with_a_message_exits_1(tmp_path: Path) -> None:
    p = _run("""
        from netrain.exits import exit_now
        exit_now("netrain: error: something")
        """, tmp_path)
    assert p.returncode == 1
    assert "netrain: error: something" in p.stderr


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (3, 3), (256 + 2, 2)])
def test_exit_code(code: object, status: int) -> None:
    assert exit_code(code) == status
