"""DST scheduler: every metric against numbers worked out by hand, gates, state, depths."""

import json
import math

import numpy as np
import pytest

from mtlkit.methods.dst import METRICS, DSTScheduler, labelled_counts
from mtlkit.models.graph import task_depths

TASKS = ["a", "b", "c"]
DEPTHS = {"a": 18, "b": 18, "c": 9}
COUNTS = {"a": 100, "b": 50, "c": 25}
L0 = {"a": 2.0, "b": 1.0, "c": 4.0}
L1 = {"a": 1.0, "b": 0.8, "c": 3.0}
L2 = {"a": 0.9, "b": 0.85, "c": 2.0}  # b's loss rose: its stagnancy rate must stay

# ---- worked by hand (see the reference's formulas) ----
# epoch 1: A = L1/L0 = (0.5, 0.8, 0.75), mean 2.05/3
I1 = {"a": 0.5 / (2.05 / 3), "b": 1.0, "c": 1.0}  # 0.7317, 1.1707 -> 1, 1.0976 -> 1
R1 = {"a": (1.0 / 2.0) / I1["a"], "b": (0.2 / 1.0) / 1.0, "c": (1.0 / 4.0) / 1.0}
MEAN_R1 = (R1["a"] + R1["b"] + R1["c"]) / 3  # 0.3778
S1 = {"a": MEAN_R1 / R1["a"], "b": 1.0, "c": 1.0}  # 0.5528; 1.89 -> 1; 1.51 -> 1
# epoch 2: A = (0.45, 0.85, 0.5), mean 0.6
I2 = {"a": 0.75, "b": 1.0, "c": 0.5 / 0.6}
R2 = {
    "a": 0.1 * ((1.0 - 0.9) / 1.0 / 0.75) + 0.9 * R1["a"],
    "b": R1["b"],  # did not fall: unchanged
    "c": 0.1 * ((3.0 - 2.0) / 3.0 / (0.5 / 0.6)) + 0.9 * R1["c"],
}
MEAN_R2 = (R2["a"] + R2["b"] + R2["c"]) / 3
S2 = {"a": MEAN_R2 / R2["a"], "b": 1.0, "c": 1.0}
D = {"a": 1.0, "b": 1.0, "c": 0.5}
N = {"a": 1.0, "b": 0.5, "c": 0.25}


def full_scheduler(**kwargs) -> DSTScheduler:
    return DSTScheduler(TASKS, depths=DEPTHS, sample_counts=COUNTS, seed=0, **kwargs)


def test_hand_values_sanity():
    # the hand numbers themselves, rounded, so a slip in the expressions above shows up
    assert round(I1["a"], 4) == 0.7317 and round(S1["a"], 4) == 0.5528
    assert round(R2["a"], 4) == 0.6283 and round(R2["c"], 4) == 0.265


@pytest.mark.parametrize(
    "metrics, expected",
    [
        (("depth",), {t: (1 + D[t]) / 2 for t in TASKS}),
        (("samples",), {t: (1 + N[t]) / 2 for t in TASKS}),
        (("incompleteness",), {t: (1 + I1[t]) / 2 for t in TASKS}),
        (("stagnancy",), {t: (1 + S1[t]) / 2 for t in TASKS}),
        ((), {t: 1.0 for t in TASKS}),
        (None, {t: (1 + D[t] + N[t] + I1[t] + S1[t]) / 5 for t in TASKS}),
    ],
)
def test_each_metric_and_the_combination_epoch1(metrics, expected):
    kwargs = {} if metrics is None else {"metrics": metrics}
    s = full_scheduler(**kwargs)
    s.observe_initial(L0)
    p = s.observe_epoch(L1)
    assert p == pytest.approx(expected, rel=1e-12)
    # all four p with every metric: a 0.857, b 0.9, c 0.75 -- in [0.2, 1]
    assert all(0.2 <= v <= 1 for v in p.values())


def test_epoch2_stagnancy_keeps_rate_of_a_loss_that_rose():
    s = full_scheduler()
    s.observe_initial(L0)
    s.observe_epoch(L1)
    p = s.observe_epoch(L2)
    assert s.rates == pytest.approx(R2, rel=1e-12)
    assert s.rates["b"] == pytest.approx(R1["b"], rel=1e-15)
    record = s.history[-1]
    assert record["incompleteness"] == pytest.approx(I2, rel=1e-12)
    assert record["stagnancy"] == pytest.approx(S2, rel=1e-12)
    assert p == pytest.approx({t: (1 + D[t] + N[t] + I2[t] + S2[t]) / 5 for t in TASKS}, rel=1e-12)


def test_loss_scales_equal_start():
    s = DSTScheduler(TASKS, metrics=(), rescale_losses=True)
    s.observe_initial(L0)
    mean = 7.0 / 3
    assert s.loss_scales == pytest.approx({"a": mean / 2, "b": mean / 1, "c": mean / 4})
    assert all(math.isclose(s.loss_scales[t] * L0[t], mean) for t in TASKS)
    assert DSTScheduler(TASKS, metrics=()).loss_scales == {t: 1.0 for t in TASKS}


def test_first_epoch_gates_all_on_and_history_frame():
    s = full_scheduler()
    assert s.sample() == {t: 1 for t in TASKS}
    s.observe_initial(L0)
    s.observe_epoch(L1)
    gates = s.sample()
    s.observe_epoch(L2)
    frame = s.history_frame()
    assert list(frame["epoch"]) == [1, 1, 1, 2, 2, 2]
    assert list(frame[frame.epoch == 1]["gate"]) == [1, 1, 1]
    assert list(frame[frame.epoch == 2]["gate"]) == [gates[t] for t in TASKS]
    assert frame.set_index(["epoch", "task"]).loc[(2, "a"), "stagnancy"] == pytest.approx(S2["a"])


def _forced(probabilities, redraw: bool, seed=123) -> DSTScheduler:
    tasks = list(probabilities)
    s = DSTScheduler(tasks, metrics=(), seed=seed, redraw_if_all_dropped=redraw)
    s.observe_epoch({t: 1.0 for t in tasks})  # past epoch 1
    s.history[-1]["next_probability"] = dict(probabilities)  # as if the metrics gave these
    return s


def test_gates_drawn_at_the_stated_rate():
    p = {"a": 0.2, "b": 0.5, "c": 0.9}
    s = _forced(p, redraw=False)
    n = 4000
    draws = np.array([list(s.sample().values()) for _ in range(n)])
    for j, t in enumerate(p):
        tolerance = 4 * math.sqrt(p[t] * (1 - p[t]) / n)  # 4 standard errors: ~0.025 at most
        assert abs(draws[:, j].mean() - p[t]) < tolerance, t
    # the gates are independent: all off happens at 0.8 * 0.5 * 0.1 = 0.04
    assert abs((draws.sum(1) == 0).mean() - 0.04) < 4 * math.sqrt(0.04 * 0.96 / n)


def test_all_gates_zero_redraws_and_the_rate_that_follows():
    p = {"a": 0.2, "b": 0.2}
    s = _forced(p, redraw=True)
    n = 4000
    draws = np.array([list(s.sample().values()) for _ in range(n)])
    assert (draws.sum(1) > 0).all()  # never an epoch without a task
    conditional = 0.2 / (1 - 0.8 * 0.8)  # 0.556: P(g_a = 1 | not all 0)
    four_sd = 4 * math.sqrt(conditional * (1 - conditional) / n)
    for j in range(2):
        assert abs(draws[:, j].mean() - conditional) < four_sd
    # without the redraw an epoch with no task at all does happen, as in the original
    s = _forced(p, redraw=False)
    assert any(sum(s.sample().values()) == 0 for _ in range(200))


def test_redraws_are_recorded():
    s = _forced({"a": 0.01, "b": 0.01}, redraw=True, seed=5)
    gates = s.sample()
    assert sum(gates.values()) >= 1
    s.observe_epoch({"a": 1.0, "b": 1.0})
    assert s.history[-1]["redraws"] > 0 and s.history[-1]["gate"] == gates


def test_state_round_trip_through_json_continues_identically():
    a = full_scheduler()
    a.observe_initial(L0)
    a.observe_epoch(L1)
    a.sample()
    state = json.loads(json.dumps(a.get_state()))
    b = full_scheduler()
    b.set_state(state)
    a.observe_epoch(L2)
    b.observe_epoch(L2)
    assert [a.sample() for _ in range(30)] == [b.sample() for _ in range(30)]
    assert a.history == b.history
    with pytest.raises(ValueError, match="tasks"):
        DSTScheduler(["a", "b"], metrics=()).set_state(state)


def test_same_seed_same_gates_other_seed_differs():
    draws = []
    for seed in (7, 7, 8):
        s = _forced({"a": 0.5, "b": 0.5, "c": 0.5}, redraw=False, seed=seed)
        draws.append([tuple(s.sample().values()) for _ in range(40)])
    assert draws[0] == draws[1] and draws[0] != draws[2]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"metrics": ("depth",)}, "needs depths"),
        ({"metrics": ("samples",)}, "needs sample_counts"),
        ({"metrics": ("speed",)}, "Unknown DST metric"),
        ({"metrics": (), "depths": {"a": 1, "zz": 2}}, "exactly the tasks"),
        ({"metrics": (), "alpha": 0}, "alpha"),
    ],
)
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DSTScheduler(["a", "b"], **kwargs)


@pytest.mark.parametrize(
    "losses, match",
    [
        ({"a": 1.0, "b": 1.0, "zz": 1.0}, r"unknown: \[.zz.\]"),
        ({"a": 1.0}, r"missing: \[.b.\]"),
        ({"a": float("nan"), "b": 1.0}, "'a' is nan"),
        ({"a": 1.0, "b": float("inf")}, "'b' is inf"),
        ({"a": -1.0, "b": 1.0}, "negative"),
    ],
)
def test_bad_losses(losses, match):
    s = DSTScheduler(["a", "b"], metrics=("incompleteness",))
    with pytest.raises(ValueError, match=match):
        s.observe_initial(losses)
    s.observe_initial({"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match=match):
        s.observe_epoch(losses)


def test_metrics_that_need_start_losses_refuse_without_them():
    with pytest.raises(RuntimeError, match="observe_initial"):
        DSTScheduler(["a", "b"], metrics=("stagnancy",)).observe_epoch({"a": 1.0, "b": 1.0})


def test_a_loss_that_reached_zero_is_handled():
    s = DSTScheduler(["a", "b"], metrics=("incompleteness", "stagnancy"))
    s.observe_initial({"a": 1.0, "b": 1.0})
    p = s.observe_epoch({"a": 0.0, "b": 0.5})
    assert all(math.isfinite(v) and 1 / 3 <= v <= 1 for v in p.values())
    assert p["a"] < p["b"]  # the finished task is scheduled less


# ---------------------------------------------------------------------- task depths
def test_task_depths_reuse_coarse():
    from mtlkit.models.architectures import build_cifar100

    assert task_depths(build_cifar100("reuse_coarse")) == {"fine": 13, "coarse": 10}
    assert task_depths(build_cifar100("shared_conv")) == {"fine": 10, "coarse": 10}


def test_task_depths_resnet18_counts_the_longest_path_not_every_conv():
    from mtlkit.data.celeba import EIGHT
    from mtlkit.models.architectures import build_celeba

    model = build_celeba(EIGHT, weights=None, image_size=64)
    convs = sum(type(layer).__name__ == "Conv2D" for layer in model.get_layer("resnet18").layers)
    assert convs == 20  # 17 on the main path + 3 shortcut 1x1 convolutions beside it
    assert task_depths(model) == {a: 18 for a in EIGHT}


def test_task_depths_needs_a_functional_model():
    import keras

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional"):
        task_depths(Sub())


@pytest.mark.parametrize(
    "labels, match",
    [
        ({"Male": np.array([0, 1, -2, 1])}, r"'Male' has labels \[-2.0\]"),
        ({"Male": np.array([0.0, 1.0, np.nan])}, r"'Male' has labels \[nan\]"),
        ({"Male": np.array([-1, 1, 1, -1, -1, 1, -1, 1])}, "'Male': .*CelebA's file form"),
    ],
)
def test_labelled_counts_refuses_labels_it_cannot_count(labels, match):
    """Only -1 means unknown: -2 or NaN, and CelebA's -1/1 file form, are refused."""
    with pytest.raises(ValueError, match=match):
        labelled_counts(labels)


def test_labelled_counts_counts_all_but_minus_one():
    assert labelled_counts({"a": np.array([0, 1, -1, 1]), "b": [1, 0, 1, -1]}) == {"a": 3, "b": 3}


@pytest.mark.parametrize("alpha", ["0.1", True, [0.1], None])
def test_an_alpha_that_is_not_a_number_is_refused(alpha):
    with pytest.raises(TypeError, match="alpha must be a number"):
        DSTScheduler(["a", "b"], metrics=(), alpha=alpha)


def test_metrics_in_another_order_are_the_same_scheduler():
    """p_j sums the enabled metrics: their order changes nothing, so a state restores into a
    scheduler given them in another order, and the probabilities agree to the last digit."""
    orders = [METRICS, METRICS[::-1]]
    schedulers = [DSTScheduler(TASKS, DEPTHS, COUNTS, metrics=m, seed=0) for m in orders]
    for s in schedulers:
        s.observe_initial(L0)
    assert schedulers[0].observe_epoch(L1) == schedulers[1].observe_epoch(L1)
    schedulers[1].set_state(schedulers[0].get_state())
    with pytest.raises(ValueError, match="names a metric twice"):
        DSTScheduler(TASKS, metrics=("incompleteness", "incompleteness"))


def test_state_keeps_redraws_and_rescaling():
    a = DSTScheduler(["a", "b"], metrics=(), redraw_if_all_dropped=False, rescale_losses=True)
    a.observe_initial({"a": 1.0, "b": 4.0})
    b = DSTScheduler(["a", "b"], metrics=())
    b.set_state(json.loads(json.dumps(a.get_state())))
    assert (b.redraw_if_all_dropped, b.rescale_losses) == (False, True)
    assert b.loss_scales == a.loss_scales
