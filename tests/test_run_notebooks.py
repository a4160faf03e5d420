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
