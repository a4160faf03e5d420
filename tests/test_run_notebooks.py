"""run_notebooks.py: every notebook runs even after one fails, and the failure is reported."""

import json
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


SWEEP_CELL = """import json, os, pathlib
from mtlkit.studies import devices
out = pathlib.Path(os.environ["SWEEP_TEST_DIR"])
for run in devices.share(range(5), SHARE):  # a finished run is read back, not trained
    if not (out / f"run{run}").exists():
        record = {"share": SHARE, "device": os.environ.get("CUDA_VISIBLE_DEVICES")}
        (out / f"run{run}").write_text(json.dumps(record))"""


def _sweep_notebook(folder):
    _notebook(
        folder / "02_sweep.ipynb",
        SWEEP_CELL,
        "assert SHARE is None and len(list(out.iterdir())) == 5",
        "assert os.environ['CUDA_VISIBLE_DEVICES'] == '3'",  # on one device, as a worker
    )
    nb = nbformat.read(folder / "02_sweep.ipynb", as_version=4)
    nb.cells[0].source += "\nSHARE = None"  # a parameter, as in notebook 02
    nb.cells[1].metadata["tags"] = [run_notebooks.SWEEP_TAG]
    nbformat.write(nb, folder / "02_sweep.ipynb")


def test_a_sweep_trains_each_run_once_one_worker_per_device(tmp_path, monkeypatch, capsys):
    """Two workers pinned to devices "3" and "5" train fixed shares side by side; the whole
    notebook then runs once and finds every run (it trains none of them again)."""
    folder, runs = tmp_path / "notebooks", tmp_path / "runs"
    folder.mkdir(), runs.mkdir()
    _sweep_notebook(folder)
    monkeypatch.setattr(run_notebooks, "NOTEBOOKS", folder)
    monkeypatch.setenv("SWEEP_TEST_DIR", str(runs))
    argv = ["--output-dir", str(tmp_path / "out"), "--devices", "3", "5"]
    assert run_notebooks.main(argv) == 0, capsys.readouterr().out
    records = {p.name: json.loads(p.read_text()) for p in runs.iterdir()}
    assert sorted(records) == [f"run{i}" for i in range(5)]
    by_worker = {(r["share"], r["device"]) for r in records.values()}
    assert by_worker == {("0/2", "3"), ("1/2", "5")}  # each share on its own device
    assert [records[f"run{i}"]["share"] for i in range(5)] == ["0/2", "1/2"] * 2 + ["0/2"]


def test_a_sweep_of_a_notebook_without_shares_is_refused(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "03_whole.ipynb", "x = 1")
    monkeypatch.setattr(run_notebooks, "NOTEBOOKS", folder)
    assert run_notebooks.main(["--output-dir", str(tmp_path / "out"), "--devices", "0", "1"]) == 1
    assert "does not split its runs into shares" in capsys.readouterr().out


def test_a_workers_share_is_fixed_disjoint_and_complete():
    from mtlkit.studies import devices

    shares = [devices.share(range(11), f"{i}/3") for i in range(3)]
    assert sorted(sum(shares, [])) == list(range(11))
    assert devices.share(range(4), None) == [0, 1, 2, 3]
    for bad in ("3/3", "1", "a/2", "-1/2"):
        with pytest.raises(ValueError, match="use 'i/N'"):
            devices.share(range(4), bad)


@pytest.mark.parametrize("name", ["02_cifar100_comparison", "05_dst_celeba", "07_remedies"])
def test_a_sweepable_notebook_trains_its_share_in_the_tagged_cell(name):
    """The cell a worker stops after trains the share, and nothing before it trains."""
    nb = nbformat.read(run_notebooks.NOTEBOOKS / f"{name}.ipynb", as_version=4)
    tagged = [c for c in nb.cells if run_notebooks.SWEEP_TAG in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "devices.share(plan, SHARE)" in tagged[0].source
    before = nb.cells[: nb.cells.index(tagged[0])]
    code = [c.source for c in before if c.cell_type == "code"]
    assert not [s for s in code if "run_c" in s or "train(" in s]
    assert "SHARE = None" in next(
        c.source for c in nb.cells if "parameters" in c.metadata.get("tags", [])
    )


STAMP_CELL = """import json, os, pathlib, time
start = time.time()
time.sleep(3)
out = pathlib.Path(os.environ["STAMP_DIR"]) / (os.environ["MTLKIT_NOTEBOOK"] + ".json")
out.write_text(json.dumps([start, time.time()]))"""


@pytest.mark.parametrize("jobs", [1, 2])
def test_jobs_run_that_many_notebooks_at_a_time(tmp_path, monkeypatch, capsys, jobs):
    """With --jobs 2 the two notebooks' cells run at the same time; with --jobs 1 one after
    the other. Each kernel is told its notebook's name (MTLKIT_NOTEBOOK)."""
    folder, stamps = tmp_path / "notebooks", tmp_path / "stamps"
    folder.mkdir(), stamps.mkdir()
    for name in ("01_a", "02_b"):
        _notebook(folder / f"{name}.ipynb", STAMP_CELL)
    monkeypatch.setattr(run_notebooks, "NOTEBOOKS", folder)
    monkeypatch.setenv("STAMP_DIR", str(stamps))
    argv = ["--output-dir", str(tmp_path / "out"), "--jobs", str(jobs)]
    assert run_notebooks.main(argv) == 0
    (a0, a1), (b0, b1) = (json.loads((stamps / f"{n}.json").read_text()) for n in ("01_a", "02_b"))
    overlap = min(a1, b1) - max(a0, b0)  # seconds both cells were running
    assert overlap > 1 if jobs == 2 else overlap < 0, (overlap, jobs)
    out = capsys.readouterr().out
    side = "2 notebooks at a time" in out
    assert side == (jobs == 2) and re.search(r"total\s+[0-9.]+ s  \(wall clock", out), out


def test_the_default_is_two_at_a_time_only_for_quick_runs_without_an_accelerator(monkeypatch):
    monkeypatch.setattr(run_notebooks.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(run_notebooks, "accelerator_visible", lambda: False)
    assert run_notebooks.default_jobs("quick") == 2
    assert run_notebooks.default_jobs("standard") == run_notebooks.default_jobs("full") == 1
    monkeypatch.setattr(run_notebooks.os, "cpu_count", lambda: 1)
    assert run_notebooks.default_jobs("quick") == 1  # one core: nothing to overlap on
    monkeypatch.setattr(run_notebooks.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(run_notebooks, "accelerator_visible", lambda: True)
    assert run_notebooks.default_jobs("quick") == 1  # each notebook gets the whole GPU


def test_a_gpu_hidden_by_cuda_visible_devices_is_not_seen(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(run_notebooks.Path, "glob", lambda self, pattern: iter(()))
    assert run_notebooks.accelerator_visible() is False


@pytest.mark.parametrize(
    "argv, message",
    [(["--jobs", "0"], "--jobs must be 1 or more"),
     (["--jobs", "2", "--devices", "0", "1"], "leave out --jobs")],
    ids=["no jobs", "jobs and devices"],
)  # fmt: skip
def test_bad_jobs_are_refused(two_notebooks, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        run_notebooks.main([*argv, "--output-dir", str(tmp_path / "out")])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
