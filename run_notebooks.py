"""Execute every notebook with papermill and report how long each took.

    python run_notebooks.py                      # quick profile, every notebook
    python run_notebooks.py --profile standard   # real data, one Colab-GPU sitting each
    python run_notebooks.py --profile full       # the reports' protocols (hours; a GPU)
    python run_notebooks.py --only 02 03         # some notebooks

Executed copies go to ``notebooks/executed/`` (not committed); figures to ``figures/``.
Each notebook runs in its own kernel with ``PROFILE`` set as a papermill parameter. A
notebook that fails does not stop the others: the table at the end lists each failure
(notebook, cell, error), and the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import papermill

from mtlkit.config import PROFILES

ROOT = Path(__file__).resolve().parent
NOTEBOOKS = ROOT / "notebooks"

KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]
"""Each kernel logs errors only: ipykernel 7 warns on every start that its local TCP sockets
are not encrypted, a line per notebook with nothing for the reader to do."""

PATH_VARIABLES = (
    "MTLKIT_DATA_DIR",
    "MTLKIT_CELEBA_DIR",
    "MTLKIT_CIFAR100_DIR",
    "MTLKIT_RUNS_DIR",
    "MTLKIT_FIGURES_DIR",
    "MTLKIT_RESNET18_PRESET",
)


def matches(notebook: Path, item: str) -> bool:
    """Whether an ``--only`` item names ``notebook``: its number ("02" or "2") or its name,
    whole or cut short after the number ("02_cifar100_comparison.ipynb", "02_cifar")."""
    item = item.removesuffix(".ipynb")
    if item.isdecimal():
        return int(item) == int(notebook.stem[:2])
    return len(item) > 2 and notebook.stem.startswith(item)


def select(only: list[str] | None) -> list[Path]:
    """The numbered notebooks, or those that an item of ``only`` names (see :func:`matches`)."""
    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only is not None:
        notebooks = [nb for nb in notebooks if any(matches(nb, o) for o in only)]
    return notebooks


def check_only(only: list[str] | None) -> str:
    """Why ``--only`` cannot be run ('' when it can): given without a value, or with an
    item that names no notebook. The message lists the notebooks to choose from."""
    if only is None:
        return ""
    notebooks = select(None)
    available = ", ".join(f"{nb.stem[:2]} ({nb.stem})" for nb in notebooks)
    if not only:
        return f"--only needs one or more notebook numbers; the notebooks are {available}"
    unknown = [o for o in only if not any(matches(nb, o) for nb in notebooks)]
    if unknown:
        return f"--only {' '.join(unknown)} names no notebook; give numbers or names of {available}"
    return ""


def run_one(notebook: Path, output_dir: Path, profile: str) -> str | None:
    """Execute one notebook; return None, or a one-line description of its failure."""
    try:
        papermill.execute_notebook(
            str(notebook),
            str(output_dir / notebook.name),
            parameters={"PROFILE": profile},
            cwd=str(NOTEBOOKS),
            progress_bar=False,
            kernel_name="python3",
            extra_arguments=KERNEL_ARGUMENTS,
        )
    except papermill.PapermillExecutionError as err:
        return f"cell {err.exec_count}: {err.ename}: {err.evalue}".splitlines()[0][:200]
    except Exception as err:  # the kernel died, or the notebook could not be read
        return f"{type(err).__name__}: {err}".splitlines()[0][:200]
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=PROFILES, default="quick")
    parser.add_argument(
        "--only", nargs="*", default=None, help="notebook numbers (02 or 2) or names"
    )
    parser.add_argument("--output-dir", type=Path, default=NOTEBOOKS / "executed")
    args = parser.parse_args(argv)

    problem = check_only(args.only)
    if problem:
        parser.error(problem)
    notebooks = select(args.only)
    if not notebooks:
        parser.error(f"there are no numbered notebooks in {NOTEBOOKS}")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    os.environ["MTLKIT_PROFILE"] = args.profile
    # the kernels run in notebooks/: make folders given relative to here mean the same there
    for name in PATH_VARIABLES:
        value = os.environ.get(name)
        if value and (name != "MTLKIT_RESNET18_PRESET" or Path(value).exists()):
            os.environ[name] = str(Path(value).expanduser().resolve())

    results = {}
    for nb in notebooks:
        print(f"--- {nb.name} ({args.profile} profile)", flush=True)
        start = time.perf_counter()
        failure = run_one(nb, args.output_dir, args.profile)
        results[nb.name] = (time.perf_counter() - start, failure)
        print(f"    {results[nb.name][0]:6.1f} s  {'FAILED: ' + failure if failure else 'ok'}")
    return report(results, args.profile, args.output_dir)


def report(results: dict[str, tuple[float, str | None]], profile: str, output_dir: Path) -> int:
    """Print the table of wall times and failures; return the exit status."""
    print(f"\nWall time per notebook ({profile} profile):")
    for name, (seconds, failure) in results.items():
        print(f"  {name:36s} {seconds:7.1f} s  {'FAILED ' + failure if failure else 'ok'}")
    print(f"  {'total':36s} {sum(s for s, _ in results.values()):7.1f} s")
    failed = [name for name, (_, failure) in results.items() if failure]
    if failed:
        print(f"\n{len(failed)} notebook(s) failed: {', '.join(failed)}. The executed copies "
              f"in {output_dir} show each traceback.")  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
