"""Quick-profile wall time of every notebook, through the repository's ``run_notebooks.py``.

Runs ``python run_notebooks.py --profile quick`` (papermill, one kernel per notebook,
executed copies in ``notebooks/executed/``), shows its output as it goes, reads the
"Wall time per notebook" table it prints at the end, and writes it as JSON.

The notebooks keep finished training runs under ``MTLKIT_RUNS_DIR`` and reuse them when run
again; so that the times are those of a first run, this points ``MTLKIT_RUNS_DIR`` at a fresh
temporary folder (deleted afterwards) unless ``--keep-runs`` is given.

    python benchmarks/bench_notebooks.py --json benchmarks/results/notebooks.json
    python benchmarks/bench_notebooks.py --only 03 04
"""

from __future__ import annotations

import argparse
import json
import re
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\s+(\S+\.ipynb)\s+([0-9.]+) s\s*$")


def data_used() -> str:
    """Which data the notebooks read: the local copies named in the environment, or the
    synthetic stand-ins (the notebooks' quick-profile default)."""
    cifar = os.environ.get("MTLKIT_CIFAR100_DIR")
    celeba = os.environ.get("MTLKIT_CELEBA_DIR")
    return (f"CIFAR-100: {'local copy ' + cifar if cifar else 'synthetic stand-in'}; "
            f"CelebA: {'local copy ' + celeba if celeba else 'synthetic stand-in'}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", help="notebook numbers or names (default: all)")
    p.add_argument("--json", metavar="OUT", help="write the times to this JSON file")
    p.add_argument("--keep-runs", action="store_true",
                   help="use the usual MTLKIT_RUNS_DIR (stored runs are reused: not a cold run)")
    args = p.parse_args(argv)
    if args.keep_runs:
        return run(args, dict(os.environ))
    with tempfile.TemporaryDirectory(prefix="mtlkit-runs-") as runs:
        return run(args, {**os.environ, "MTLKIT_RUNS_DIR": runs})


def run(args: argparse.Namespace, env: dict) -> int:
    command = [sys.executable, str(ROOT / "run_notebooks.py"), "--profile", "quick"]
    if args.only:
        command += ["--only", *args.only]
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    times, in_table = {}, False
    for line in proc.stdout:
        print(line, end="", flush=True)
        if line.startswith("Wall time per notebook"):
            in_table = True
        elif in_table and (m := ROW.match(line)):
            times[m.group(1)] = float(m.group(2))
    rc = proc.wait()
    if rc != 0 or not times:
        print(f"run_notebooks.py exited with {rc}; no complete table to record.")
        return rc or 1
    if args.json:
        from bench_training import machine  # noqa: E402  (same folder)

        payload = {"benchmark": "notebooks", "machine": machine(), "started": started,
                   "command": "python run_notebooks.py --profile quick"
                              + (f" --only {' '.join(args.only)}" if args.only else ""),
                   "times": times, "total_s": sum(times.values()),
                   "fresh_runs_dir": not args.keep_runs,
                   "data": data_used()}
        Path(args.json).write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
