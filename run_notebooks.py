"""Execute every notebook with papermill and report how long each took.

    python run_notebooks.py                    # quick profile, all notebooks
    python run_notebooks.py --profile full     # the real protocols (hours; use a GPU)
    python run_notebooks.py --only 02 03       # some notebooks

Executed copies go to ``notebooks/executed/`` (not committed); figures to ``figures/``.
Each notebook runs in its own kernel with ``PROFILE`` set as a papermill parameter.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import papermill

ROOT = Path(__file__).resolve().parent
NOTEBOOKS = ROOT / "notebooks"


PATH_VARIABLES = ("MTLKIT_DATA_DIR", "MTLKIT_CELEBA_DIR", "MTLKIT_CIFAR100_DIR", "MTLKIT_RUNS_DIR",
                  "MTLKIT_FIGURES_DIR")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=("quick", "full"), default="quick")
    parser.add_argument("--only", nargs="*", default=None, help="notebook numbers or names to run")
    parser.add_argument("--output-dir", type=Path, default=NOTEBOOKS / "executed")
    args = parser.parse_args(argv)

    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        notebooks = [nb for nb in notebooks if any(nb.name.startswith(o) or nb.stem == o for o in args.only)]
        if not notebooks:
            parser.error(f"no notebook matches {args.only}; available: {[n.name for n in NOTEBOOKS.glob('*.ipynb')]}")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    os.environ["MTLKIT_PROFILE"] = args.profile
    # the kernels run in notebooks/: make folders given relative to here mean the same there
    for name in PATH_VARIABLES:
        if os.environ.get(name):
            os.environ[name] = str(Path(os.environ[name]).expanduser().resolve())

    times = {}
    for nb in notebooks:
        print(f"--- {nb.name} ({args.profile} profile)", flush=True)
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(nb), str(args.output_dir / nb.name), parameters={"PROFILE": args.profile},
                cwd=str(NOTEBOOKS), progress_bar=False, kernel_name="python3",
            )
        except papermill.PapermillExecutionError as err:
            print(f"FAILED: {nb.name} at cell {err.exec_count}: {err.ename}: {err.evalue}\n"
                  f"The executed copy with the traceback is {args.output_dir / nb.name}.")
            return 1
        times[nb.name] = time.perf_counter() - start
        print(f"    {times[nb.name]:6.1f} s", flush=True)
    print(f"\nWall time per notebook ({args.profile} profile):")
    for name, seconds in times.items():
        print(f"  {name:40s} {seconds:7.1f} s")
    print(f"  {'total':40s} {sum(times.values()):7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
