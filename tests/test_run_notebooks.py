"""run_notebooks.py: every notebook runs even after one fails, and the failure is reported."""

import re

import nbformat
import pytest

import run_notebooks


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    params = nbformat.v4.new_code_cell('PROFILE = "standard"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(s) for s in sources)]
    nbformat.write(nb, path)


def test_a_failure_does_not_stop_the_others(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_breaks.ipynb", "x = 1", "raise RuntimeError('on purpose')")
    _notebook(folder / "02_works.ipynb", "assert PROFILE == 'quick'")
    monkeypatch.setattr(run_notebooks, "NOTEBOOKS", folder)
    status = run_notebooks.main(["--output-dir", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert status == 1
    assert re.search(r"01_breaks.ipynb .*FAILED cell \d+: RuntimeError: on purpose", out)
    assert (tmp_path / "out" / "02_works.ipynb").exists()  # the second one still ran
    assert out.count("ok") >= 1 and "1 notebook(s) failed: 01_breaks.ipynb" in out


def test_unknown_profile_lists_the_three(capsys):
    with pytest.raises(SystemExit):
        run_notebooks.main(["--profile", "medium"])
    err = capsys.readouterr().err
    assert "quick" in err and "standard" in err and "full" in err


def test_kernels_start_without_log_lines(tmp_path, capfd):
    # the kernel writes its start-up log (ipykernel 7: a TCP-encryption warning) straight to
    # the inherited stderr, so only the file descriptor shows it
    _notebook(tmp_path / "01_quiet.ipynb", "x = 1")
    assert run_notebooks.run_one(tmp_path / "01_quiet.ipynb", tmp_path, "quick") is None
    assert "[IPKernelApp]" not in capfd.readouterr().err


@pytest.fixture
def two_notebooks(tmp_path, monkeypatch):
    """A notebooks folder with 01_first and 02_second (never executed by these tests)."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for name in ("01_first", "02_second"):
        _notebook(folder / f"{name}.ipynb", "x = 1")
    monkeypatch.setattr(run_notebooks, "NOTEBOOKS", folder)
    monkeypatch.setattr(run_notebooks, "run_one", _must_not_run)
    return folder


def _must_not_run(*args, **kwargs):
    raise AssertionError("a bad --only must stop before any notebook runs")


@pytest.mark.parametrize(
    "only",
    [["--only"], ["--only", "0"], ["--only", "00"], ["--only", "02", "9"], ["--only", "first"]],
    ids=["no value", "0", "00", "one of two unknown", "name without number"],
)
def test_an_only_that_names_no_notebook_is_an_error(two_notebooks, tmp_path, capsys, only):
    """'--only 0' and a bare '--only' used to run every notebook."""
    with pytest.raises(SystemExit) as exit_:
        run_notebooks.main([*only, "--output-dir", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--only" in err and "01 (01_first), 02 (02_second)" in err


def test_only_takes_numbers_and_names(two_notebooks):
    def names(only):
        return [nb.stem for nb in run_notebooks.select(only)]

    assert names(["2"]) == names(["02"]) == names(["02_second.ipynb"]) == ["02_second"]
    assert names(["02_sec", "1"]) == ["01_first", "02_second"]
    assert names(None) == ["01_first", "02_second"]
    assert run_notebooks.check_only(["1", "02"]) == ""
