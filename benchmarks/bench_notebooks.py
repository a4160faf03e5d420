"""Quick-profile wall time of every notebook, through the repository's ``run_notebooks.py``.

Runs ``python run_notebooks.py --profile quick`` (papermill, one kernel per notebook,
executed copies in ``notebooks/executed/``) on whichever numbered notebooks
``notebooks/NN_*.ipynb`` exist (01 to 07, or those named by ``--only``), shows its output
as it goes, reads the "Wall time per notebook" table it prints at the end, and writes it
as JSON together with the data the notebooks read (local copies or synthetic stand-ins).

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


def run(args: argparse.Namespace, env: dict, expected: list[str]) -> int:
    """Run run_notebooks.py, echo its output, parse its table; write the JSON if all ran."""
    command = [sys.executable, str(ROOT / "run_notebooks.py"), "--profile", "quick"]
    if args.only is not None:
        command += ["--only", *args.only]
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    times, failures, in_table = {}, {}, False
    for line in proc.stdout:
        print(line, end="", flush=True)
        if line.startswith("Wall time per notebook"):
            in_table = True
        elif in_table and (m := ROW.match(line)):
            times[m.group(1)] = float(m.group(2))
            if m.group(3) and m.group(3) != "ok":
                failures[m.group(1)] = m.group(3)
    rc = proc.wait()
    missing = [name for name in expected if name not in times]
    if rc != 0 or failures or missing or not times:
        print(f"run_notebooks.py exited with {rc}; no complete table to record.")
        for name, failure in failures.items():
            print(f"  {name}: {failure}")
        if missing:
            print(f"  not in the table: {', '.join(missing)}")
        return rc or 1
    if args.json:
        from bench_training import machine  # (same folder)

        payload = {
            "benchmark": "notebooks",
            "machine": machine(),
            "started": started,
            "command": "python run_notebooks.py --profile quick"
            + (f" --only {' '.join(args.only)}" if args.only else ""),
            "times": times,
            "total_s": sum(times.values()),
            "fresh_runs_dir": not args.keep_runs,
            "data": data_used(),
        }
        Path(args.json).write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
