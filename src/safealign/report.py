"""The end of every run: a results table on stdout, report.md and a PNG chart of the headline metrics."""

from __future__ import annotations

from pathlib import Path

from safealign.io import atomic_write_text

HEADLINE = [("harmful_score", "HS ↓"), ("finetune_accuracy", "FA ↑")]


def results_table(results: dict) -> str:
    columns = []
    for metrics in results.values():
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and k not in columns:
                columns.append(k)
    header = "| model | " + " | ".join(columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for label, metrics in results.items():
        cells = [_fmt(metrics.get(c)) for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "–"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def timings_table(timings: dict) -> str:
    lines = ["| unit | wall (s) | peak memory (MB) | kind |", "|---|---|---|---|"]
    for name, m in timings.items():
        lines.append(f"| {name} | {m.get('wall_s', '–')} | {m.get('peak_mem_mb', '–')} | {m.get('peak_mem_kind', '')} |")
    return "\n".join(lines)


def write_chart(results: dict, path: Path) -> bool:
    metrics = [(k, name) for k, name in HEADLINE if any(k in m for m in results.values())]
    if not metrics or not results:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.6), squeeze=False)
    for ax, (key, title) in zip(axes[0], metrics):
        values = [results[label].get(key, 0.0) for label in labels]
        bars = ax.bar(labels, values, color=["#8c8c8c", "#d62728", "#2ca02c", "#1f77b4", "#9467bd"][: len(labels)])
        ax.bar_label(bars, fmt="%.1f")
        ax.set_title(title)
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(recipe, run_dir: Path, results: dict, timings: dict) -> None:
    table = results_table(results)
    print("\n" + table + "\n", flush=True)
    has_chart = write_chart(results, run_dir / "results.png")
    protocol = next((m["harmful_protocol"] for m in results.values() if "harmful_protocol" in m), None)
    parts = [f"# {recipe.name}", "", recipe.description, "", "## Results", "", table, ""]
    if has_chart:
        parts += ["![results](results.png)", ""]
    if protocol:
        parts += ["Harmful-score protocol: " + ", ".join(f"{k}={v}" for k, v in protocol.items()), ""]
    parts += ["## Stages", "", timings_table(timings), ""]
    for title, text in recipe.report.items():
        parts += [f"## {title}", "", text, ""]
    atomic_write_text(run_dir / "report.md", "\n".join(parts))
