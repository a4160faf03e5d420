"""Execute every notebook with papermill and report how long each took.

    python run_notebooks.py                      # quick profile, every notebook
    python run_notebooks.py --profile standard   # real data, one Colab-GPU sitting each
    python run_notebooks.py --profile full       # the reports' protocols (hours; a GPU)
    python run_notebooks.py --only 02 03         # some notebooks
    python run_notebooks.py --jobs 1             # one notebook at a time
    python run_notebooks.py --only 02 --profile full --devices 0 1 2 3   # a sweep over 4 GPUs

Executed copies go to ``notebooks/executed/`` (not committed); figures to ``figures/``.
Each notebook runs in its own papermill process and kernel with ``PROFILE`` set as a
papermill parameter. A notebook that fails does not stop the others: the table at the end
lists each failure (notebook, cell, error), and the exit status is 1 if any failed.

``--jobs N`` runs N notebooks at a time. The default is 2 for the quick profile on a machine
without a GPU or TPU (much of a quick notebook's time is single-threaded Python -- starting
the kernel, importing TensorFlow, tracing step functions -- which a second notebook overlaps
on a 2-core CPU: ``benchmarks/README.md`` measures it), else 1 (each notebook then has the
whole accelerator). Notebooks that read each other's runs (06 reads 02's, 07 reads 05's) may
run side by side: a run is trained once, under a lock beside its folder, and read back by
the other.

``--devices`` runs a notebook's independent runs side by side, one worker per GPU: papermill
executes the notebook up to its cell tagged ``sweep-share`` once per device, in parallel, each
process with ``CUDA_VISIBLE_DEVICES`` set to its device and ``SHARE="i/N"`` (its fixed share of
the runs, :func:`mtlkit.studies.devices.share`); then the whole notebook runs once more and
reads every finished run back. Notebooks 02, 05 and 07 support it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from mtlkit.config import PROFILES

ROOT = Path(__file__).resolve().parent
NOTEBOOKS = ROOT / "notebooks"

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
    """Execute one notebook in a papermill process of its own (its kernel's start-up log lines
    stay in that process's captured output); return None, or a one-line description of its
    failure."""
    out = output_dir / notebook.name
    args = [sys.executable, "-m", "papermill", str(notebook), str(out), "--cwd", str(NOTEBOOKS),
            "-p", "PROFILE", profile, "-k", "python3", "--no-progress-bar"]  # fmt: skip
    env = {**os.environ, "MTLKIT_NOTEBOOK": notebook.stem}  # (names its work log, if counted)
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.splitlines() if line.strip()] or ["?"]
    return (failed_cell(out) or f"papermill: {lines[-1]}")[:200]


def failed_cell(executed: Path) -> str | None:
    """``"cell N: Error: message"`` for the first cell of an executed notebook that raised
    (None when there is none: the kernel died, or the notebook was never written)."""
    try:
        nb = nbformat.read(executed, as_version=4)
    except (OSError, ValueError):
        return None
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                text = f"cell {cell.execution_count}: {output.ename}: {output.evalue}"
                return text.splitlines()[0]
    return None


def default_jobs(profile: str) -> int:
    """Notebooks run at a time when ``--jobs`` is not given (module doc)."""
    if profile != "quick" or accelerator_visible():
        return 1
    return min(2, os.cpu_count() or 1)


def accelerator_visible() -> bool:
    """Whether this machine shows an NVIDIA GPU (not hidden by ``CUDA_VISIBLE_DEVICES``) or
    a TPU, without importing a framework to ask."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1")
    gpus = Path("/proc/driver/nvidia/gpus")
    nvidia = not hidden and (gpus.is_dir() and any(gpus.iterdir()) or Path("/dev/nvidia0").exists())
    return nvidia or any(Path("/dev").glob("accel[0-9]*"))


SWEEP_TAG = "sweep-share"
"""The tag of the cell after which a sweep worker stops: the notebook's training loop."""


def sweep(notebook: Path, output_dir: Path, profile: str, devices: list[str]) -> str | None:
    """Train ``notebook``'s runs with one papermill worker per device, side by side, then run
    the whole notebook (it reads the runs back). Returns None, or what failed."""
    nb = nbformat.read(notebook, as_version=4)
    tagged = [i for i, cell in enumerate(nb.cells) if SWEEP_TAG in cell.metadata.get("tags", [])]
    if not tagged:
        return (f"{notebook.name} does not split its runs into shares (no cell tagged "
                f"{SWEEP_TAG!r}): run it without --devices")  # fmt: skip
    nb.cells = nb.cells[: tagged[-1] + 1]  # the workers stop after training
    part = output_dir / f"{notebook.stem}_training.ipynb"
    nbformat.write(nb, part)
    workers = []
    for i, device in enumerate(devices):
        out = output_dir / f"{notebook.stem}_share{i}.ipynb"
        args = [sys.executable, "-m", "papermill", str(part), str(out), "--cwd", str(NOTEBOOKS),
                "-p", "PROFILE", profile, "-p", "SHARE", f"{i}/{len(devices)}",
                "-k", "python3", "--no-progress-bar"]  # fmt: skip
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": device}
        workers.append((out, subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.PIPE, text=True)))  # fmt: skip
    errors = [worker.communicate()[1] for _, worker in workers]  # (waits for each)
    failed = [(out, err) for (out, w), err in zip(workers, errors) if w.returncode != 0]
    if failed:
        out, err = failed[0]
        last = (err.strip().splitlines() or ["?"])[-1]
        return f"{len(failed)} sweep worker(s) failed; first: {out.name}: {last}"[:300]
    # the whole notebook on one of the devices, as each worker: "every device" then means
    # one there too, so the runs' tags (which count the devices) are the workers'
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = devices[0]
    try:
        return run_one(notebook, output_dir, profile)
    finally:
        if previous is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES")
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = previous


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=PROFILES, default="quick")
    parser.add_argument(
        "--only", nargs="*", default=None, help="notebook numbers (02 or 2) or names"
    )
    parser.add_argument("--output-dir", type=Path, default=NOTEBOOKS / "executed")
    parser.add_argument(
        "--devices", nargs="+", default=None,
        help="GPU ids: train the notebook's runs side by side, one worker per GPU (02, 05, 07)",
    )  # fmt: skip
    parser.add_argument(
        "--jobs", type=int, default=None,
        help="notebooks run at a time (default: 2 for the quick profile without a GPU, else 1)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    problem = check_only(args.only)
    if problem:
        parser.error(problem)
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be 1 or more, got {args.jobs}")
    if args.devices and (args.jobs or 1) > 1:
        parser.error("--devices already runs one worker per device: leave out --jobs")
    jobs = 1 if args.devices else args.jobs or default_jobs(args.profile)
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

    def execute(nb: Path) -> tuple[float, str | None]:
        print(f"--- {nb.name} ({args.profile} profile)", flush=True)
        start = time.perf_counter()
        if args.devices:
            failure = sweep(nb, args.output_dir, args.profile, args.devices)
        else:
            failure = run_one(nb, args.output_dir, args.profile)
        seconds = time.perf_counter() - start
        print(f"    {seconds:6.1f} s  {'FAILED: ' + failure if failure else 'ok'}  ({nb.name})",
              flush=True)  # fmt: skip
        return seconds, failure

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        done = dict(zip(notebooks, pool.map(execute, notebooks)))  # each a process of its own
    results = {nb.name: done[nb] for nb in notebooks}
    return report(results, args.profile, args.output_dir, time.perf_counter() - start, jobs)


def report(
    results: dict[str, tuple[float, str | None]],
    profile: str,
    output_dir: Path,
    wall: float | None = None,
    jobs: int = 1,
) -> int:
    """Print the table of wall times and failures; return the exit status."""
    print(f"\nWall time per notebook ({profile} profile):")
    for name, (seconds, failure) in results.items():
        print(f"  {name:36s} {seconds:7.1f} s  {'FAILED ' + failure if failure else 'ok'}")
    busy = sum(s for s, _ in results.values())
    wall = busy if wall is None else wall
    side = f"{jobs} notebooks at a time, " if jobs > 1 else ""
    print(f"  {'total':36s} {wall:7.1f} s  (wall clock; {side}{busy:.1f} s of notebook time)")
    failed = [name for name, (_, failure) in results.items() if failure]
    if failed:
        print(f"\n{len(failed)} notebook(s) failed: {', '.join(failed)}. The executed copies "
              f"in {output_dir} show each traceback.")  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
