"""make_student_edition.py: solutions become placeholders, model answers go, the rest stays;
and a student notebook, unanswered, runs to its end with every check saying "not done yet"."""

from __future__ import annotations

import json
import re
from pathlib import Path

import papermill
import pytest

import make_student_edition as edition

ROOT = Path(__file__).resolve().parents[1]

INSTRUCTOR = '''def f(x):
    """Twice x."""
    # BEGIN SOLUTION
    # HINT: multiply.
    y = 2 * x
    return y
    # END SOLUTION


# BEGIN SOLUTION: answer = ...
answer = f(3)
# END SOLUTION
print(answer)
'''

STUDENT = '''def f(x):
    """Twice x."""
    # HINT: multiply.
    raise NotImplementedError  # your code here


answer = ...
print(answer)
'''


def test_solutions_become_placeholders_and_hints_stay():
    assert edition.strip_solutions(INSTRUCTOR) == STUDENT


@pytest.mark.parametrize("source, says", [
    ("# BEGIN SOLUTION\nx = 1\n", "without an '# END SOLUTION'"),
    ("x = 1\n# END SOLUTION\n", "without a '# BEGIN SOLUTION'"),
    ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION\n", "inside another"),
])  # fmt: skip
def test_unbalanced_markers_are_refused(source, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        edition.strip_solutions(source, "cell 3")


def test_model_answers_go_and_outputs_are_cleared():
    notebook = {"cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["**Model answer.** It is 6.\n"]},
        {"cell_type": "markdown", "metadata": {}, "source": ["### Exercise 1.1\n"]},
        {"cell_type": "code", "metadata": {}, "execution_count": 3, "source": INSTRUCTOR,
         "outputs": [{"output_type": "stream", "name": "stdout", "text": "6\n"}]},
    ]}  # fmt: skip
    student = edition.student_notebook(notebook)
    assert "".join(student["cells"][0]["source"]) == edition.YOUR_ANSWER
    assert student["cells"][1]["source"] == ["### Exercise 1.1\n"]
    assert "".join(student["cells"][2]["source"]) == STUDENT
    assert student["cells"][2]["outputs"] == [] and student["cells"][2]["execution_count"] is None
    assert notebook["cells"][2]["outputs"]  # the instructor's copy is untouched


def test_every_notebook_has_a_student_edition(tmp_path):
    written = edition.write_edition(tmp_path)
    assert [p.name for p in written] == sorted(
        p.name for p in (ROOT / "notebooks").glob("0*.ipynb")
    )
    for path in written:
        text = path.read_text()
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
        assert "**Model answer.**" not in text
        assert "google.colab" in text  # the install cell stays
        assert text.endswith("}\n")


def test_the_student_folder_is_ignored():
    assert "student/" in (ROOT / ".gitignore").read_text().splitlines()


def test_a_student_notebook_runs_to_its_end(tmp_path):
    """Notebook 04's student edition in the quick profile: no error, every check 'not done yet'."""
    source = edition.write_edition(tmp_path / "student", only=["04"])[0]
    executed = tmp_path / "executed.ipynb"
    papermill.execute_notebook(str(source), str(executed), parameters={"PROFILE": "quick"},
                               kernel_name="python3", progress_bar=False, cwd=str(ROOT),
                               extra_arguments=["--IPKernelApp.log_level=ERROR"])  # fmt: skip
    printed = "".join(
        "".join(output["text"])
        for cell in json.loads(executed.read_text())["cells"] if cell["cell_type"] == "code"
        for output in cell["outputs"] if output["output_type"] == "stream"
    )  # fmt: skip
    found = re.findall(r"^(Exercise 4\.\d+): (.*)$", printed, re.M)
    assert [name for name, _ in found] == [f"Exercise 4.{k}" for k in range(1, 6)], printed
    assert {status for _, status in found} == {"not done yet"}, found
