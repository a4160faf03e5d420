"""Run profiles and folders shared by the notebooks.

Every notebook has a ``PROFILE`` parameter with one of three values:

* ``"quick"`` -- a few minutes on a laptop CPU: a small subset, a few epochs, and the
  embedded synthetic data where the real data cannot be reached. It exists so that every
  notebook runs end to end anywhere (nbval in CI, a first look in class) and still shows
  learning; its numbers are **not** results on the real datasets, and every table and
  figure says which profile and data produced it.
* ``"standard"`` (the default) -- the real dataset and the pretrained backbone, with fewer
  epochs and seeds than the reports, sized so that one notebook finishes in one sitting on a
  free Colab GPU (about 45 minutes at most). Each notebook prints its expected duration.
* ``"full"`` -- the reports' protocols on the real datasets (hours on a GPU; resumable).

The environment variable ``MTLKIT_PROFILE`` sets the notebooks' default, so ``pytest`` and
``run_notebooks.py`` can run them in the quick profile without editing them.
"""

from __future__ import annotations

import os
from pathlib import Path

PROFILES = ("quick", "standard", "full")
"""The three run profiles, from minutes on a CPU to the reports' protocols."""

DEFAULT_PROFILE = "standard"

REPO_ROOT = Path(__file__).resolve().parents[1]

REPOSITORY = "mtlkit/mtlkit"
"""The GitHub repository (owner/name) that the notebooks' Colab badges open and their
install cells install from. A fork changes it everywhere with one command:
``python set_repository.py OWNER/NAME [--branch BRANCH]``."""

BRANCH = "main"
"""The branch the Colab badges open and the install cells install from."""


def colab_url(notebook: str) -> str:
    """The Open-in-Colab address of a notebook of this repository."""
    return (
        f"https://colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}/notebooks/{notebook}"
    )


def install_spec() -> str:
    """What the notebooks' Colab cell gives to ``pip install``."""
    branch = "" if BRANCH == "main" else f"@{BRANCH}"
    return f"mtlkit @ git+https://github.com/{REPOSITORY}{branch}"


def check_profile(profile: str) -> str:
    """Return ``profile`` if it is one of :data:`PROFILES`, else raise a clear error."""
    if profile not in PROFILES:
        raise ValueError(
            f"Unknown profile {profile!r}. Use one of {', '.join(map(repr, PROFILES))}: "
            "'quick' (CPU minutes, synthetic data where the real data is out of reach), "
            "'standard' (real data, one Colab GPU sitting) or 'full' (the reports' protocols)."
        )
    return profile


def data_dir() -> Path:
    """Where datasets are downloaded and cached.

    ``MTLKIT_DATA_DIR`` if set; else the repository's ``data/`` folder when the kit runs
    from a checkout; else ``~/.mtlkit/data``.
    """
    env = os.environ.get("MTLKIT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    if (REPO_ROOT / "data").is_dir():
        return REPO_ROOT / "data"
    return Path.home() / ".mtlkit" / "data"


def figures_dir() -> Path:
    """Where the notebooks save figures: ``MTLKIT_FIGURES_DIR`` if set; else ``figures/`` of
    the checkout; else (the kit pip-installed, as in Colab) ``~/.mtlkit/figures``."""
    return _folder("MTLKIT_FIGURES_DIR", "figures")


def runs_dir() -> Path:
    """Where training runs keep checkpoints and finished results: ``MTLKIT_RUNS_DIR`` if set;
    else ``runs/`` of the checkout; else (pip-installed) ``~/.mtlkit/runs``."""
    return _folder("MTLKIT_RUNS_DIR", "runs")


def _folder(variable: str, name: str) -> Path:
    """The folder ``variable`` names, or ``name`` in the checkout (never inside an installed
    package's site-packages), created if needed."""
    env = os.environ.get(variable)
    if env:
        path = Path(env).expanduser()
    elif is_checkout():
        path = REPO_ROOT / name
    else:
        path = Path.home() / ".mtlkit" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_checkout() -> bool:
    """Whether the kit runs from a copy of its repository (an editable install or the
    folder itself), not from a pip-installed package."""
    return (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "notebooks").is_dir()


def env_path(name: str) -> Path | None:
    """A folder named by an environment variable, or None when it is unset."""
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None
