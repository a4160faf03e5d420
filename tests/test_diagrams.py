"""Architecture diagrams with and without Graphviz, and their table of blocks."""

from __future__ import annotations

import sys

import matplotlib.image
import pytest

from mtlkit import diagrams
from mtlkit.models import architectures

needs_graphviz = pytest.mark.skipif(
    diagrams.graphviz_missing() is not None,
    reason=f"cannot draw here: {diagrams.graphviz_missing()}",
)


@pytest.fixture(scope="module")
def model():
    """A reuse model with a shared trunk (small input and class counts keep it light)."""
    return architectures.build_cifar100(
        "shared_reuse_coarse", num_fine=10, num_coarse=4, input_shape=(16, 16, 3)
    )


@pytest.fixture
def figures(tmp_path, monkeypatch):
    monkeypatch.setenv("MTLKIT_FIGURES_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def no_dot(tmp_path, monkeypatch):
    """A PATH on which Graphviz's ``dot`` cannot be found."""
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def _height(path) -> int:
    return matplotlib.image.imread(path).shape[0]


@needs_graphviz
def test_diagram_is_saved_under_figures_and_blocks_open_on_request(model, figures):
    blocks = diagrams.plot_architecture(model, "blocks.png", show=False)
    one = diagrams.plot_architecture(model, "one.png", expand_nested="conv_layers", show=False)
    every = diagrams.plot_architecture(model, "every.png", expand_nested=True, show=False)
    assert [blocks, one, every] == [
        figures / "blocks.png",
        figures / "one.png",
        figures / "every.png",
    ]
    # the trunk's 10 layers make the picture taller; opening every block, taller still
    assert _height(blocks) < _height(one) < _height(every)


def _edges(dot) -> set[tuple[str, str]]:
    return {(e.get_source(), e.get_destination()) for e in dot.get_edges()}


@needs_graphviz
def test_opening_one_block_reroutes_its_edges_to_its_layers(model):
    trunk = model.get_layer("conv_layers")
    entry, exit_ = (
        trunk.inputs[0]._keras_history.operation,
        trunk.outputs[0]._keras_history.operation,
    )
    dot = diagrams._model_dot(model, "conv_layers", True, 48)
    edges = _edges(dot)
    ids = {
        name: str(id(model.get_layer(name)))
        for name in ("input_image", "coarse_fc_layers_1", "fine_fc_layers_1")
    }
    assert (ids["input_image"], str(id(entry))) in edges
    assert {
        (str(id(exit_)), ids["coarse_fc_layers_1"]),
        (str(id(exit_)), ids["fine_fc_layers_1"]),
    } <= edges
    assert all(str(id(trunk)) not in edge for edge in edges)  # the closed box is gone
    (cluster,) = dot.get_subgraphs()
    assert cluster.get_label() == "conv_layers"
    assert {n.get_name() for n in cluster.get_nodes()} >= {str(id(layer)) for layer in trunk.layers}


def test_graphviz_check_names_what_to_install(no_dot):
    message = diagrams.graphviz_missing()
    assert "dot" in message and "PATH" in message
    for fix in ("sudo apt-get install graphviz", "brew install graphviz", "conda install graphviz"):
        assert fix in message
    assert "pip install pydot alone is not enough" in message


def test_graphviz_check_names_a_missing_pydot(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydot", None)  # import pydot now fails
    message = diagrams.graphviz_missing()
    assert "pip install pydot" in message and "apt-get install graphviz" in message


def test_without_graphviz_a_table_replaces_the_diagram(model, figures, no_dot, capsys):
    assert diagrams.plot_architecture(model, "blocks.png") is None
    assert not (figures / "blocks.png").exists()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("No diagram:") and "apt-get install graphviz" in lines[0]
    table = "\n".join(lines[1:])
    assert "apt-get" not in table  # the advice is given once, on one line
    for layer in model.layers:
        assert layer.name in table
    assert f"{model.get_layer('conv_layers').count_params()}" in table


def test_block_table_lists_blocks_feeders_shapes_and_parameters(model):
    table = diagrams.block_table(model)
    assert list(table.index) == [layer.name for layer in model.layers]
    assert table.loc["fine_concat_reused", "fed by"] == "fine_fc_layers_1, coarse"
    assert table.loc["fine_fc_layers_2", "fed by"] == "fine_concat_reused"
    assert table.loc["input_image", "fed by"] == "-"
    assert table.loc["conv_layers", "kind"] == "block of 10 layers"  # 5 conv, 2 pool, 2 BN, flatten
    assert table.loc["fine_concat_reused", "output shape"] == "(None, 516)"  # 512 + 4 coarse logits
    assert table["parameters"].sum() == model.count_params()


def test_block_table_opens_the_blocks_asked_for(model):
    table = diagrams.block_table(model, expand_nested="fine_fc_layers_2")
    inner = [name for name in table.index if name.startswith("fine_fc_layers_2/")]
    assert inner == [
        f"fine_fc_layers_2/{layer.name}" for layer in model.get_layer("fine_fc_layers_2").layers
    ]
    assert table.loc["fine_fc_layers_2/fine_fc256_dense", "fed by"] == "fine_fc_layers_2_input"
    assert len(diagrams.block_table(model, expand_nested=True)) == len(model.layers) + sum(
        len(layer.layers) for layer in model.layers if hasattr(layer, "layers")
    )
    with pytest.raises(ValueError, match="'fine'.*not blocks.*conv_layers"):
        diagrams.block_table(model, expand_nested=["fine"])


@needs_graphviz
def test_an_orthogonal_router_crash_falls_back_to_straight_edges(model, figures, monkeypatch):
    """Graphviz's ortho router can abort (``maze.c`` assertion): the diagram is redrawn."""
    real = diagrams._model_dot
    splines = []

    class CrashingOrtho:
        def __init__(self, dot):
            self.dot = dot

        def set(self, key, value):
            self.dot.set(key, value)

        def write_png(self, path):
            splines.append(self.dot.get("splines"))
            if self.dot.get("splines") == "ortho":
                raise AssertionError("dot: maze.c:311: chkSgraph: Assertion failed")
            self.dot.write_png(path)

    monkeypatch.setattr(diagrams, "_model_dot", lambda *args: CrashingOrtho(real(*args)))
    path = diagrams.plot_architecture(model, "crash.png", show=False)
    assert splines == ["ortho", "polyline"] and path.exists()
