"""Diagrams of functional models: what each architecture shares, drawn or listed.

* :func:`plot_architecture` -- the model drawn like ``keras.utils.plot_model``, with chosen
  blocks (nested models) opened as dashed clusters, saved under figures/;
* :func:`block_table` -- the same blocks as a table, the stand-in when Graphviz is missing;
* :func:`graphviz_missing` -- what to install to draw, or None.

The graph walking (which layer feeds which, a block's ends) is :mod:`mtlkit.models.graph`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mtlkit import config
from mtlkit.models import graph


def plot_architecture(
    model,
    filename: str,
    *,
    expand_nested: bool | str | Sequence[str] = False,
    show_shapes: bool = True,
    dpi: int = 48,
    show: bool = True,
) -> Path | None:
    """Draw a functional model like ``keras.utils.plot_model``, save it under figures/.

    A nested model (a block such as ``conv_layers``) is one box; ``expand_nested=True``
    opens every block, a block name (or a list of names) opens only those. Edges are
    Keras's right-angled ones, redrawn as straight segments when Graphviz's orthogonal
    router crashes (``maze.c: chkSgraph`` assertion, seen on some large flat graphs).
    ``show`` displays the picture in a notebook. Returns the PNG's path.

    Without Graphviz (its ``dot`` program, and the ``pydot`` package) nothing is drawn and
    nothing raises: one line says what to install, the blocks are shown as a table
    (:func:`block_table`) instead, and the result is None.
    """
    missing = graphviz_missing()
    if missing:
        print(f"No diagram: {missing}. The blocks are listed as a table instead.")
        table = block_table(model, expand_nested=expand_nested)
        if show:
            _show(table)
        return None
    dot = _model_dot(model, expand_nested, show_shapes, dpi)
    path = config.figures_dir() / filename
    try:
        dot.write_png(str(path))
    except AssertionError:  # pydot's report of a crashed `dot` run
        dot.set("splines", "polyline")
        dot.write_png(str(path))
    if show:
        _show(path)
    return path


GRAPHVIZ_INSTALL = (
    "Debian/Ubuntu: sudo apt-get install graphviz; macOS: brew install graphviz; "
    "Windows or conda: conda install graphviz"
)


def graphviz_missing() -> str | None:
    """What is missing to draw diagrams, with the fix (one line), or None when nothing is."""
    import shutil

    try:
        import pydot  # noqa: F401
    except ImportError:
        return (
            "the pydot package is missing. Install it (pip install pydot) and Graphviz "
            f"({GRAPHVIZ_INSTALL})"
        )
    if shutil.which("dot") is None:
        return (
            f"Graphviz's `dot` program is not on the PATH. Install Graphviz ({GRAPHVIZ_INSTALL}); "
            "pip install pydot alone is not enough"
        )
    return None


def block_table(model, *, expand_nested: bool | str | Sequence[str] = False):
    """The blocks of a functional model as a table: a text stand-in for its diagram.

    One row per layer of ``model`` (a block -- a nested model -- is one row): its kind,
    the layers that feed it, its output shape and its parameter count. The layers of the
    blocks chosen by ``expand_nested`` (as in :func:`plot_architecture`) follow their
    block's row, named ``block/layer``.
    """
    import pandas as pd

    opened = _opened(model, expand_nested)
    rows = []
    for layer in model.layers:
        rows.append(_layer_row(layer, layer.name))
        if layer.name in opened:
            rows += [_layer_row(inner, f"{layer.name}/{inner.name}") for inner in layer.layers]
    return pd.DataFrame(rows).set_index("block")


def _opened(model, expand_nested) -> set[str]:
    """Names of the blocks of ``model`` that ``expand_nested`` asks to open."""
    import keras

    blocks = {layer.name for layer in model.layers if isinstance(layer, keras.Model)}
    if expand_nested is True or expand_nested is False:
        return blocks if expand_nested else set()
    names = {expand_nested} if isinstance(expand_nested, str) else set(expand_nested)
    if names - blocks:
        raise ValueError(
            f"expand_nested names {sorted(names - blocks)}, which are not blocks (nested "
            f"models) of {model.name!r}; its blocks are {sorted(blocks)}."
        )
    return names


def _layer_row(layer, name: str) -> dict:
    """One row of :func:`block_table`."""
    import keras

    kind = type(layer).__name__
    if isinstance(layer, keras.Model):
        inner = [x for x in layer.layers if not isinstance(x, keras.layers.InputLayer)]
        kind = f"block of {len(inner)} layers"
    return {
        "block": name,
        "kind": kind,
        "fed by": ", ".join(graph.feeding_layers(layer)) or "-",
        "output shape": ", ".join(str(s) for s in graph.output_shapes(layer)),
        "parameters": layer.count_params() if layer.built else 0,
    }


def _model_dot(model, expand_nested, show_shapes: bool, dpi: int):
    """``keras.utils.model_to_dot`` of ``model``, with the chosen blocks opened."""
    import keras

    kwargs = dict(show_shapes=show_shapes, dpi=dpi)
    if expand_nested is True or expand_nested is False:
        return keras.utils.model_to_dot(model, expand_nested=expand_nested, **kwargs)
    dot = keras.utils.model_to_dot(model, **kwargs)
    for name in sorted(_opened(model, expand_nested)):
        _open_block(dot, model.get_layer(name), show_shapes)
    return dot


def _open_block(dot, block, show_shapes: bool) -> None:
    """Replace ``block``'s box in ``dot`` by a dashed cluster of its layers."""
    import keras
    import pydot

    box = str(id(block))
    entry, exit_ = (str(id(layer)) for layer in graph.block_ends(block))
    for edge in dot.get_edges():
        source, target = edge.get_source(), edge.get_destination()
        if box in (source, target):
            dot.del_edge(source, target)
            new = (source, entry) if target == box else (exit_, target)
            dot.add_edge(pydot.Edge(*new, penwidth="2"))
    dot.del_node(box)
    dot.add_subgraph(keras.utils.model_to_dot(block, show_shapes=show_shapes, subgraph=True))


def _show(obj: Path | object) -> None:
    """Show a picture (its path) or a table in a notebook; elsewhere print the table."""
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:  # no IPython: not in a notebook
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display(Image(str(obj)) if isinstance(obj, Path) else obj)
    elif not isinstance(obj, Path):
        print(obj.to_string())
