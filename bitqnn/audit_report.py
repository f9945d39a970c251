"""The HTML report of `bitqnn audit`: one self-contained page, so it can be mailed or archived.

Plots are drawn with matplotlib's object API (`Figure`, rendered by Agg), never pyplot,
so no display, backend choice or global figure state is involved, and are embedded as
base64 PNG. Per audit statement: the share of samples resilient against k, a heat map of
the flipped bit positions per selected layer, the distribution of query times, the
per-k summary and a row per (sample, k).
"""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from bitqnn.audit import AuditRun
from bitqnn.audit_summary import WORDS, by_budget, found, vulnerable_parameters
from bitqnn.faults import weighted_layers

STYLE = """body { font-family: sans-serif; margin: 2em; color: #222 }
table { border-collapse: collapse; margin: 1em 0 }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; vertical-align: top }
td.number { text-align: right; white-space: nowrap } td.engine { white-space: nowrap }
tr.resilient td.verdict { color: #1a7f37 } tr.vulnerable td.verdict { color: #c62828 }
tr.unknown td.verdict { color: #777 }
figure { display: inline-block; margin: 0 1em 1em 0 }"""


def write_report(runs: list[AuditRun], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(runs), encoding="utf-8")


def render(runs: list[AuditRun]) -> str:
    body = "\n".join(_section(run) for run in runs)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>bitqnn audit</title>"
            f"<style>{STYLE}</style></head>\n<body><h1>bitqnn audit</h1>\n{body}\n</body></html>\n")


def _section(run: AuditRun) -> str:
    model = run.audit.queries[0].model
    plots = [("resilience", "share of samples resilient against k", _resilience(run)),
             ("heatmap", "flipped bit positions per layer", _heat_map(run)),
             ("times", "time per query", _times(run))]
    figures = "".join(f'<figure><img class="{name}" alt="{escape(alt)}" src="data:image/png;base64,{_png(fig)}">'
                      f"<figcaption>{escape(alt)}</figcaption></figure>" for name, alt, fig in plots)
    return (f"<section><h2>{escape(run.audit.text)}</h2>\n<p>{escape(run.where)}: {len(run.audit.samples)} samples, "
            f"k = 1..{run.budget}, {escape(model.describe())}, engine {escape(run.audit.options['engine'])}</p>\n"
            f"{_budget_table(run)}\n{figures}\n{_weakest(run)}\n{_rows_table(run)}</section>")


# ---- tables ----


def _table(header: tuple[str, ...], rows: list[str]) -> str:
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>"


def _budget_table(run: AuditRun) -> str:
    rows = [f'<tr><td class="number">{line.k}</td>'
            + "".join(f'<td class="number">{line.counts[word]}</td>' for word in ("resilient", "vulnerable", "unknown"))
            + "".join(f'<td class="number">{time}</td>' for time in line.times()) + "</tr>"
            for line in by_budget(run)]
    return _table(("k", "resilient", "vulnerable", "unknown", "median time", "max time"), rows)


def _weakest(run: AuditRun) -> str:
    weakest = vulnerable_parameters(run.rows.values())
    if not weakest:
        return "<p>No counterexample flips any parameter.</p>"
    rows = [f'<tr><td>{escape(parameter)}</td><td class="number">{count}</td><td>{", ".join(map(str, bits))}</td></tr>'
            for parameter, count, bits in weakest]
    return "<h3>Vulnerable parameters</h3>" + _table(("parameter", "counterexamples", "bits flipped"), rows)


def _rows_table(run: AuditRun) -> str:
    rows = []
    for sample in run.audit.samples:
        for k in range(1, run.budget + 1):
            row = run.rows[sample, k]
            word = WORDS[row.verdict]
            detail = "; ".join(row.flips) if row.flips else row.reason
            if word == "vulnerable" and not row.flips:
                detail = "not robust even without a flip"
            rows.append(f'<tr class="{word}" data-sample="{sample}" data-k="{k}"><td class="number">{sample}</td>'
                        f'<td class="number">{k}</td><td class="verdict">{word}</td>'
                        f'<td class="number">{row.seconds:.2f}s</td><td class="engine">{escape(row.engine)}</td>'
                        f"<td>{escape(detail)}</td></tr>")
    header = ("sample", "k", "verdict", "time", "engine", "flipped bits, or why unknown")
    return "<h3>Every sample and k</h3>" + _table(header, rows)


# ---- plots ----


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _resilience(run: AuditRun) -> Figure:
    lines = by_budget(run)
    ks = [line.k for line in lines]
    total = len(run.audit.samples)
    figure = Figure(figsize=(4.5, 3.2))
    ax = figure.subplots()
    ax.plot(ks, [line.counts["resilient"] / total for line in lines], "o-", color="#1a7f37", label="resilient")
    if any(line.counts["unknown"] for line in lines):
        ax.plot(ks, [(line.counts["resilient"] + line.counts["unknown"]) / total for line in lines], "o--",
                color="#777", label="resilient or unknown")
        ax.legend()
    ax.set(xlabel="k (flipped bits at most)", ylabel="share of samples", ylim=(-0.03, 1.03), xticks=ks,
           title=f"resilient samples ({total} in all)")
    ax.grid(alpha=0.3)
    return figure


def heat_map(run: AuditRun) -> tuple[list[str], np.ndarray]:
    """Row names (each selected layer's weights or biases) and counts [row, bit]: how many
    counterexamples flip that bit position in that row. Positions the fault model does not
    let flip there are NaN, so that they read as excluded rather than as safe."""
    fq = run.audit.queries[0]
    qnn, model, weighted = fq.network, fq.model, weighted_layers(fq.network)
    selected = sorted({(selection.layer, selection.kind) for selection in model.params})
    positions = []
    for layer, kind in selected:
        stored = qnn.layers[weighted[layer]]
        positions.append(model.bits.positions_for(stored.bias_storage if kind == "biases" else stored.weight_storage))
    counts = np.full((len(selected), 1 + max(max(bits) for bits in positions)), np.nan)
    for number, bits in enumerate(positions):
        counts[number, list(bits)] = 0
    for flips in found(run.rows.values()):
        for layer, kind, bit in {(flip.layer, flip.kind, flip.bit) for flip in flips}:
            counts[selected.index((layer, kind)), bit] += 1
    return [f"layers[{layer}].{kind}" for layer, kind in selected], counts


def _heat_map(run: AuditRun) -> Figure:
    names, counts = heat_map(run)
    bits = counts.shape[1]
    top = max(1.0, float(np.nanmax(counts)))
    figure = Figure(figsize=(max(4.0, 0.4 * bits + 2.5), 0.5 * len(names) + 1.6))
    ax = figure.subplots()
    image = ax.imshow(np.ma.masked_invalid(counts), cmap=colormaps["Reds"].with_extremes(bad="#dddddd"),
                      aspect="auto", vmin=0, vmax=top)
    for (row, bit), value in np.ndenumerate(counts):
        if value > 0:
            ax.text(bit, row, f"{value:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if value > top / 2 else "black")
    ax.set(xticks=range(bits), yticks=range(len(names)), yticklabels=names,
           xlabel="bit position (0 = least significant" + ("; grey: not in the fault model)"
                                                          if np.isnan(counts).any() else ")"),
           title="counterexamples flipping each bit")
    ax.tick_params(axis="x", labelsize=7)
    figure.colorbar(image, ax=ax, label="counterexamples")
    return figure


def _times(run: AuditRun) -> Figure:
    figure = Figure(figsize=(4.5, 3.2))
    ax = figure.subplots()
    lines = by_budget(run)
    ax.hist([line.seconds for line in lines], bins=20, stacked=True, label=[f"k={line.k}" for line in lines])
    ax.set(xlabel="seconds", ylabel="queries", title="time per (sample, k) query solved")
    ax.legend()
    return figure
