"""exit_now ends a process as a normal exit would, less the interpreter's teardown."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from netrain.exits import exit_code


def _run(code: str, tmp_path: Path, grace: str = "0.5") -> subprocess.CompletedProcess[str]:
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(code), encoding="utf-8")
    env = dict(os.environ, NETRAIN_EXIT_GRACE=grace)
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                          timeout=30)


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
        """, tmp_path, grace="30")  # an error's grace: time enough for the thread
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


def test_exit_now_ends_with_an_idle_thread_pool(tmp_path: Path) -> None:
    # the workers of a pool exit only when told to (as the interpreter's exit tells them):
    # exit_now used to join them first and wait forever (netrain run after a full disk)
    p = _run("""
        from concurrent.futures import ThreadPoolExecutor
        from netrain.exits import exit_now

        pool = ThreadPoolExecutor(2)
        assert [f.result() for f in [pool.submit(abs, -1), pool.submit(abs, -2)]] == [1, 2]
        exit_now(0)
        """, tmp_path)
    assert p.returncode == 0, p.stderr


def test_after_an_error_a_blocked_thread_does_not_keep_the_process(tmp_path: Path) -> None:
    p = _run("""
        import threading
        from netrain.exits import exit_now

        threading.Thread(target=threading.Event().wait).start()  # never ends
        exit_now(1)
        """, tmp_path)
    assert p.returncode == 1, p.stderr


def test_run_main_turns_an_escaping_exception_into_one_line(tmp_path: Path) -> None:
    p = _run("""
        import threading
        from netrain.exits import run_main

        def main():
            threading.Thread(target=threading.Event().wait).start()
            raise OSError(28, "No space left on device", "/x/y.json")
        run_main(main, "netrain: test")
        """, tmp_path)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        "netrain: test: error: OSError: [Errno 28] No space left on device: '/x/y.json'"]
