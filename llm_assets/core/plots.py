"""Small PNG charts for asset metadata: loss curve, per-field accuracy, confusion matrix.

matplotlib is imported inside each function and drives the Agg canvas
directly (no pyplot), so no global backend is switched and nothing needs a
display. Figures are small (about 100 dpi) because they travel inline as
base64 in Dagster's Markdown metadata.
"""

from __future__ import annotations

import base64
import io

DPI = 100


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def loss_curve_png(history: list[dict]) -> bytes:
    """Training loss per step, and evaluation loss where the history has it."""
    fig = _new_figure(5, 3)
    ax = fig.add_subplot()
    for key, label, style in (("loss", "train loss", "-"), ("eval_loss", "eval loss", "o--")):
        points = [(h["step"], h[key]) for h in history if h.get(key) is not None]
        if points:
            ax.plot(*zip(*points), style, label=label, markersize=3)
    if not history:
        ax.text(0.5, 0.5, "no loss history", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Loss", fontsize=10)
    ax.grid(alpha=0.3)
    return _png(fig)


def per_field_accuracy_png(report: dict) -> bytes:
    """One group per variant (and the baseline), one bar per field plus strict accuracy."""
    groups = {name: v["scores"] for name, v in (report.get("variants") or {}).items()}
    if report.get("baseline"):
        groups["baseline"] = report["baseline"]["scores"]
    fields = list(next(iter(groups.values()))["per_field_accuracy"]) if groups else []
    bars = ["strict", *fields]
    fig = _new_figure(max(4.0, 1.3 * len(groups) + 2), 3)
    ax = fig.add_subplot()
    width = 0.8 / max(len(bars), 1)
    for i, bar in enumerate(bars):
        values = [s["strict_accuracy"] if bar == "strict" else s["per_field_accuracy"][bar] for s in groups.values()]
        ax.bar([g + (i - (len(bars) - 1) / 2) * width for g in range(len(groups))], values, width, label=bar)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy per field", fontsize=10)
    if bars and groups:
        ax.legend(fontsize=7, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.08), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def confusion_matrix_png(confusion: dict[str, dict[str, int]], labels: list[str]) -> bytes:
    """Rows: expected action; columns: predicted action (labels order, "invalid" included)."""
    rows = [label for label in labels if label in confusion]
    matrix = [[confusion[r].get(c, 0) for c in labels] for r in rows]
    fig = _new_figure(4.5, 3.8)
    ax = fig.add_subplot()
    image = ax.imshow(matrix or [[0]], cmap="Blues", aspect="auto")
    peak = max((max(r) for r in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                        color="white" if count > peak / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("expected")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _png(fig)


def markdown_image(png_bytes: bytes, alt: str) -> str:
    """An inline Markdown image (data URI), what Dagster's MarkdownMetadataValue renders."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png_bytes).decode('ascii')})"
