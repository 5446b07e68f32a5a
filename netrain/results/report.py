"""`netrain report`: a batch's learning curves, final-metric spread and best networks as PNG
files, a CSV table and one self-contained HTML page."""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netrain.define.batch import Batch, atomic_write
from netrain.results.networks import Network, best, load_histories, metric_names, networks

#: Metrics drawn as learning curves (training, validation), when the networks have them.
CURVES = (("loss", "training loss"), ("val_loss", "validation loss"))


@dataclass
class Report:
    out: Path
    html: Path
    figures: list[Path] = field(default_factory=list)
    table: Path | None = None
    networks: int = 0
    best: list[Network] = field(default_factory=list)
    metric: str = ""
    mode: str = "min"


def _figure(width: float, height: float, layout: Any = "constrained") -> Any:
    # The object API with the Agg canvas: no pyplot, no display, no global state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _positive(values: list[float]) -> bool:
    return bool(values) and all(v > 0 for v in values if not math.isnan(v))


def curves_figure(model: str, nets: list[Network], highlight: Network | None, path: Path) -> None:
    """Every network's training and validation loss per epoch, the best one drawn bold."""
    from matplotlib.collections import LineCollection
    from matplotlib.ticker import MaxNLocator

    keys = [(k, label) for k, label in CURVES if any(k in n.history for n in nets)]
    if not keys:
        keys = [(k, k) for k in list(dict.fromkeys(k for n in nets for k in n.history))[:2]]
    # A fixed layout: the constrained one costs a second drawing of every line.
    fig = _figure(5.2 * max(1, len(keys)), 3.8, layout=None)
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.13, top=0.86, wspace=0.25)
    axes = fig.subplots(1, max(1, len(keys)), squeeze=False)[0]
    for ax, (key, label) in zip(axes, keys, strict=False):
        segs = []
        values: list[float] = []
        for n in nets:
            ys = n.history.get(key) or []
            pts = [(i, y) for i, y in enumerate(ys) if not math.isnan(y)]
            if pts:
                segs.append(pts)
                values += [y for _, y in pts]
        alpha = max(0.08, min(0.8, 8 / max(1, len(segs))))
        ax.add_collection(LineCollection(segs, linewidths=0.8, alpha=alpha, colors="tab:blue"))
        if highlight is not None and highlight.history.get(key):
            ax.plot(range(len(highlight.history[key])), highlight.history[key], color="tab:red",
                    linewidth=2, label=f"best: t{highlight.task} n{highlight.net}")
            ax.legend(loc="upper right", fontsize=8)
        ax.autoscale()
        if _positive(values) and max(values) / min(values) > 4:
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(f"{label} ({len(segs)} networks)", fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(model, fontsize=11)
    fig.savefig(path)


def distribution_figure(nets: list[Network], metrics: list[str], path: Path) -> None:
    """Per metric, the spread of final values across models (box plot with every network)."""
    import random

    models = list(dict.fromkeys(n.model for n in nets))
    metrics = metrics[:4] or ["loss"]
    fig = _figure(max(4.5, 1.6 * len(models)) * min(2, len(metrics)),
                  3.6 * math.ceil(len(metrics) / 2))
    axes = fig.subplots(math.ceil(len(metrics) / 2), min(2, len(metrics)), squeeze=False).ravel()
    rnd = random.Random(0)
    for ax, metric in zip(axes, metrics, strict=False):
        data = [[n.final[metric] for n in nets if n.model == m and metric in n.final
                 and not math.isnan(n.final[metric])] for m in models]
        shown = [(m, d) for m, d in zip(models, data, strict=True) if d]
        if not shown:
            ax.set_visible(False)
            continue
        ax.boxplot([d for _, d in shown], showfliers=False, widths=0.5)
        for i, (_, d) in enumerate(shown, start=1):
            xs = [i + rnd.uniform(-0.15, 0.15) for _ in d]
            ax.scatter(xs, d, s=6, alpha=max(0.1, min(0.7, 20 / len(d))), color="tab:blue")
        ax.set_xticks(range(1, len(shown) + 1), [m for m, _ in shown], rotation=20,
                      ha="right", fontsize=8)
        flat = [v for _, d in shown for v in d]
        if _positive(flat) and max(flat) / min(flat) > 4:
            ax.set_yscale("log")
        ax.set_title(f"final {metric}", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    fig.savefig(path)


TABLE_FIELDS = ("rank", "model", "task", "net", "metric", "value", "epochs", "run_id",
                "weights")


def table_rows(top: list[Network], metric: str) -> list[dict[str, Any]]:
    return [{"rank": i, "model": n.model, "task": n.task, "net": n.net, "metric": metric,
             "value": n.final.get(metric), "epochs": n.epochs, "run_id": n.run_id,
             "weights": n.weights} for i, n in enumerate(top, start=1)]


def _png_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _html(batch: Batch, rep: Report, nets: list[Network], per_model: dict[str, list[Network]],
          curve_figs: dict[str, Path], dist: Path, rows: list[dict[str, Any]]) -> str:
    m = batch.manifest
    e = html.escape
    states: dict[str, int] = {}
    for n in nets:
        states[n.state] = states.get(n.state, 0) + 1
    counts = ", ".join(f"{v} {k}" for k, v in sorted(states.items()))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>netrain report {e(m.id)}</title><style>",
        "body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
        "padding:3px 6px;text-align:left}th{background:#eee}img{max-width:100%}"
        "code{font-size:12px}",
        "</style></head><body>",
        f"<h1>Batch {e(m.id)}</h1>",
        f"<p>{e(m.description)}</p>",
        f"<p>created {e(m.created)}; {len(nets)} networks ({e(counts)}) in "
        f"{len(per_model)} model(s); code {e(str(m.code.get('digest', ''))[:19])}, git "
        f"{e(str(m.code.get('git_commit') or '-'))}; directory <code>{e(str(batch.path))}"
        "</code></p>",
        f"<h2>Best networks by final {e(rep.metric)}</h2><table><tr>",
        "".join(f"<th>{e(f)}</th>" for f in TABLE_FIELDS), "</tr>",
    ]
    for r in rows:
        value = r["value"]
        cells = {**r, "value": f"{value:.6g}" if isinstance(value, float) else value}
        parts.append("<tr>" + "".join(
            f"<td><code>{e(str(cells[f]))}</code></td>" if f in ("run_id", "weights")
            else f"<td>{e(str(cells[f]))}</td>" for f in TABLE_FIELDS) + "</tr>")
    parts += ["</table>", "<h2>Final metrics across models</h2>", _png_tag(dist, "final")]
    for model, group in per_model.items():
        done = [n for n in group if n.state == "finished"]
        vals = [n.final[rep.metric] for n in done if rep.metric in n.final
                and not math.isnan(n.final[rep.metric])]
        summary = (f"median final {rep.metric} {statistics.median(vals):.4g}, best "
                   f"{(min(vals) if rep.mode == 'min' else max(vals)):.4g}"
                   if vals else "no finished network")
        parts += [f"<h2>{e(model)}</h2>",
                  f"<p>{len(group)} networks, {len(done)} finished; {e(summary)}</p>"]
        if model in curve_figs:
            parts.append(_png_tag(curve_figs[model], f"learning curves of {model}"))
    parts.append("</body></html>")
    return "\n".join(parts)


def build(batch: Batch, out: Path, metric: str | None = None, mode: str | None = None,
          top: int = 5) -> Report:
    """Write the batch's report into ``out``; returns what was written."""
    from netrain.results.networks import default_metric, default_mode

    nets = networks(batch)
    load_histories(nets)
    names = metric_names(nets)
    if metric is None:
        metric = default_metric(names)
    mode = mode or default_mode(metric)
    out.mkdir(parents=True, exist_ok=True)
    rep = Report(out=out, html=out / "report.html", networks=len(nets), metric=metric,
                 mode=mode)
    per_model: dict[str, list[Network]] = {}
    for n in nets:
        per_model.setdefault(n.model, []).append(n)
    rep.best = best(nets, metric, mode, top, models=True) if nets else []
    curve_figs: dict[str, Path] = {}
    for model, group in per_model.items():
        drawn = [n for n in group if n.history]
        if not drawn:
            continue
        top1 = next((n for n in rep.best if n.model == model), None)
        path = out / f"curves-{model.replace('.', '-')}.png"
        curves_figure(model, drawn, top1, path)
        curve_figs[model] = path
        rep.figures.append(path)
    dist = out / "final-metrics.png"
    shown = [k for k in ("loss", "val_loss") if k in names] + \
        [k for k in names if k not in ("loss", "val_loss")]
    distribution_figure([n for n in nets if n.state == "finished"], shown, dist)
    rep.figures.insert(0, dist)
    rows = table_rows(rep.best, metric)
    rep.table = out / "best.csv"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(TABLE_FIELDS))
    w.writeheader()
    w.writerows(rows)
    atomic_write(rep.table, buf.getvalue())
    atomic_write(rep.html, _html(batch, rep, nets, per_model, curve_figs, dist, rows))
    return rep


def default_out(batch: Batch) -> Path:
    return batch.path / "report"
