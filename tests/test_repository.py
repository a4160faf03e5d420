"""The Colab badges and install cells all point at config.REPOSITORY, and a fork can move
them in one command (set_repository.py)."""

import shutil
from pathlib import Path

import nbformat
import pytest

import set_repository
from mtlkit import config

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_badge_and_install_cell_match_the_configured_repository(path):
    text = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells)
    assert config.colab_url(path.name) in text, "the Colab badge opens another notebook or repo"
    assert config.install_spec() in text, "the Colab cell installs from another repository"


def test_set_repository_moves_every_link(tmp_path, monkeypatch):
    for part in ("notebooks", "mtlkit"):
        (tmp_path / part).mkdir()
    for path in NOTEBOOKS:
        shutil.copy(path, tmp_path / "notebooks" / path.name)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copy(ROOT / "mtlkit" / "config.py", tmp_path / "mtlkit" / "config.py")
    monkeypatch.setattr(set_repository, "ROOT", tmp_path)
    monkeypatch.setattr(set_repository, "CONFIG", tmp_path / "mtlkit" / "config.py")
    assert set_repository.main(["alice/mtl-fork", "--branch", "dev"]) == 0
    assert set_repository.current() == ("alice/mtl-fork", "dev")
    for path in sorted((tmp_path / "notebooks").glob("*.ipynb")):
        text = path.read_text()
        assert f"github/alice/mtl-fork/blob/dev/notebooks/{path.name}" in text
        assert "git+https://github.com/alice/mtl-fork@dev" in text
        assert config.REPOSITORY not in text
    with pytest.raises(SystemExit):
        set_repository.main(["not a repository"])


def test_runs_and_figures_stay_out_of_an_installed_package(tmp_path, monkeypatch):
    """Pip-installed (Colab), the kit's folder is in site-packages: runs and figures go to
    ~/.mtlkit, not beside the package; in a checkout they go to its runs/ and figures/; the
    variables win everywhere."""
    for name in ("MTLKIT_RUNS_DIR", "MTLKIT_FIGURES_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    installed = tmp_path / "site-packages"
    (installed / "mtlkit").mkdir(parents=True)
    monkeypatch.setattr(config, "REPO_ROOT", installed)
    assert not config.is_checkout()
    assert config.runs_dir() == tmp_path / "home" / ".mtlkit" / "runs"
    assert config.figures_dir() == tmp_path / "home" / ".mtlkit" / "figures"
    assert not (installed / "runs").exists()
    monkeypatch.setattr(config, "REPO_ROOT", ROOT)
    assert config.is_checkout() and config.runs_dir() == ROOT / "runs"
    monkeypatch.setenv("MTLKIT_RUNS_DIR", str(tmp_path / "mine"))
    assert config.runs_dir() == tmp_path / "mine"
