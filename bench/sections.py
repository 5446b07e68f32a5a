"""Where a benchmark's table goes: its own marked block in BENCHMARKS.md (replaced on each
run, other blocks untouched) and bench/sections/<name>.md, which bench/run.py appends."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_section(name: str, table: str) -> None:
    """Put ``table`` between the ``bench/<name>.py`` markers of BENCHMARKS.md."""
    begin, end = f"<!-- bench/{name}.py: begin -->", f"<!-- bench/{name}.py: end -->"
    md = ROOT / "BENCHMARKS.md"
    text = md.read_text() if md.exists() else "# netrain benchmarks\n"
    block = f"{begin}\n{table}{end}\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    md.write_text(text)
    (ROOT / "bench" / "sections" / f"{name}.md").write_text(table)
