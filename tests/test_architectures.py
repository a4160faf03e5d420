"""The six CIFAR-100 builders: sizes from the reference table, the report's blocks, outputs,
reuse wiring, depths, and the variable layout that checkpoints store."""

import keras
import numpy as np
import pytest

from mtlkit.models import architectures
from mtlkit.models.architectures import NAMES, build_cifar100, parameter_table
from mtlkit.models.graph import task_depths
from mtlkit.training.runs import model_signature

# Totals from the reference (Keras's count_params, BatchNorm moving statistics included).
REFERENCE_PARAMS = {
    "independent": 18_783_864,
    "shared_conv": 18_486_008,
    "reuse_coarse": 18_788_984,
    "reuse_fine": 18_809_464,
    "shared_reuse_coarse": 18_491_128,
    "shared_reuse_fine": 18_511_608,
}
REUSE = {  # architecture: (giver, receiver) -- the receiver's head reads the giver's logits
    "reuse_coarse": ("coarse", "fine"),
    "reuse_fine": ("fine", "coarse"),
    "shared_reuse_coarse": ("coarse", "fine"),
    "shared_reuse_fine": ("fine", "coarse"),
}


def _numpy(outputs):
    return {k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()}


def test_names_are_the_six_of_the_report():
    assert NAMES == tuple(REFERENCE_PARAMS)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_totals_match_the_reference(name):
    assert build_cifar100(name).count_params() == REFERENCE_PARAMS[name]


@pytest.mark.parametrize("name", NAMES)
def test_outputs_are_named_float32_logits(name):
    model = build_cifar100(name)
    assert sorted(model.output_names) == ["coarse", "fine"]
    out = model(np.random.default_rng(0).random((3, 32, 32, 3), dtype=np.float32), training=False)
    assert set(out) == {"fine", "coarse"}
    assert out["fine"].shape == (3, 100) and out["coarse"].shape == (3, 20)
    assert all(keras.backend.standardize_dtype(v.dtype) == "float32" for v in out.values())
    # logits, not probabilities: rows need not sum to one and may be negative
    assert np.abs(keras.ops.convert_to_numpy(out["fine"]).sum(axis=1) - 1).max() > 1e-3


def test_class_counts_and_input_shape_are_parameters():
    model = build_cifar100("shared_reuse_fine", num_fine=10, num_coarse=4, input_shape=(16, 16, 3))
    out = model(np.zeros((2, 16, 16, 3), np.float32))
    assert out["fine"].shape == (2, 10) and out["coarse"].shape == (2, 4)


def _expected_blocks(name: str) -> set[str]:
    """The report's boxes: input_image -> conv_layers -> fc_layers_1 -> [concat] ->
    fc_layers_2 -> label, one trunk or one per task."""
    trunks = (
        {"conv_layers"} if name.startswith("shared") else {"fine_conv_layers", "coarse_conv_layers"}
    )
    heads = {f"{t}_fc_layers_{i}" for t in ("fine", "coarse") for i in (1, 2)}
    concat = {f"{REUSE[name][1]}_concat_reused"} if name in REUSE else set()
    return {"input_image", "fine", "coarse"} | trunks | heads | concat


@pytest.mark.parametrize("name", NAMES)
def test_models_are_made_of_the_reports_blocks(name):
    model = build_cifar100(name)
    assert {layer.name for layer in model.layers} == _expected_blocks(name)
    blocks = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    assert {b.name for b in blocks} == {n for n in _expected_blocks(name) if "_layers" in n}
    # every weighted layer sits in a block, except the two logits layers
    loose = [layer.name for layer in model.layers if layer.weights and layer not in blocks]
    assert sorted(loose) == ["coarse", "fine"]
    assert (
        sum(b.count_params() for b in blocks)
        + model.get_layer("fine").count_params()
        + model.get_layer("coarse").count_params()
        == model.count_params()
    )


def _feeders(model, layer_name):
    (node,) = model.get_layer(layer_name)._inbound_nodes
    return [t._keras_history.operation.name for t in node.input_tensors]


@pytest.mark.parametrize("name", NAMES)
def test_blocks_are_wired_like_the_diagrams(name):
    model = build_cifar100(name)
    for task in ("fine", "coarse"):
        trunk = "conv_layers" if name.startswith("shared") else f"{task}_conv_layers"
        assert _feeders(model, trunk) == ["input_image"]
        assert _feeders(model, f"{task}_fc_layers_1") == [trunk]
        assert _feeders(model, task) == [f"{task}_fc_layers_2"]
        if name in REUSE and task == REUSE[name][1]:
            concat = f"{task}_concat_reused"
            assert _feeders(model, concat) == [f"{task}_fc_layers_1", REUSE[name][0]]
            assert _feeders(model, f"{task}_fc_layers_2") == [concat]
        else:
            assert _feeders(model, f"{task}_fc_layers_2") == [f"{task}_fc_layers_1"]


def test_sharing_means_one_trunk_and_the_layers_keep_their_names():
    shared = build_cifar100("shared_conv")
    separate = build_cifar100("independent")
    assert "conv_layers" in {layer.name for layer in shared.layers}
    assert {"fine_conv_layers", "coarse_conv_layers"} <= {layer.name for layer in separate.layers}
    assert shared.get_layer("conv_layers").get_layer("shared_conv0").kernel.shape == (3, 3, 3, 64)
    assert (
        separate.get_layer("fine_conv_layers").get_layer("fine_conv0").count_params()
        == 3 * 3 * 3 * 64 + 64
    )


def test_block_builders_are_models_of_the_reference_sizes():
    trunk = architectures.conv_layers((32, 32, 3), "fine")
    assert trunk.name == "fine_conv_layers" and trunk.output.shape == (None, 8192)
    assert trunk.count_params() == 297_856  # the reference's trunk
    first = architectures.fc_layers_1(8192, "coarse")
    second = architectures.fc_layers_2(512 + 100, "coarse")
    assert (first.name, first.output.shape) == ("coarse_fc_layers_1", (None, 512))
    assert (second.name, second.output.shape) == ("coarse_fc_layers_2", (None, 128))
    # Dense + BatchNormalization (4 values per unit) per dense block
    assert first.count_params() == (8192 + 1 + 4) * 1024 + (1024 + 1 + 4) * 512
    assert second.count_params() == (612 + 1 + 4) * 256 + (256 + 1 + 4) * 128


def _perturb(layer):
    layer.set_weights([w + 0.5 for w in layer.get_weights()])


def _giver_layer(model, task, where):
    """The logits layer of ``task`` (top level), or its first dense layer (inside a block)."""
    if where == "logits":
        return model.get_layer(task)
    return model.get_layer(f"{task}_fc_layers_1").get_layer(f"{task}_fc1024_dense")


@pytest.mark.parametrize("where", ["logits", "inside fc_layers_1"])
@pytest.mark.parametrize("name", ["reuse_coarse", "reuse_fine", "shared_reuse_coarse"])
def test_reuse_wiring_flows_one_way(name, where):
    giver, receiver = REUSE[name]
    model = build_cifar100(name)
    x = np.random.default_rng(1).random((4, 32, 32, 3), dtype=np.float32)
    before = _numpy(model(x, training=False))

    _perturb(_giver_layer(model, giver, where))  # the giver's logits feed the receiver's head
    after = _numpy(model(x, training=False))
    assert not np.allclose(after[giver], before[giver])
    assert not np.allclose(after[receiver], before[receiver])

    _perturb(_giver_layer(model, receiver, where))  # ... but nothing flows back
    again = _numpy(model(x, training=False))
    np.testing.assert_array_equal(again[giver], after[giver])
    assert not np.allclose(again[receiver], after[receiver])


def test_independent_heads_do_not_see_each_other():
    model = build_cifar100("independent")
    x = np.random.default_rng(2).random((2, 32, 32, 3), dtype=np.float32)
    before = _numpy(model(x, training=False))["fine"]
    _perturb(model.get_layer("coarse"))
    _perturb(model.get_layer("coarse_conv_layers").get_layer("coarse_conv0"))
    np.testing.assert_array_equal(_numpy(model(x, training=False))["fine"], before)


@pytest.mark.parametrize("name", NAMES)
def test_task_depths_walk_through_the_blocks(name):
    """DST's depth: 5 convolutions + 5 dense layers per task; a receiving head adds its
    fc_layers_2 and logits (3) on top of the giver's whole path."""
    trunk = architectures.conv_layers((32, 32, 3), "x")
    convs = sum(isinstance(layer, keras.layers.Conv2D) for layer in trunk.layers)
    head = 2 + 2 + 1  # fc_layers_1, fc_layers_2, logits
    expected = {"fine": convs + head, "coarse": convs + head}
    if name in REUSE:
        expected[REUSE[name][1]] = convs + head + 3
    assert task_depths(build_cifar100(name)) == expected


# ---------------------------------------------------------------- checkpoint layout
def _flat_reference(name: str) -> keras.Model:
    """The same model without blocks, from the tensor-level pieces: every layer directly
    in one graph, as the kit built it before the blocks (that layout is what older
    checkpoints hold)."""
    inputs = keras.Input((32, 32, 3))
    if name.startswith("shared"):
        shared = architectures.conv_trunk(inputs, "shared")
        features = {"fine": shared, "coarse": shared}
    else:
        features = {t: architectures.conv_trunk(inputs, t) for t in ("fine", "coarse")}
    giver, receiver = REUSE.get(name, (None, None))
    logits = {}
    for task in (giver, receiver) if giver else ("fine", "coarse"):
        x = architectures.dense_block(features[task], 1024, f"{task}_fc1024")
        x = architectures.dense_block(x, 512, f"{task}_fc512")
        if task == receiver:
            x = keras.layers.Concatenate()([x, logits[giver]])
        x = architectures.dense_block(x, 256, f"{task}_fc256")
        x = architectures.dense_block(x, 128, f"{task}_fc128")
        logits[task] = keras.layers.Dense(100 if task == "fine" else 20, name=task)(x)
    return keras.Model(inputs, logits)


# The checkpoint layout: the weighted blocks in Keras's topological order (farthest from
# the outputs first). Changing it orphans saved runs, so it is spelled out here.
LAYOUT = {
    "independent": "coarse_conv_layers fine_conv_layers coarse_fc_layers_1 fine_fc_layers_1 "
    "coarse_fc_layers_2 fine_fc_layers_2 coarse fine",
    "shared_conv": "conv_layers coarse_fc_layers_1 fine_fc_layers_1 coarse_fc_layers_2 "
    "fine_fc_layers_2 coarse fine",
    "reuse_coarse": "coarse_conv_layers coarse_fc_layers_1 coarse_fc_layers_2 fine_conv_layers "
    "coarse fine_fc_layers_1 fine_fc_layers_2 fine",
    "reuse_fine": "fine_conv_layers fine_fc_layers_1 coarse_conv_layers fine_fc_layers_2 "
    "coarse_fc_layers_1 fine coarse_fc_layers_2 coarse",
    "shared_reuse_coarse": "conv_layers coarse_fc_layers_1 coarse_fc_layers_2 coarse "
    "fine_fc_layers_1 fine_fc_layers_2 fine",
    "shared_reuse_fine": "conv_layers fine_fc_layers_1 fine_fc_layers_2 coarse_fc_layers_1 "
    "fine coarse_fc_layers_2 coarse",
}


def _named_variables(model) -> list[tuple[str, tuple]]:
    """``model.variables`` as (``layer/short name``, shape): what a checkpoint holds, by
    position. (A Dropout's seed-generator variable has a process-wide counter in its path,
    so the owning layer names it here.)"""
    owner = {}

    def visit(layer):
        for inner in getattr(layer, "layers", []):  # the layers of a block first
            visit(inner)
        for v in layer.variables:
            owner.setdefault(id(v), f"{layer.name}/{v.path.split('/')[-1]}")

    visit(model)
    return [(owner[id(v)], tuple(v.shape)) for v in model.variables]


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_layout_is_the_flat_models_variables_block_by_block(name):
    """Checkpoints store ``model.variables`` by position (their signature: short name and
    shape). The layout: block after block in the order of :data:`LAYOUT`, each block's
    variables in the order the flat model has them. Built twice, the layout is the same."""
    model = build_cifar100(name)
    named, flat = _named_variables(model), _named_variables(_flat_reference(name))
    assert sorted(named) == sorted(flat)
    flat_position = {v: i for i, v in enumerate(flat)}
    expected = []
    for layer in model.layers:
        expected += sorted(_named_variables(layer), key=flat_position.get)
    assert named == expected

    assert [layer.name for layer in model.layers if layer.weights] == LAYOUT[name].split()
    assert _named_variables(build_cifar100(name)) == named
    assert model_signature(model) == [[v.split("/")[-1], list(shape)] for v, shape in named]


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


def test_trunk_width_scales_the_filters_and_keeps_the_heads():
    """The quick profile's narrower trunks: every convolution has width x the report's
    filters, so the flattened features shrink by the same factor; the heads keep their sizes
    and the wiring is the same."""
    full, half = build_cifar100("reuse_coarse"), build_cifar100("reuse_coarse", trunk_width=0.5)
    for prefix in ("fine", "coarse"):
        trunk_full = full.get_layer(f"{prefix}_conv_layers")
        trunk_half = half.get_layer(f"{prefix}_conv_layers")
        for layer in trunk_full.layers:
            if isinstance(layer, keras.layers.Conv2D):
                other = trunk_half.get_layer(layer.name)
                assert other.filters * 2 == layer.filters, layer.name
        assert trunk_half.output.shape[-1] * 2 == trunk_full.output.shape[-1] == 8192
    for task in ("fine", "coarse"):  # the head's layers after the first dense are the same
        a, b = full.get_layer(f"{task}_fc_layers_2"), half.get_layer(f"{task}_fc_layers_2")
        assert a.count_params() == b.count_params()
    assert sorted(half.output_names) == sorted(full.output_names)


@pytest.mark.parametrize("width", [0, -0.5, float("nan"), 5, "half", True])
def test_a_bad_trunk_width_is_refused(width):
    with pytest.raises(ValueError, match="trunk_width="):
        build_cifar100("shared_conv", trunk_width=width)
