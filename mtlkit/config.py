"""Run profiles and folders shared by the notebooks.

Every notebook has a ``PROFILE`` parameter:

* ``"full"`` -- the report's real protocol on the real dataset (hours, best on a GPU);
* ``"quick"`` -- a few minutes on a laptop CPU: a small subset, one or two epochs, and the
  embedded synthetic data where the real data cannot be reached. It exists so that every
  notebook can be executed end to end (nbval in CI, a first look in class); its numbers are
  **not** results on the real datasets, and every table and figure says which profile and
  data produced it.

The environment variable ``MTLKIT_PROFILE`` sets the default, so ``pytest --nbval-lax``
can run the notebooks quickly without editing them.
"""

from __future__ import annotations

import os
from pathlib import Path

PROFILES = ("full", "quick")

REPO_ROOT = Path(__file__).resolve().parents[1]


def profile_from_env(default: str = "full") -> str:
    """The profile named by ``MTLKIT_PROFILE``, else ``default``."""
    return check_profile(os.environ.get("MTLKIT_PROFILE", default))


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}: use one of {PROFILES}.")
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
    """Where the notebooks save figures (``MTLKIT_FIGURES_DIR`` or ``<repo>/figures``)."""
    path = Path(os.environ.get("MTLKIT_FIGURES_DIR", REPO_ROOT / "figures"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    """Where training runs keep checkpoints and finished results (``MTLKIT_RUNS_DIR``)."""
    path = Path(os.environ.get("MTLKIT_RUNS_DIR", REPO_ROOT / "runs"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def env_path(name: str) -> Path | None:
    """A folder named by an environment variable, or None when it is unset."""
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None
