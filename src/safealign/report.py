"""The end of every run: a results table on stdout, report.md and a PNG chart of the headline metrics."""

from __future__ import annotations

from pathlib import Path

from safealign.io import atomic_write_text

# matplotlib is imported inside the functions that use it: importing takes seconds that
# commands which never reach them (--dry-run, schema, config errors) should not wait for.

# Charted when present: (metric, title, on a 0-100 scale)
HEADLINE = [("harmful_score", "HS ↓", True), ("finetune_accuracy", "FA ↑", True), ("mean_reward", "mean reward ↑", False),
            ("mean_cost", "mean cost ↓", False), ("safe_rate", "safe rate ↑", True),
            ("attack_success", "ASR (refusal prefixes) ↓", True), ("guard_unsafe", "Llama-Guard unsafe ↓", True)]


def _numeric_keys(metrics: dict) -> tuple[str, ...]:
    return tuple(k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool))


def results_table(results: dict) -> str:
    """One markdown table per set of metrics: models evaluated alike share a table (policies in one, the
    reward and cost models each in theirs), so no table is mostly empty cells. A seed sweep's rows across
    seeds (sweep.across_seeds: they carry "seeds") come last, as mean ± sample standard deviation."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for label, metrics in results.items():
        if "seeds" not in metrics:
            groups.setdefault(_numeric_keys(metrics), []).append(label)
    tables = []
    for columns, labels in groups.items():
        lines = ["| model | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
        lines += [f"| {label} | " + " | ".join(_fmt(results[label][c]) for c in columns) + " |" for label in labels]
        tables.append("\n".join(lines))
    summary: dict[tuple[str, ...], list[str]] = {}
    for label, metrics in results.items():
        if "seeds" in metrics:
            summary.setdefault(tuple(k for k in _numeric_keys(metrics) if not k.endswith("_std")), []).append(label)
    for columns, labels in summary.items():
        seeds = ", ".join(str(s) for s in results[labels[0]]["seeds"])
        lines = [f"| model (mean ± std over seeds {seeds}) | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
        lines += [f"| {label} | " + " | ".join(f"{_fmt(results[label][c])} ± {_fmt(results[label][c + '_std'])}"
                                            for c in columns) + " |" for label in labels]
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def _fmt(v) -> str:
    if v is None:
        return "–"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def timings_table(timings: dict) -> str:
    lines = ["| unit | wall (s) | steps | s/step | peak memory (MB) | kind |", "|---|---|---|---|---|---|"]
    for name, m in timings.items():
        lines.append(f"| {name} | {m.get('wall_s', '–')} | {m.get('steps', '–')} | {m.get('step_s', '–')} | "
                     f"{m.get('peak_mem_mb', '–')} | {m.get('peak_mem_kind', '')} |")
    return "\n".join(lines)


def cost_table(timings: dict, baselines: dict[str, str]) -> str:
    """Each listed stage's seconds per step and peak memory relative to its baseline stage's (under a sweep,
    the baseline unit of the same value), as the defense papers report their extra cost."""
    lines = ["| stage | s/step | × baseline | peak MB | × baseline | baseline |", "|---|---|---|---|---|---|"]
    for unit, m in timings.items():
        stage, at, value = unit.partition("@")
        if stage not in baselines or "step_s" not in m:
            continue
        base_unit = f"{baselines[stage]}{at}{value}" if f"{baselines[stage]}{at}{value}" in timings else baselines[stage]
        base = timings.get(base_unit, {})
        ratio = lambda key: f"{m[key] / base[key]:.2f}" if base.get(key) else "–"  # noqa: E731
        lines.append(f"| {unit} | {m['step_s']} | {ratio('step_s')} | {m['peak_mem_mb']} | {ratio('peak_mem_mb')} | {base_unit} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def write_tradeoff_chart(results: dict, path: Path) -> bool:
    """HS against FA, one marker per model; under a sweep ('LABEL@VALUE') only the swept (attacked) models,
    one colour and marker per label, its points joined in sweep order and the value written beside each.
    The legend carries the numbers, since defenses that all reach HS 0 at FA 100 overlap."""
    points = [(label, r["finetune_accuracy"], r["harmful_score"]) for label, r in results.items()
              if "finetune_accuracy" in r and "harmful_score" in r and "seeds" not in r]
    if any("@" in label for label, _, _ in points):
        points = [p for p in points if "@" in p[0]]
    if len(points) < 3:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(label.partition("@")[0] for label, _, _ in points))
    cmap, markers = plt.get_cmap("tab20"), "osD^vPX*<>hp"
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    for i, name in enumerate(names):
        mine = [(label.partition("@")[2], fa, hs) for label, fa, hs in points if label.partition("@")[0] == name]
        numbers = "; ".join(f"{v + ': ' if v else ''}HS {hs:.1f}, FA {fa:.1f}" for v, fa, hs in mine)
        ax.plot([fa for _, fa, _ in mine], [hs for _, _, hs in mine], marker=markers[i % len(markers)], markersize=8,
                color=cmap(i % 20), alpha=0.85, linestyle="-" if len(mine) > 1 else "none", label=f"{name} ({numbers})")
        if len(mine) > 1:
            for v, fa, hs in mine:
                ax.annotate(v, (fa, hs), textcoords="offset points", xytext=(5, 3), fontsize=7)
    ax.set_xlabel("fine-tune accuracy (FA) ↑")
    ax.set_ylabel("harmful score (HS) ↓")
    ax.set_xlim(-3, 103)
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_chart(results: dict, path: Path) -> bool:
    """Bars of the headline metrics per model; under a seed sweep, the means across seeds with their standard
    deviation as error bars, instead of a bar per model and seed."""
    across = {label: r for label, r in results.items() if "seeds" in r}
    results = across or results
    metrics = [m for m in HEADLINE if any(m[0] in r for r in results.values())]
    if not metrics:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = ["#8c8c8c", "#d62728", "#2ca02c", "#1f77b4", "#9467bd", "#ff7f0e"]
    width = max(4.5, 0.55 * len(results))
    fig, axes = plt.subplots(1, len(metrics), figsize=(width * len(metrics), 3.8), squeeze=False)
    for ax, (key, title, percent) in zip(axes[0], metrics):
        labels = [label for label, r in results.items() if key in r]  # only the models this metric was measured on
        errors = [results[label].get(f"{key}_std", 0.0) for label in labels] if across else None
        bars = ax.bar(labels, [results[label][key] for label in labels], yerr=errors, capsize=4 if across else 0,
                      color=[colors[i % len(colors)] for i in range(len(labels))])
        if len(labels) > 4:
            ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        ax.bar_label(bars, fmt="%.1f" if percent else "%.2f")
        ax.set_title(title)
        if percent:
            ax.set_ylim(0, 112)  # room for the value labels above 100
        else:
            ax.axhline(0, color="black", linewidth=0.8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(recipe, run_dir: Path, results: dict, timings: dict) -> None:
    table = results_table(results)
    if table:  # a run with no eval stage (compute_difficulty_only) has no results table
        print("\n" + table + "\n", flush=True)
    has_chart = write_chart(results, run_dir / "results.png")
    has_tradeoff = write_tradeoff_chart(results, run_dir / "hs_fa.png")
    protocol = next((m["harmful_protocol"] for m in results.values() if "harmful_protocol" in m), None)
    formats = {k.removesuffix("_prompt"): v["format"] for m in results.values() for k, v in m.items()
               if k.endswith("_prompt") and isinstance(v, dict)}
    parts = [f"# {recipe.name}", "", recipe.description, "", "## Results", "", table, ""]
    if has_chart:
        parts += ["![results](results.png)", ""]
    if has_tradeoff:
        parts += ["![harmful score against fine-tune accuracy](hs_fa.png)", ""]
    if protocol:
        parts += ["Harmful-prompt protocol: " + ", ".join(f"{k}={v}" for k, v in protocol.items()), ""]
    if formats:
        parts += ["Prompt formats: " + ", ".join(f"{k}={v}" for k, v in formats.items()), ""]
    costs = cost_table(timings, recipe.cost_baselines)
    if costs:
        print(costs + "\n", flush=True)
        parts += ["## Cost of each method", "", costs, ""]
    parts += ["## Stages", "", timings_table(timings), ""]
    for title, text in recipe.report.items():
        parts += [f"## {title}", "", text, ""]
    atomic_write_text(run_dir / "report.md", "\n".join(parts))
