"""Quick-profile wall time of every notebook, through the repository's ``run_notebooks.py``.

Runs ``python run_notebooks.py --profile quick`` once -- the README's main command, with its
default ``--jobs`` (two notebooks at a time on a 2-core CPU without a GPU) unless ``--jobs``
is given here -- shows its output as it goes, and reads from the table it prints each
notebook's wall time and the whole run's wall-clock time. With ``MTLKIT_WORK_LOG`` set (one
file per notebook) it also records what each notebook did (:mod:`mtlkit.work`): training and
evaluation GFLOP from the kit's own FLOP counts, images, traced step functions, checkpoints
written. GFLOP/s beside the wall time let a time measured on one CPU be read for another (for
notebooks run side by side, each notebook's GFLOP/s is over its own wall time, shared CPU and
all). The JSON also records the CPU model, its vector extensions and whether TensorFlow ran
its oneDNN kernels.

The notebooks keep finished training runs under ``MTLKIT_RUNS_DIR`` and reuse them when run
again; so that the times are those of a first run, this points ``MTLKIT_RUNS_DIR`` at a fresh
temporary folder (deleted afterwards) unless ``--keep-runs`` is given. If a notebook fails,
its time is not a benchmark: the failures are listed and no JSON is written.

    python benchmarks/bench_notebooks.py --json benchmarks/results/notebooks.json
    python benchmarks/bench_notebooks.py --jobs 1 --only 03 04   # one at a time
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
# its last row: "  total   221.0 s  (wall clock; ...)"
TOTAL = re.compile(r"^\s+total\s+([0-9.]+) s")


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
    p.add_argument("--jobs", type=int, help="notebooks at a time (default: run_notebooks.py's)")
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


def run_all(names: list[str], env: dict, jobs: int | None) -> dict:
    """Run the notebooks in one run_notebooks.py call, echoing its output; return each one's
    wall time and failure (from the table run_notebooks.py prints) and the whole wall time."""
    command = [sys.executable, str(ROOT / "run_notebooks.py"), "--profile", "quick",
               "--only", *(name[:2] for name in names)]  # fmt: skip
    command += ["--jobs", str(jobs)] if jobs else []
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    times, failures, wall, in_table = {}, {}, None, False
    for line in proc.stdout:
        print(line, end="", flush=True)
        if line.startswith("Wall time per notebook"):
            in_table = True
        elif in_table and (m := ROW.match(line)):
            times[m.group(1)] = float(m.group(2))
            if m.group(3) and m.group(3) != "ok":
                failures[m.group(1)] = m.group(3)
        elif in_table and (m := TOTAL.match(line)):
            wall = float(m.group(1))
    rc = proc.wait()
    if rc and not failures:
        failures["run_notebooks.py"] = f"exit status {rc}"
    shown = ["run_notebooks.py", *command[2:]]  # (the path as the README writes it)
    return {"times": times, "failures": failures, "wall": wall, "command": shown}


def run(args: argparse.Namespace, env: dict, expected: list[str]) -> int:
    """Run the notebooks as one quick run (one runs folder: later notebooks read earlier runs
    back), counting each one's work (:mod:`mtlkit.work`); write the JSON if all ran."""
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    with tempfile.TemporaryDirectory(prefix="mtlkit-work-") as logs:
        log = str(Path(logs) / "{notebook}.json")  # one file per notebook (mtlkit.work)
        result = run_all(expected, {**env, "MTLKIT_WORK_LOG": log}, args.jobs)
        work = {}
        for name in expected:
            path = Path(logs) / f"{Path(name).stem}.json"
            work[name] = json.loads(path.read_text()) if path.exists() else {}
    times, failures = result["times"], result["failures"]
    missing = [name for name in expected if name not in times]
    if failures or missing or result["wall"] is None:
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
    busy, gflop = sum(times.values()), sum(r["gflop"] for r in rows.values())
    print(f"{'whole run, wall clock':34s} {result['wall']:7.1f} {gflop:8.0f}   "
          f"({busy:.1f} s of notebook time)")  # fmt: skip
    if args.json:
        payload = {
            "benchmark": "notebooks",
            "machine": info,
            "keras_backend": env.get("KERAS_BACKEND", "tensorflow"),
            "started": started,
            "command": "python " + " ".join(result["command"]),
            "times": times,
            "total_s": result["wall"],
            "notebook_seconds": busy,
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
