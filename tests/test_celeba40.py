"""The ``celeba40`` study: the published CelebA benchmark's protocol (all 40 attributes at
64 px, Sener & Koltun's optimizer and schedule), and its average error beside their table."""

import math
import subprocess
import sys
import types

import keras
import numpy as np
import pandas as pd
import pytest

from mtlkit import studies
from mtlkit.analysis import published
from mtlkit.data import celeba
from mtlkit.studies import runners


def test_the_full_profile_is_the_authors_protocol():
    """Values from github.com/isl-org/MultiObjectiveOptimization (sample.json: Adam, lr
    0.0005, batch 256, tasks 0-39; train_multi_task.py: NUM_EPOCHS = 100, lr x 0.85 when
    (epoch + 1) % 10 == 0; configs.json / the paper: 64x64 images, random initialisation)."""
    s = studies.celeba_settings("full", "tfds", study="celeba40")
    assert s.attributes == tuple(celeba.ATTRIBUTES) and len(s.attributes) == 40
    assert (s.image_size, s.batch_size, s.learning_rate, s.epochs) == (64, 256, 5e-4, 100)
    assert s.weights is None and s.learning_rate_decay == (0.85, 10)
    assert "at 64 px" in s.data_label and "learning rate x0.85 every 10 epochs" in s.data_label
    remedies = studies.celeba_settings("full", "tfds", study="remedies")
    assert s.tag != remedies.tag and "learning rate x" not in remedies.data_label


OLD_TAGS = {
    "tensorflow": ("celeba-standard-tfds-a8f235fb", "celeba-quick-synthetic-a23d9e66"),
    "jax": ("celeba-standard-tfds-817e7c6f", "celeba-quick-synthetic-e81e7e08"),
}
"""The tags of a standard and a quick run before ``learning_rate_decay`` existed, per
backend (the backend is hashed into the tag on JAX)."""


def test_tags_of_the_other_studies_are_unchanged():
    """``learning_rate_decay`` is hashed only when set: the tags below are the ones the run
    folders had before it existed."""
    standard, quick = OLD_TAGS[keras.backend.backend()]
    assert studies.CelebaSettings(profile="standard", source="tfds").tag == standard
    assert studies.celeba_settings("quick", "synthetic", study="remedies").tag == quick


def _rates(settings, steps):
    optimizer = runners.celeba_optimizer(settings)
    optimizer.build([keras.Variable(np.zeros(1, "float32"))])
    rates = []
    for step in range(steps):
        optimizer.iterations.assign(step)
        rates.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
    return np.array(rates)


def test_the_schedule_decays_where_the_authors_loop_does():
    """Their loop multiplies the rate by the factor at the start of 0-based epoch e when
    (e + 1) % every == 0, so epoch e runs at rate * factor ** ((e + 1) // every)."""
    s = studies.celeba_settings(
        "quick", "synthetic", study="celeba40", train_limit=100, batch_size=32, epochs=25,
        learning_rate=1e-3, learning_rate_decay=(0.5, 10),
    )  # fmt: skip
    steps = runners.steps_per_epoch(s)
    assert steps == math.ceil(100 / 32) == 4
    epoch = np.arange(25 * steps) // steps
    authors = 1e-3 * 0.5 ** ((epoch + 1) // 10)
    np.testing.assert_allclose(_rates(s, 25 * steps), authors, rtol=1e-6)
    staircase = 1e-3 * 0.5 ** (epoch // 10)  # a decay one epoch late: told apart
    assert not np.allclose(authors, staircase)


def test_no_decay_is_a_constant_rate():
    s = studies.celeba_settings("quick", "synthetic", study="remedies")
    assert runners.celeba_learning_rate(s) == s.learning_rate


@pytest.mark.parametrize("decay", [(0, 10), (1.5, 10), (0.85, 0), (0.85, 2.5), (0.85,), "fast"])
def test_a_bad_decay_is_refused_naming_the_fix(decay):
    with pytest.raises(ValueError, match="learning_rate_decay=.*e.g. \\(0.85, 10\\)"):
        studies.celeba_settings("quick", "synthetic", learning_rate_decay=decay)


def test_the_command_trains_40_heads_and_prints_them_beside_the_table(tmp_path, capsys):
    argv = ["--profile", "quick", "--source", "synthetic", "--methods", "ew", "--epochs", "1",
            "--train-limit", "64", "--eval-limit", "64", "--runs-dir", str(tmp_path)]  # fmt: skip
    table = studies.celeba40.main(argv)
    printed = capsys.readouterr().out
    assert (
        "CelebA-40: the published table beside synthetic" in printed and "quick profile" in printed
    )
    assert "at 64 px" in printed and "seeds [0]" in printed
    settings = studies.celeba_settings(
        "quick", "synthetic", study="celeba40", train_limit=64, eval_limit=64, epochs=1
    )
    run = studies.run_celeba(0, settings, arm="ew", runs_dir=tmp_path)
    assert run.read_back  # the command stored it where the study runner looks
    attributes = run.table.index.drop("mean over tasks")
    assert list(attributes) == list(celeba.ATTRIBUTES)
    error = published.average_error(run.table)
    assert error == pytest.approx(100 * (1 - run.table.loc[attributes, "accuracy"].mean()))
    assert table.loc["ew", "this kit: average error (%)"] == pytest.approx(error)
    assert table.loc["ew", "this kit: seeds"] == 1
    assert table.loc["ew", "average error, 40 attributes (%)"] == 9.62  # the published one
    assert np.isnan(table.loc["mgda", "this kit: average error (%)"])  # not trained here


def test_the_command_refuses_a_method_it_does_not_know(tmp_path):
    with pytest.raises(ValueError, match="arm='magic'"):
        studies.celeba40.run(["magic"], "quick", "synthetic", runs_dir=tmp_path)
    with pytest.raises(ValueError, match="list of method names"):
        studies.celeba40.run("ew", "quick", "synthetic", runs_dir=tmp_path)


def _table(accuracies):
    table = pd.DataFrame({"accuracy": accuracies}, index=[f"a{i}" for i in range(len(accuracies))])
    table.loc["mean over tasks"] = table.mean()
    return table


def test_the_average_error_and_its_spread():
    tables = [_table(np.full(40, 0.9)), _table(np.full(40, 0.8))]
    beside = published.celeba40_beside({"famo": tables})
    assert beside.loc["famo", "this kit: average error (%)"] == pytest.approx(15.0)
    assert beside.loc["famo", "this kit: std over seeds"] == pytest.approx(np.std([10, 20], ddof=1))
    assert "famo" in beside.index and "ew" in beside.index  # a method the paper lacks: its own row


def test_tables_not_over_40_attributes_or_with_nan_are_refused():
    with pytest.raises(ValueError, match="over \\[8\\] attributes.*'celeba40'"):
        published.celeba40_beside({"ew": [_table(np.full(8, 0.9))]})
    with pytest.raises(ValueError, match="has no runs"):
        published.celeba40_beside({"ew": []})
    broken = _table(np.r_[np.full(39, 0.9), np.nan])
    with pytest.raises(ValueError, match="No accuracy for \\['a39'\\]"):
        published.average_error(broken)


# ------------------------------------------------- the recent papers' table: Delta_m on F1
NTKMTL_MR = (4.35, 4.33)
"""The MRs of the two rows of Qin et al.'s Table 2 the kit leaves out (NTKMTL, NTKMTL-SR)."""


def test_the_recent_table_is_the_papers_and_its_ranks_are_over_14_methods():
    table = published.celeba40_recent()
    assert table.loc["famo", "Delta_m (%)"] == 1.21 and table.loc["fairgrad", "Delta_m (%)"] == 0.37
    assert table.loc["ew", "paper name"] == "LS" and table.loc["mgda", "Delta_m (%)"] == 14.85
    np.testing.assert_array_equal(table["Delta_p (%) = -Delta_m"], -table["Delta_m (%)"])
    # 14 methods' mean ranks average (14 + 1) / 2: a mistyped MR breaks the sum
    assert sum(table["MR (of 14)"]) + sum(NTKMTL_MR) == pytest.approx(14 * 15 / 2)
    assert not table.loc[["si", "fairgrad"], "in the kit"].any()
    from mtlkit.methods import weighting

    kit = [m for m in table.index if table.loc[m, "in the kit"]]
    assert all(m in weighting.METHODS for m in kit) and len(kit) == 10


def _f1_table(f1):
    table = pd.DataFrame({"f1": f1}, index=list(celeba.ATTRIBUTES))
    table.loc["mean over tasks"] = table.mean()
    return table


def test_delta_m_on_f1_against_single_task_models_by_hand():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.9, 40)
    singles = _f1_table(base).drop("mean over tasks")
    runs = [rng.uniform(0.3, 0.9, 40) for _ in range(3)]
    by_hand = [-100 * np.mean((f1 - base) / base) for f1 in runs]
    table = published.celeba40_delta_m({"famo": [_f1_table(f1) for f1 in runs]}, singles)
    assert table.loc["famo", "this kit: Delta_m on F1 (%)"] == pytest.approx(np.mean(by_hand))
    assert table.loc["famo", "this kit: std over seeds"] == pytest.approx(np.std(by_hand, ddof=1))
    assert table.loc["famo", "this kit: seeds"] == 3 and table.loc["famo", "Delta_m (%)"] == 1.21
    better = published.celeba40_delta_m({"ew": [_f1_table(base * 1.1)]}, singles)
    assert better.loc["ew", "this kit: Delta_m on F1 (%)"] == pytest.approx(-10.0)  # lower: better


def test_delta_m_refuses_baselines_it_cannot_divide_by_or_fewer_than_40():
    singles = _f1_table(np.full(40, 0.5)).drop("mean over tasks")
    run = _f1_table(np.full(40, 0.6))
    with pytest.raises(ValueError, match="singles has 8 attributes.*all 40"):
        published.celeba40_delta_m({"ew": [run]}, singles.iloc[:8])
    singles.iloc[3, 0] = 0.0  # a baseline that never predicts its attribute
    with pytest.raises(ValueError, match="baselines of \\['Bags_Under_Eyes'\\].*train them longer"):
        published.celeba40_delta_m({"ew": [run]}, singles)
    with pytest.raises(ValueError, match="has no runs"):
        published.celeba40_delta_m({"ew": []}, _f1_table(np.full(40, 0.5)).drop("mean over tasks"))


def test_the_command_with_delta_m_trains_40_baselines_and_prints_the_recent_table(
    tmp_path, capsys, monkeypatch
):
    """The study's wiring, with the training replaced by fixed tables: one run per method and
    seed, one single-task run per attribute (the custom loop, the first seed), and the table."""
    calls = []

    def fake_run(seed, settings, arm="fit", runs_dir=None):
        calls.append((seed, settings.single_task, arm))
        f1 = np.full(40, 0.5 if settings.single_task else 0.55)
        return types.SimpleNamespace(table=_f1_table(f1).assign(accuracy=0.9))

    monkeypatch.setattr(runners, "run_celeba", fake_run)
    argv = ["--profile", "quick", "--source", "synthetic", "--methods", "ew", "famo",
            "--seeds", "0", "1", "--delta-m", "--runs-dir", str(tmp_path)]  # fmt: skip
    studies.celeba40.main(argv)
    printed = capsys.readouterr().out
    assert "Delta_m on F1, the recent papers' table beside synthetic" in printed
    assert "seeds [0, 1], single-task seeds [0]" in printed
    singles = [c for c in calls if c[1] is not None]
    assert sorted(c[1] for c in singles) == sorted(celeba.ATTRIBUTES)
    assert {(c[0], c[2]) for c in singles} == {(0, "train")}
    table, _ = studies.celeba40.delta_m(["ew"], "quick", "synthetic", seeds=[0], runs_dir=tmp_path)
    assert table.loc["ew", "this kit: Delta_m on F1 (%)"] == pytest.approx(-10.0)


def test_the_command_starts_without_a_runpy_warning():
    """``python -m mtlkit.studies.celeba40``: the package does not import the module first
    (runpy warns when it does, and the script's module would be loaded twice)."""
    done = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "mtlkit.studies.celeba40", "--help"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--delta-m" in done.stdout and "RuntimeWarning" not in done.stderr


@pytest.mark.parametrize("seeds", [3, (), (-1,), (0, 1.5), ("0",)])
def test_bad_seeds_are_refused_before_any_run(tmp_path, seeds):
    with pytest.raises(ValueError, match="non-empty tuple of whole numbers >= 0"):
        studies.celeba40.run(["ew"], "quick", "synthetic", seeds=seeds, runs_dir=tmp_path)
    with pytest.raises(ValueError, match="single_seeds=.*non-empty tuple"):
        studies.celeba40.delta_m(["ew"], "quick", "synthetic", single_seeds=seeds,
                                 runs_dir=tmp_path)  # fmt: skip
    assert not any(tmp_path.iterdir())  # no run folder was made
