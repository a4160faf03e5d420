"""Write the student edition of the notebooks: solutions out, placeholders and hints in.

    python make_student_edition.py                 # every notebook -> student/
    python make_student_edition.py --out elsewhere # another folder
    python make_student_edition.py --only 04 07    # some notebooks

The committed notebooks are the instructor's edition. In their code cells a solution sits
between a line ``# BEGIN SOLUTION`` and a line ``# END SOLUTION``; the student edition puts
a placeholder in its place, at the same indentation:

* ``# BEGIN SOLUTION`` alone -> ``raise NotImplementedError  # your code here`` (inside a
  function the student writes; the exercise's check then prints "not done yet");
* ``# BEGIN SOLUTION: answer = ...`` -> the code after the colon (a variable the student
  sets; ``...`` makes the check print "not done yet").

Lines of the region that start with ``# HINT:`` stay, as comments, above the placeholder.
A markdown cell whose first line is ``**Model answer.**`` becomes "**Your answer.**" and an
empty line to write on. Outputs and execution counts are cleared; every other cell, the
Colab install cell and the checks included, is copied as it is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
NOTEBOOKS = ROOT / "notebooks"
OUT = ROOT / "student"

BEGIN, END, HINT = "# BEGIN SOLUTION", "# END SOLUTION", "# HINT:"
MODEL_ANSWER = "**Model answer.**"
YOUR_ANSWER = "**Your answer.** *(Write it here, from the tables above.)*\n"


def strip_solutions(source: str, where: str = "a cell") -> str:
    """The code ``source`` with each solution region replaced by its placeholder."""
    out, region = [], None
    for line in source.splitlines(keepends=True):
        text = line.strip()
        if text.startswith(BEGIN):
            if region is not None:
                raise ValueError(f"{where}: '{BEGIN}' inside another solution region.")
            indent = line[: len(line) - len(line.lstrip())]
            placeholder = text[len(BEGIN) :].lstrip(":").strip()
            region = (indent, placeholder or "raise NotImplementedError  # your code here")
        elif text.startswith(END):
            if region is None:
                raise ValueError(f"{where}: '{END}' without a '{BEGIN}' before it.")
            out.append(f"{region[0]}{region[1]}\n")
            region = None
        elif region is None:
            out.append(line)
        elif text.startswith(HINT):
            out.append(f"{region[0]}{text}\n")
    if region is not None:
        raise ValueError(f"{where}: '{BEGIN}' without an '{END}'.")
    return "".join(out)


def student_notebook(notebook: dict, name: str = "notebook") -> dict:
    """A copy of the instructor's ``notebook`` (nbformat JSON) as the student gets it."""
    notebook = json.loads(json.dumps(notebook))
    for i, cell in enumerate(notebook["cells"]):
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "code":
            ending = "\n" if source.endswith("\n") else ""
            source = strip_solutions(source, f"{name}, cell {i}").rstrip("\n") + ending
            cell["outputs"], cell["execution_count"] = [], None
        elif cell["cell_type"] == "markdown" and source.startswith(MODEL_ANSWER):
            source = YOUR_ANSWER
        cell["source"] = source.splitlines(keepends=True)
    return notebook


def write_edition(out: Path = OUT, only: list[str] | None = None) -> list[Path]:
    """Write the student edition of the notebooks (``only``: numbers such as "04") to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        if only and path.stem[:2] not in {o.zfill(2) for o in only}:
            continue
        notebook = student_notebook(json.loads(path.read_text()), path.name)
        target = out / path.name
        target.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder to write (default student/)")
    parser.add_argument("--only", nargs="+", help="notebook numbers, e.g. 04 07")
    args = parser.parse_args(argv)
    try:
        written = write_edition(args.out, args.only)
    except ValueError as error:
        print(f"make_student_edition: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
