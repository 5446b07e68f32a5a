"""CI keeps the benchmark suite working: bench/run.py --smoke must run every section and
produce finite figures. No timing is asserted (benchmarks report ratios, tests don't)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_bench_smoke_runs_every_section(tmp_path: Path) -> None:
    out_json, out_md = tmp_path / "r.json", tmp_path / "B.md"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke",
                        "--json", str(out_json), "--md", str(out_md)],
                       capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out_json.read_text())
    for key in ("per_network", "tracking", "per_task", "generate", "show", "end_to_end"):
        assert key in res, key
    assert math.isfinite(res["per_network"]["ratio"]) and res["per_network"]["ratio"] > 0
    assert math.isfinite(res["per_task"]["ratio_mlflow"])
    assert len(res["generate"]["rows"]) == 3 and len(res["show"]["rows"]) == 2
    assert res["end_to_end"]["direct_single_task_ratio"] > 0
    text = out_md.read_text()
    assert "## Per network" in text and "## End to end" in text
