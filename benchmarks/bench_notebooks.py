"""Quick-profile wall time of every notebook, through the repository's ``run_notebooks.py``.

Runs ``python run_notebooks.py --profile quick --only NN`` (papermill, one kernel per
notebook, executed copies in ``notebooks/executed/``) for each numbered notebook in turn
(01 to 07, or those named by ``--only``), shows its output as it goes, reads the wall time
from the table it prints, and -- with ``MTLKIT_WORK_LOG`` set for that notebook's kernel --
what the notebook did (:mod:`mtlkit.work`): training and evaluation GFLOP from the kit's own
FLOP counts, images, traced step functions, checkpoints written. GFLOP/s beside the wall
time let a time measured on one CPU be read for another. The JSON also records the CPU
model, its vector extensions and whether TensorFlow ran its oneDNN kernels.

The notebooks keep finished training runs under ``MTLKIT_RUNS_DIR`` and reuse them when run
again; so that the times are those of a first run, this points ``MTLKIT_RUNS_DIR`` at a fresh
temporary folder (deleted afterwards) unless ``--keep-runs`` is given. If a notebook fails,
its time is not a benchmark: the failures are listed and no JSON is written.

    python benchmarks/bench_notebooks.py --json benchmarks/results/notebooks.json
    python benchmarks/bench_notebooks.py --only 03 04
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import run_notebooks  # noqa: E402  (the one rule for which notebooks --only names)

# a row of run_notebooks.py's final table: "  NN_name.ipynb   12.3 s  ok" (or "FAILED ...")
ROW = re.compile(r"^\s+(\S+\.ipynb)\s+([0-9.]+) s(?:\s+(ok|FAILED.*))?\s*$")


def numbered_notebooks(only: list[str] | None) -> list[str]:
    """The numbered notebooks run_notebooks.py runs: all, or those named in ``only`` (its
    own selection rule, :func:`run_notebooks.select`)."""
    return [nb.name for nb in run_notebooks.select(only)]


def data_used() -> str:
    """Which data the notebooks read in the quick profile: the local copies named in the
    environment, or the embedded synthetic stand-ins (and the ResNet-18 preset, if named)."""
    cifar = os.environ.get("MTLKIT_CIFAR100_DIR")
    celeba = os.environ.get("MTLKIT_CELEBA_DIR")
    preset = os.environ.get("MTLKIT_RESNET18_PRESET")
    text = (
        f"CIFAR-100: {'local copy ' + cifar if cifar else 'synthetic stand-in'}; "
        f"CelebA: {'local copy ' + celeba if celeba else 'synthetic stand-in'}"
    )
    return text + (f"; ResNet-18 preset: {preset}" if preset else "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", help="notebook numbers or names (default: all)")
    p.add_argument("--json", metavar="OUT", help="write the times to this JSON file")
    p.add_argument(
        "--keep-runs",
        action="store_true",
        help="use the usual MTLKIT_RUNS_DIR (stored runs are reused: not a cold run)",
    )
    args = p.parse_args(argv)
    problem = run_notebooks.check_only(args.only)
    if problem:
        p.error(problem)
    expected = numbered_notebooks(args.only)
    print(f"timing {len(expected)} notebooks: {', '.join(expected)}", flush=True)
    if args.keep_runs:
        return run(args, dict(os.environ), expected)
    with tempfile.TemporaryDirectory(prefix="mtlkit-runs-") as runs:
        return run(args, {**os.environ, "MTLKIT_RUNS_DIR": runs}, expected)


def run_one(name: str, env: dict) -> tuple[float | None, str | None]:
    """Run one notebook through run_notebooks.py, echoing its output; return its wall time
    (from the table run_notebooks.py prints) and its failure, if any."""
    command = [sys.executable, str(ROOT / "run_notebooks.py"), "--profile", "quick",
               "--only", name[:2]]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seconds, failure, in_table = None, None, False
    for line in proc.stdout:
        print(line, end="", flush=True)
        if line.startswith("Wall time per notebook"):
            in_table = True
        elif in_table and (m := ROW.match(line)) and m.group(1) == name:
            seconds = float(m.group(2))
            failure = m.group(3) if m.group(3) and m.group(3) != "ok" else None
    rc = proc.wait()
    return seconds, failure or (f"exit status {rc}" if rc else None)


def run(args: argparse.Namespace, env: dict, expected: list[str]) -> int:
    """Run each notebook in turn (one runs folder: later notebooks read earlier runs back, as
    in a whole quick run), counting its work (:mod:`mtlkit.work`); write the JSON if all ran."""
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    times, failures, work = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="mtlkit-work-") as logs:
        for name in expected:
            log = Path(logs) / f"{name}.json"
            seconds, failure = run_one(name, {**env, "MTLKIT_WORK_LOG": str(log)})
            if seconds is not None:
                times[name] = seconds
            if failure:
                failures[name] = failure
            work[name] = json.loads(log.read_text()) if log.exists() else {}
    missing = [name for name in expected if name not in times]
    if failures or missing:
        print("Some notebooks failed; no complete table to record.")
        for name, failure in failures.items():
            print(f"  {name}: {failure}")
        return 1
    from bench_training import machine  # (same folder)

    info = machine()
    rows = {name: summarise(times[name], work[name]) for name in expected}
    print(f"\nQuick profile, {info['cpu']} ({', '.join(info['vector_extensions'])}), "
          f"{info['cores']} cores; oneDNN {info['onednn']}; "
          f"Keras backend {env.get('KERAS_BACKEND', 'tensorflow')}")  # fmt: skip
    print(f"{'notebook':34s} {'wall s':>7s} {'GFLOP':>8s} {'GFLOP/s':>8s} {'traces':>6s} "
          f"{'ckpts':>5s}")  # fmt: skip
    for name, row in rows.items():
        print(f"{name:34s} {row['wall_s']:7.1f} {row['gflop']:8.0f} {row['gflop_per_s']:8.1f} "
              f"{row['traces']:6.0f} {row['checkpoints']:5.0f}")  # fmt: skip
    total = sum(times.values())
    print(f"{'total':34s} {total:7.1f} {sum(r['gflop'] for r in rows.values()):8.0f}")
    if args.json:
        payload = {
            "benchmark": "notebooks",
            "machine": info,
            "keras_backend": env.get("KERAS_BACKEND", "tensorflow"),
            "started": started,
            "command": "python run_notebooks.py --profile quick --only NN (one notebook at a time)",
            "times": times,
            "total_s": total,
            "work": rows,
            "fresh_runs_dir": not args.keep_runs,
            "data": data_used(),
        }
        Path(args.json).write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.json}")
    return 0


def summarise(seconds: float, counted: dict) -> dict:
    """One notebook's row: its wall time, the work :mod:`mtlkit.work` counted, GFLOP/s."""
    gflop = counted.get("train_gflop", 0) + counted.get("eval_gflop", 0)
    return {
        "wall_s": seconds,
        "gflop": gflop,
        "gflop_per_s": gflop / seconds,
        "train_images": counted.get("train_images", 0),
        "eval_images": counted.get("eval_images", 0),
        "uncounted_images": counted.get("uncounted_images", 0),
        "traces": counted.get("traces", 0),
        "checkpoints": counted.get("checkpoints", 0),
    }


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
