"""Plots and the run summary table."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> Path:  # noqa: ANN001 - a matplotlib Figure
    """Lays out, writes (creating the folder) and closes a figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_history(history_csv: Path, out: Path) -> Path | None:
    """Plots loss and accuracy per epoch (train and validation) from a CSVLogger file."""
    if not history_csv.is_file():
        return None
    with history_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    plt = _pyplot()
    metrics = [m for m in ("loss", "accuracy") if m in rows[0]]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
    epochs = [int(r["epoch"]) + 1 for r in rows]
    for ax, metric in zip(axes[0], metrics, strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            key = prefix + metric
            if key in rows[0]:
                ax.plot(epochs, [float(r[key] or "nan") for r in rows], style, label=key)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
        ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_gradients(
    rows: list[dict[str, float]], layers: list[str], clip: tuple[str, float] | None, out: Path
) -> Path | None:
    """Per-layer gradient norm (before clipping) over steps, log scale, with the clip threshold."""
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    steps = [r["step"] for r in rows]
    for name in layers:
        ax.plot(steps, [max(r[f"norm/{name}"], 1e-30) for r in rows], label=name, lw=1)
    ax.plot(
        steps,
        [max(r["global_norm"], 1e-30) for r in rows],
        "k--",
        lw=1.5,
        label="global (before clip)",
    )
    if clip:
        mode, value = clip
        what = {
            "clipnorm": "per-variable",
            "global_clipnorm": "global",
            "clipvalue": "per-element",
        }[mode]
        ax.axhline(value, color="red", lw=1, ls=":", label=f"{mode} = {value:g} ({what})")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("L2 norm of the gradient")
    ax.set_title("Gradient norms per layer (before clipping)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    return _save(fig, out)


def plot_confusion(matrix: np.ndarray, labels: list[str], out: Path, title: str) -> Path:
    """Draws a confusion matrix (rows: true label, columns: predicted) with counts."""
    plt = _pyplot()
    size = max(4.0, 0.5 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = matrix.max() if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if matrix[i, j]:
                color = "white" if matrix[i, j] > top / 2 else "black"
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color=color, fontsize=8)
    return _save(fig, out)


def print_summary(title: str, rows: list[tuple[str, str]]) -> None:
    """Prints a two-column table (what, value) with rich.

    On a terminal, long values fold to its width. Piped or redirected, the table is as wide as
    its widest key beside its widest value, so a path stays on one line for ``grep`` and for
    copying.
    """
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    console = Console()
    if not console.is_terminal:
        # the widest key beside the widest value, plus 7 cells of borders and padding
        keys = max((_widest(key) for key, _ in rows), default=0)
        values = max((_widest(value) for _, value in rows), default=0)
        console = Console(width=max(console.width, keys + values + 7))
    console.print(table)


def _widest(text: str) -> int:
    """Terminal cells of the widest line of ``text`` (wide characters count twice)."""
    from rich.cells import cell_len

    return max((cell_len(line) for line in str(text).splitlines()), default=0)


def summary_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows shared by every pipeline: data counts, rejections and stage timings."""
    rows = []
    examples = metrics.get("examples", {})
    if examples:
        rows.append(("examples", ", ".join(f"{k} {v}" for k, v in examples.items())))
    rejected = metrics.get("rejected", {})
    if rejected:
        rows.append(("rejected", ", ".join(f"{k} {v}" for k, v in rejected.items())))
    seconds = metrics.get("stage_seconds", {})
    if seconds:
        rows.append(("stage seconds", ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())))
    reused = metrics.get("stages_reused", [])
    if reused:
        rows.append(("reused stages", ", ".join(reused)))
    return rows


def plot_attention(panels: list[tuple[list[str], list[str], np.ndarray]], out: Path) -> Path | None:
    """Attention heat maps: one panel per sentence, output tokens down, source tokens across."""
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.5), squeeze=False)
    for ax, (source, output, weights) in zip(axes[0], panels, strict=True):
        ax.imshow(weights, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(source)), source, rotation=70, fontsize=7)
        ax.set_yticks(range(len(output)), output, fontsize=7)
        ax.set_xlabel("source token")
        ax.set_ylabel("output token")
    fig.suptitle("Attention weights (greedy decoding; each row sums to 1)")
    return _save(fig, out)


def _importance(values: list[Any], scores: np.ndarray) -> float:
    """How strongly a hyperparameter moves the objective, from 0 to 1.

    Numbers: the absolute rank correlation. Choices: the spread of the per-choice means relative
    to the objective's range.
    """
    if len(set(map(str, values))) < 2 or np.ptp(scores) == 0:
        return 0.0
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        ranks_x = np.argsort(np.argsort(values))
        ranks_y = np.argsort(np.argsort(scores))
        return float(abs(np.corrcoef(ranks_x, ranks_y)[0, 1]))
    means = [scores[[str(v) == str(u) for v in values]].mean() for u in set(map(str, values))]
    return float(np.ptp(means) / np.ptp(scores))


def plot_tuning(rows: list[dict[str, Any]], tune: Any, out: Path, top: int = 3) -> Path | None:
    """Objective per trial (with the best so far) and the effect of the top hyperparameters."""
    done = [r for r in rows if r.get("objective") is not None]
    if not done:
        return None
    plt = _pyplot()
    scores = np.array([r["objective"] for r in done], dtype=float)
    ranked = sorted(tune.space, key=lambda n: -_importance([r[n] for r in done], scores))[:top]
    fig, axes = plt.subplots(
        1, 1 + len(ranked), figsize=(4.5 * (1 + len(ranked)), 3.8), squeeze=False
    )
    ax = axes[0][0]
    best = np.minimum.accumulate(scores) if tune.goal == "min" else np.maximum.accumulate(scores)
    ax.plot(range(len(scores)), scores, "o", label="trial")
    ax.plot(range(len(scores)), best, "-", label="best so far")
    ax.set_xticks(range(len(scores)), [r["trial"] for r in done], rotation=60, fontsize=7)
    ax.set_xlabel("trial")
    ax.set_ylabel(tune.objective)
    ax.legend()
    ax.grid(alpha=0.3)
    log_y = tune.objective.endswith("loss") and bool(np.all(scores > 0))  # losses span decades
    if log_y:
        ax.set_yscale("log")
    for ax, name in zip(axes[0][1:], ranked, strict=True):
        if log_y:
            ax.set_yscale("log")
        values = [r[name] for r in done]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if numeric:
            ax.plot(values, scores, "o")
            if tune.space[name].log:
                ax.set_xscale("log")
        else:
            labels = sorted(set(map(str, values)))
            ax.plot([labels.index(str(v)) for v in values], scores, "o")
            ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(name)
        ax.set_title(f"importance {_importance(values, scores):.2f}", fontsize=9)
        ax.grid(alpha=0.3)
    return _save(fig, out)


def training_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows shared by every pipeline's summary: gradient health and the export."""
    rows = [("gradient warning", warning) for warning in metrics.get("gradient_warnings", [])]
    grads = metrics.get("gradients", {})
    if grads.get("steps_recorded"):
        rows.append(
            (
                "gradients",
                f"median global norm {grads['global_norm_median']:.3g}, max "
                f"{grads['global_norm_max']:.3g}, clipped {grads['fraction_clipped']:.0%} of steps",
            )
        )
    if "export_dir" in metrics:
        rows.append(("export", metrics["export_dir"]))
    return rows


def speech_summary(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """Run-summary rows of the speech pipeline."""
    rows = [("source", str(metrics.get("source", "")))]
    rows += summary_rows(metrics)
    left_out = {k: v for k, v in metrics.get("left_out", {}).items() if v}
    if left_out:
        rows.append(("left out by design", ", ".join(f"{k} {v}" for k, v in left_out.items())))
    if "val_accuracy" in metrics:
        rows.append(
            ("best val accuracy", f"{metrics['val_accuracy']:.4f} (epoch {metrics['best_epoch']})")
        )
    if "test_accuracy" in metrics:
        rows.append(
            ("test accuracy", f"{metrics['test_accuracy']:.4f} on {metrics['test_examples']} clips")
        )
        if "test_accuracy_windowed" in metrics:
            rows.append(
                (
                    "test accuracy, windowed",
                    f"{metrics['test_accuracy_windowed']:.4f} (each clip somewhere in a full "
                    "window of background noise)",
                )
            )
        if metrics.get("stream"):
            st = metrics["stream"]
            delay = st["mean_delay_seconds"]
            rows.append(
                (
                    "stream detection",
                    f"recall {st['recall']:.3f}, wrong label {st['wrong_label_rate']:.3f}, "
                    f"{st['false_alarms_per_hour']:.0f} false alarms/h, delay "
                    f"{'-' if delay is None else f'{delay:.2f} s'} ({st['commands']} commands in "
                    f"{st['seconds'] / 60:.1f} min of test audio)",
                )
            )
            if st.get("stream_step"):
                ss = st["stream_step"]
                rows.append(
                    (
                        "stream detection, --stream",
                        f"recall {ss['recall']:.3f}, wrong label {ss['wrong_label_rate']:.3f}, "
                        f"{ss['false_alarms_per_hour']:.0f} false alarms/h (same recording)",
                    )
                )
        worst = sorted(metrics["per_class"].items(), key=lambda kv: kv[1]["f1"])[:3]
        rows.append(("weakest classes (F1)", ", ".join(f"{k} {v['f1']:.2f}" for k, v in worst)))
    for item in metrics.get("misclassified", [])[:3]:
        rows.append(
            (
                "misclassified",
                f"{Path(item['path']).name}: {item['true']} -> {item['predicted']} ({item['probability']:.2f})",
            )
        )
    return rows + training_rows(metrics)


def translation_summary(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """Run-summary rows of the translation pipeline."""
    rows = [("source", f"{metrics.get('source', '')} ({metrics.get('direction', '')})")]
    rows += summary_rows(metrics)
    if "vocab_size" in metrics:
        v = metrics["vocab_size"]
        rows.append(("vocabulary", f"source {v['source']}, target {v['target']}"))
    if "subwords_per_word" in metrics:
        s = metrics["subwords_per_word"]
        rows.append(("subwords per word", f"source {s['source']}, target {s['target']}"))
    if "unknown_token_rate" in metrics and "test" in metrics["unknown_token_rate"]:
        u = metrics["unknown_token_rate"]["test"]
        rows.append(("[UNK] rate (test)", f"source {u['source']:.2%}, target {u['target']:.2%}"))
    if "val_token_accuracy" in metrics:
        rows.append(
            (
                "best val token accuracy",
                f"{metrics['val_token_accuracy']:.4f} (epoch {metrics['best_epoch']})",
            )
        )
    if "test_bleu" in metrics:
        d = metrics["decoding"]
        rows.append(
            (
                "test BLEU / chrF",
                f"{metrics['test_bleu']:.2f} / {metrics['test_chrf']:.2f} on "
                f"{metrics['test_examples']} pairs (beam {d['beam_width']})",
            )
        )
        rows.append(("test exact match", f"{metrics['test_exact_match']:.4f}"))
    if "val_bleu" in metrics:
        rows.append(
            ("validation BLEU / chrF", f"{metrics['val_bleu']:.2f} / {metrics['val_chrf']:.2f}")
        )
    for s in metrics.get("samples", [])[:5]:
        rows.append(("sample", f"{s['source']}  ->  {s['translation']}  (ref: {s['reference']})"))
    return rows + training_rows(metrics)
