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
