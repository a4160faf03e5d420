"""Draw the benchmark figures from the JSON files the benchmark scripts write.

    python benchmarks/make_figures.py                       # benchmarks/results/*.json
    python benchmarks/make_figures.py --results DIR --out benchmarks/figures
    python benchmarks/make_figures.py --markdown            # also print the README's tables

Writes ``training_throughput.png`` (images/s per architecture and loop, with the ratio to
``fit`` above each bar; the 95 % goal marked), ``celeba_pipeline.png`` (first-epoch
images/s of each pipeline against the bare-decode ceiling, 80 % goal marked) and
``notebooks.png`` (quick-profile wall time per notebook) for whichever JSON files exist.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent


def subtitle(payload: dict) -> str:
    m = payload["machine"]
    gpus = ", ".join(m.get("gpus") or []) or "no GPU"
    return f"{m['cpu']}, {m['cores']} cores, {gpus}, TF {m['tensorflow']}, {m['date']}"


def finish(fig, out: Path, payload: dict, title: str) -> None:
    fig.suptitle(f"{title}\n{subtitle(payload)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def training_figure(payload: dict, out: Path) -> None:
    results = payload["results"]
    modes = ("fit", "train", "train+DST")
    colours = ("#4c72b0", "#dd8452", "#55a868")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.26
    for panel, (ax, key, label) in enumerate(
        zip(
            axes,
            ("images_per_s_median", "cpu_ms_per_image_median"),
            ("images / s (wall clock, median)", "CPU ms per image (all threads, median)"),
        )
    ):
        for i, (mode, colour) in enumerate(zip(modes, colours)):
            xs = [j + (i - 1) * width for j in range(len(results))]
            ys = [r["modes"][mode][key] for r in results]
            every = [r["modes"][mode][key.replace("_median", "_all")] for r in results]
            spread = [
                [y - min(a) for y, a in zip(ys, every)],
                [max(a) - y for y, a in zip(ys, every)],
            ]
            bars = ax.bar(
                xs,
                ys,
                width,
                label=mode,
                color=colour,
                yerr=spread,
                capsize=2,
                error_kw={"lw": 0.8},
            )
            if mode != "fit":
                ratio_key = "ratio_to_fit_median" if panel == 0 else "cpu_ratio_to_fit_median"
                for bar, r in zip(bars, results):
                    ax.annotate(
                        f"{r['modes'][mode][ratio_key]:.2f}",
                        (bar.get_x() + width / 2, bar.get_height()),
                        ha="center",
                        va="bottom",
                        fontsize=8,
                    )
        ax.set_xticks(range(len(results)))
        ax.set_xticklabels([r["architecture"] for r in results], rotation=15)
        ax.set_ylabel(label)
    axes[0].set_title(
        "Throughput; bars: median, whiskers: min-max over repeats\n"
        "numbers: median of per-repeat ratios to fit (goal >= 0.95)",
        fontsize=9,
    )
    axes[1].set_title(
        "CPU cost per image; whiskers: min-max\n"
        "numbers: median of per-repeat fit CPU / loop CPU (goal >= 0.95)",
        fontsize=9,
    )
    axes[0].legend(fontsize=8)
    s = payload["settings"]
    finish(
        fig,
        out,
        payload,
        f"Training step: fit vs mtlkit.training.train on the synthetic CIFAR-100 "
        f"stand-in (batch {s['batch_size']}, {s['steps']} steps x {s['timed_epochs']} "
        f"timed epochs, {s['repeats']} repeats)",
    )


def pipeline_figure(payload: dict, out: Path) -> None:
    results = payload["results"]
    names = list(results)
    colours = [
        "#4c72b0" if n == "ceiling" else "#999999" if n.startswith("previous") else "#dd8452"
        for n in names
    ]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
    panels = (
        (
            "first_epoch_images_per_s_median",
            "ratio_to_ceiling_median",
            "first epoch, images / s (wall clock, median)",
        ),
        (
            "first_epoch_cpu_ms_per_image_median",
            "cpu_ratio_to_ceiling_median",
            "CPU ms per image (all threads, median)",
        ),
    )
    for ax, (key, ratio_key, label) in zip(axes, panels):
        ys = [results[n][key] for n in names]
        bars = ax.barh(range(len(names)), ys, color=colours)
        for bar, n in zip(bars, names):
            ax.annotate(
                f" {100 * results[n][ratio_key]:.0f} %",
                (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                va="center",
                fontsize=8,
            )
        ax.set_xlabel(label)
        ax.set_xlim(0, 1.45 * max(ys))  # room for the labels and the legend
    ceiling = results["ceiling"]
    axes[0].axvline(
        0.8 * ceiling["first_epoch_images_per_s_median"],
        color="k",
        ls="--",
        lw=1,
        label="80 % of the ceiling (goal)",
    )
    axes[1].axvline(
        ceiling["first_epoch_cpu_ms_per_image_median"] / 0.8,
        color="k",
        ls="--",
        lw=1,
        label="ceiling CPU / 0.8 (goal: left of it)",
    )
    axes[0].legend(fontsize=8, loc="lower right")
    axes[1].legend(fontsize=8, loc="lower right")
    axes[0].set_yticks(range(len(names)))
    axes[0].set_yticklabels(names, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].set_title("wall clock; % = rate / ceiling's rate (same repeat)", fontsize=9)
    axes[1].set_title("CPU cost; % = ceiling's CPU / this CPU (robust to other load)", fontsize=9)
    s = payload["settings"]
    finish(
        fig,
        out,
        payload,
        f"CelebA pipeline vs bare JPEG decode: {s['images']} images of "
        f"celeba_mini ({s['split']}), batch {s['batch_size']}; "
        "orange: the kit, grey: its previous loader",
    )


def notebooks_figure(payload: dict, out: Path) -> None:
    times = payload["times"]
    fig, ax = plt.subplots(figsize=(8, 3))
    names = list(times)
    ax.barh(range(len(names)), [times[n] for n in names], color="#4c72b0")
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    total = sum(times.values())
    ax.set_xlabel(f"seconds (total {total:.0f} s; goal for all seven notebooks: <= 720 s)")
    finish(fig, out, payload, f"Quick-profile wall time per notebook\n{payload.get('data', '')}")


def _table(payload: dict, columns: list[str]) -> list[str]:
    """A table's caption (the command that measured it, and when) and its header rows."""
    return [
        f"`{payload['command']}` ({payload['machine']['date']})",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]


def _training_rows(payload: dict) -> list[str]:
    rows = _table(
        payload,
        [
            "architecture",
            "fit img/s",
            "train img/s",
            "train+DST img/s",
            "train / fit",
            "DST / fit",
            "CPU ms/img fit / train / DST",
            "train / fit (CPU)",
            "DST / fit (CPU)",
            "compile s fit / train / DST",
            "measuring pass s (first call)",
        ],
    )
    for r in payload["results"]:
        m, mp = r["modes"], r["measuring_pass"]
        fit, plain, gated = m["fit"], m["train"], m["train+DST"]
        modes = (fit, plain, gated)
        cpu_ms = " / ".join(format(x["cpu_ms_per_image_median"], ".3g") for x in modes)
        compile_s = " / ".join(format(x["compile_s_first_call"], ".1f") for x in modes)
        rows.append(
            f"| {r['architecture']} | {fit['images_per_s_median']:.1f} "
            f"| {plain['images_per_s_median']:.1f} | {gated['images_per_s_median']:.1f} "
            f"| {plain['ratio_to_fit_median']:.2f} | {gated['ratio_to_fit_median']:.2f} "
            f"| {cpu_ms} "
            f"| {plain['cpu_ratio_to_fit_median']:.3f} | {gated['cpu_ratio_to_fit_median']:.3f} "
            f"| {compile_s} "
            f"| {mp['total_s_median']:.2f} ({mp['first_call_s_median']:.2f}) |"
        )
    return rows


def _pipeline_rows(payload: dict) -> list[str]:
    rows = _table(
        payload,
        [
            "pipeline",
            "first epoch img/s",
            "% of ceiling (wall)",
            "CPU ms/img",
            "% of ceiling (CPU)",
            "cached epochs img/s",
            "max abs pixel diff to the previous loader (0..255)",
        ],
    )
    for name, r in payload["results"].items():
        cached = r.get("cached_epoch_images_per_s_median")
        diff = r.get("max_abs_difference_to_previous")
        cached_text = f"{cached:.0f}" if cached is not None else ""
        diff_text = f"{diff:.1f}" if diff is not None else ""
        rows.append(
            f"| {name} | {r['first_epoch_images_per_s_median']:.0f} "
            f"| {100 * r['ratio_to_ceiling_median']:.0f} % "
            f"| {r['first_epoch_cpu_ms_per_image_median']:.3f} "
            f"| {100 * r['cpu_ratio_to_ceiling_median']:.0f} % "
            f"| {cached_text} | {diff_text} |"
        )
    return rows


def _options_rows(payload: dict) -> list[str]:
    rows = _table(
        payload,
        [
            "configuration",
            "img/s",
            "speed vs float32",
            "first epoch extra s",
            "final train loss",
            "final val loss",
            "max abs train-loss diff to float32",
            "max abs weight diff to float32",
        ],
    )
    for r in payload["results"]:
        speed = r.get("speed_ratio_to_float32", 1)
        loss_diff = r.get("max_abs_loss_diff_to_float32", 0)
        weight_diff = r.get("max_abs_weight_diff_to_float32", 0)
        rows.append(
            f"| {r['config']} | {r['images_per_s']:.1f} | {speed:.2f} "
            f"| {r['first_epoch_extra_s']:.1f} | {r['final_loss']:.4f} | {r['final_val_loss']:.4f} "
            f"| {loss_diff:.3g} | {weight_diff:.3g} |"
        )
    return rows


def _notebook_rows(payload: dict) -> list[str]:
    rows = [
        f"`{payload['command']}` ({payload['started']}; fresh runs folder: "
        f"{payload.get('fresh_runs_dir', False)}; data: {payload.get('data', 'not recorded')})",
        "",
        "| notebook | wall time (s) |",
        "|---|---|",
    ]
    rows += [f"| {name} | {t:.1f} |" for name, t in payload["times"].items()]
    return rows + [f"| **total** | **{payload['total_s']:.1f}** |"]


def markdown_tables(results_dir: Path) -> str:
    """The README's tables, from the same JSON files (so no figure is copied by hand)."""
    out = []
    for stem, rows in (
        ("training", _training_rows),
        ("training_overhead", _training_rows),
        ("celeba_pipeline", _pipeline_rows),
        ("options", _options_rows),
        ("options_mixed_cpu", _options_rows),
        ("notebooks", _notebook_rows),
    ):
        path = results_dir / f"{stem}.json"
        if path.exists():
            out += rows(json.loads(path.read_text())) + [""]
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--out", type=Path, default=HERE / "figures")
    p.add_argument("--markdown", action="store_true", help="also print the README's tables")
    args = p.parse_args(argv)
    if args.markdown:
        print(markdown_tables(args.results))
    args.out.mkdir(parents=True, exist_ok=True)
    drawn = 0
    for stem, draw, png in (
        ("training", training_figure, "training_throughput.png"),
        ("celeba_pipeline", pipeline_figure, "celeba_pipeline.png"),
        ("notebooks", notebooks_figure, "notebooks.png"),
    ):
        path = args.results / f"{stem}.json"
        if path.exists():
            draw(json.loads(path.read_text()), args.out / png)
            print(f"wrote {args.out / png}")
            drawn += 1
    if not drawn:
        print(f"no results in {args.results}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
