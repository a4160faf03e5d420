"""The six CIFAR-100 builders: sizes from the reference table, outputs, reuse wiring."""

import keras
import numpy as np
import pytest

from mtlkit.architectures import NAMES, build_cifar100, parameter_table

# Totals from the reference (Keras's count_params, BatchNorm moving statistics included).
REFERENCE_PARAMS = {
    "independent": 18_783_864,
    "shared_conv": 18_486_008,
    "reuse_coarse": 18_788_984,
    "reuse_fine": 18_809_464,
    "shared_reuse_coarse": 18_491_128,
    "shared_reuse_fine": 18_511_608,
}


def test_names_are_the_six_of_the_report():
    assert NAMES == tuple(REFERENCE_PARAMS)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_totals_match_the_reference(name):
    assert build_cifar100(name).count_params() == REFERENCE_PARAMS[name]


@pytest.mark.parametrize("name", NAMES)
def test_outputs_are_named_logits(name):
    model = build_cifar100(name)
    out = model(np.random.default_rng(0).random((3, 32, 32, 3), dtype=np.float32), training=False)
    assert set(out) == {"fine", "coarse"}
    assert out["fine"].shape == (3, 100)
    assert out["coarse"].shape == (3, 20)
    # logits, not probabilities: rows need not sum to one and may be negative
    assert np.abs(keras.ops.convert_to_numpy(out["fine"]).sum(axis=1) - 1).max() > 1e-3


def test_class_counts_and_input_shape_are_parameters():
    model = build_cifar100("shared_reuse_fine", num_fine=10, num_coarse=4, input_shape=(16, 16, 3))
    out = model(np.zeros((2, 16, 16, 3), np.float32))
    assert out["fine"].shape == (2, 10) and out["coarse"].shape == (2, 4)


def test_sharing_means_one_trunk():
    shared = {layer.name for layer in build_cifar100("shared_conv").layers}
    separate = {layer.name for layer in build_cifar100("independent").layers}
    assert "shared_conv0" in shared and "fine_conv0" not in shared
    assert {"fine_conv0", "coarse_conv0"} <= separate


def _perturb_last_layer(model, task):
    kernel, bias = model.get_layer(task).get_weights()
    model.get_layer(task).set_weights([kernel + 0.5, bias + 0.5])


@pytest.mark.parametrize("name,giver,receiver", [
    ("reuse_coarse", "coarse", "fine"),
    ("reuse_fine", "fine", "coarse"),
    ("shared_reuse_coarse", "coarse", "fine"),
])
def test_reuse_wiring_flows_one_way(name, giver, receiver):
    model = build_cifar100(name)
    x = np.random.default_rng(1).random((4, 32, 32, 3), dtype=np.float32)
    before = {k: keras.ops.convert_to_numpy(v) for k, v in model(x, training=False).items()}

    _perturb_last_layer(model, giver)  # the giver's logits feed the receiver's head
    after = {k: keras.ops.convert_to_numpy(v) for k, v in model(x, training=False).items()}
    assert not np.allclose(after[giver], before[giver])
    assert not np.allclose(after[receiver], before[receiver])

    _perturb_last_layer(model, receiver)  # ... but nothing flows back
    again = {k: keras.ops.convert_to_numpy(v) for k, v in model(x, training=False).items()}
    np.testing.assert_array_equal(again[giver], after[giver])
    assert not np.allclose(again[receiver], after[receiver])


def test_independent_heads_do_not_see_each_other():
    model = build_cifar100("independent")
    x = np.random.default_rng(2).random((2, 32, 32, 3), dtype=np.float32)
    before = keras.ops.convert_to_numpy(model(x, training=False)["fine"])
    _perturb_last_layer(model, "coarse")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x, training=False)["fine"]), before)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        build_cifar100("shared_everything")
    assert "shared_everything" in str(err.value)
    for name in NAMES:
        assert name in str(err.value)


def test_parameter_table_shows_what_sharing_saves():
    table = parameter_table()
    assert table.loc["shared_conv", "vs independent"] == -297_856
    assert table.loc["reuse_coarse", "vs independent"] == 20 * 256
    assert table.loc["reuse_fine", "vs independent"] == 100 * 256
    assert table.loc["shared_reuse_fine", "trunks"] == 1
    assert (table["parameters"] == list(REFERENCE_PARAMS.values())).all()
