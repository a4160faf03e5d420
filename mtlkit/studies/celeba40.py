"""The published CelebA benchmark, trained with the kit: all 40 attributes at 64 px (the
``celeba40`` study, :data:`mtlkit.studies.settings.CELEBA40`), some methods over seeds,
and their average test error beside Sener & Koltun's table
(:func:`mtlkit.analysis.published.celeba40_beside`); with ``--delta-m``, also the 40
single-task baselines and each method's Delta_m on F1 beside the recent papers' table
(:func:`mtlkit.analysis.published.celeba40_delta_m`).

From a terminal (the full profile is the authors' 100 epochs: many GPU hours per run)::

    python -m mtlkit.studies.celeba40 --profile full --methods ew mgda uw gradnorm
    python -m mtlkit.studies.celeba40 --profile full --methods ew famo nash_mtl --delta-m

prints each table under a title naming the data, profile and seeds that made it. Runs are
stored like every study's runs and read back when asked for again.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import pandas as pd

from mtlkit import config
from mtlkit.analysis import comparison, published
from mtlkit.studies import runners
from mtlkit.studies.settings import CelebaSettings, _check_counts, celeba_settings


def run(
    methods: Sequence[str],
    profile: str = "full",
    source: str | None = None,
    *,
    seeds: Sequence[int] | None = None,
    runs_dir: str | os.PathLike | None = None,
    **overrides,
) -> tuple[pd.DataFrame, CelebaSettings]:
    """Train (or read back) each method of ``methods`` (arms of
    :func:`~mtlkit.studies.runners.run_celeba`: ``"ew"``, ``"mgda"``, ...) for every seed
    of the ``celeba40`` study's ``profile``; return the published table with this kit's
    average error beside it, and the settings (``settings.data_label`` names the data)."""
    tables, settings, _ = _method_tables(methods, profile, source, seeds, runs_dir, overrides)
    return published.celeba40_beside(tables), settings


def _method_tables(methods, profile, source, seeds, runs_dir, overrides) -> tuple:
    """The test tables of every method over the seeds (trained or read back), the study's
    settings and the seeds."""
    if isinstance(methods, str) or not methods:
        raise ValueError(f"methods={methods!r}: give a list of method names, e.g. ['ew', 'mgda'].")
    settings = celeba_settings(profile, source, study="celeba40", **overrides)
    seeds = settings.seeds if seeds is None else _checked_seeds(seeds)
    tables = {
        m: [runners.run_celeba(s, settings, arm=m, runs_dir=runs_dir).table for s in seeds]
        for m in methods
    }
    return tables, settings, seeds


def _checked_seeds(seeds, name: str = "seeds") -> tuple:
    """``seeds`` as a tuple, or the settings' ValueError: a non-empty tuple of whole numbers
    >= 0 (an int such as 3, an empty tuple or a negative seed are refused before any run)."""
    base = {"seeds": seeds}
    try:
        _check_counts(base)
    except ValueError as err:
        raise ValueError(str(err).replace("seeds=", f"{name}=", 1)) from None
    return base["seeds"]


def delta_m(
    methods: Sequence[str],
    profile: str = "full",
    source: str | None = None,
    *,
    seeds: Sequence[int] | None = None,
    single_seeds: Sequence[int] | None = None,
    runs_dir: str | os.PathLike | None = None,
    **overrides,
) -> tuple[pd.DataFrame, CelebaSettings]:
    """Train (or read back) ``methods`` as :func:`run` does and the 40 single-task baselines
    (one ResNet18 per attribute, the custom loop, for each of ``single_seeds``: default the
    first seed, as FAMO's table has one baseline); return the recent papers' table with the
    kit's Delta_m on F1 beside it (:func:`mtlkit.analysis.published.celeba40_delta_m`)."""
    single_seeds = None if single_seeds is None else _checked_seeds(single_seeds, "single_seeds")
    tables, settings, seeds = _method_tables(methods, profile, source, seeds, runs_dir, overrides)
    single_seeds = seeds[:1] if single_seeds is None else single_seeds
    baselines = {}
    for attribute in settings.attributes:
        alone = celeba_settings(profile, source, study="celeba40", single_task=attribute,
                                **overrides)  # fmt: skip
        baselines[attribute] = [runners.run_celeba(s, alone, arm="train", runs_dir=runs_dir).table
                                for s in single_seeds]  # fmt: skip
    singles = comparison.single_task_table(baselines)
    return published.celeba40_delta_m(tables, singles), settings


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """The command line: train, then print the table with its title."""
    parser = argparse.ArgumentParser(
        prog="python -m mtlkit.studies.celeba40", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--profile", default="full", choices=config.PROFILES)
    parser.add_argument("--source", choices=("tfds", "folder", "synthetic"))
    parser.add_argument("--methods", nargs="+", required=True, help="e.g. ew mgda uw gradnorm")
    parser.add_argument("--seeds", nargs="+", type=int, help="default: the profile's")
    parser.add_argument("--single-seeds", nargs="+", type=int, help="default: the first seed")
    baselines = "also train the 40 single-task baselines; print Delta_m on F1"
    parser.add_argument("--delta-m", action="store_true", help=baselines)
    parser.add_argument("--runs-dir", help="default: mtlkit.config.runs_dir()")
    for name in ("epochs", "train-limit", "eval-limit"):
        parser.add_argument(f"--{name}", type=int, help="default: the profile's")
    args = parser.parse_args(argv)
    limits = dict(epochs=args.epochs, train_limit=args.train_limit, eval_limit=args.eval_limit)
    where = dict(seeds=args.seeds, runs_dir=args.runs_dir, **limits)
    table, settings = run(args.methods, args.profile, args.source, **where)
    seeds = args.seeds or list(settings.seeds)
    print(f"CelebA-40: the published table beside {settings.data_label}, seeds {seeds}")
    print(table.round(2).to_string())
    if args.delta_m:
        recent, _ = delta_m(args.methods, args.profile, args.source,
                            single_seeds=args.single_seeds, **where)  # fmt: skip
        singles = args.single_seeds or seeds[:1]
        print(f"CelebA-40: Delta_m on F1, the recent papers' table beside {settings.data_label}, "
              f"seeds {seeds}, single-task seeds {singles}")  # fmt: skip
        print(recent.round(2).to_string())
    return table


if __name__ == "__main__":
    main()
