"""Walking a functional Keras model's graph: the one place that reads Keras's private
graph attributes (``_keras_history``, ``_inbound_nodes``, a Sequential's ``_functional``).

* :func:`task_depths` -- weighted layers on the longest path to each output (DST's depth);
* :func:`depends_on` and :func:`shared_representation` -- the last layer every task's output
  depends on, exposed beside the outputs (what MGDA-UB differentiates);
* :func:`feeding_layers`, :func:`output_shapes` and :func:`block_ends` -- what the diagram
  of a model (:mod:`mtlkit.diagrams`) draws around a layer or a nested block.

Should Keras rename these attributes, this module is the one to change.
"""

from __future__ import annotations

import keras

# ------------------------------------------------------------------------ task depth
WEIGHTED_LAYERS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
    keras.layers.Dense,
    keras.layers.EinsumDense,
)
"""Layer types that :func:`task_depths` counts as one weighted layer each."""


def task_depths(model: keras.Model) -> dict[str, int]:
    """Weighted layers (convolutions, dense) on the longest input-to-output path, per output.

    The functional graph is walked backwards from every output; a nested functional
    model (such as keras-hub's ResNet backbone) is walked through as well, so its layers
    count where they sit on the path. Parallel branches (a ResNet shortcut's 1x1
    convolution beside the two 3x3 convolutions) count only once: the longer branch.
    Only the layer types in :data:`WEIGHTED_LAYERS` count; a subclassed layer that hides
    several of them inside counts as 0 (build the model functionally to count them).

    >>> task_depths(build_cifar100("reuse_coarse"))   # doctest: +SKIP
    {'fine': 13, 'coarse': 10}
    """
    if not getattr(model, "outputs", None):
        raise ValueError(
            f"task_depths needs a functional Keras model (built with keras.Model(inputs, "
            f"outputs)); {type(model).__name__} {model.name!r} has no symbolic outputs. "
            "Build the model functionally, or give DSTScheduler the depths yourself."
        )
    memo: dict[int, int] = {}
    outputs = model.outputs
    names = list(model.output_names)
    return {name: _tensor_depth(t, memo) for name, t in zip(names, outputs)}


def _as_functional(operation):
    """A nested model's functional graph (Sequential keeps one inside), else None."""
    if isinstance(operation, keras.Sequential):
        operation = getattr(operation, "_functional", None)
    if isinstance(operation, keras.Model) and getattr(operation, "outputs", None):
        return operation
    return None


def _tensor_depth(tensor, memo: dict[int, int]) -> int:
    """Longest count of weighted layers from any model input to ``tensor`` (memoised)."""
    key = id(tensor)
    if key in memo:
        return memo[key]
    history = getattr(tensor, "_keras_history", None)
    if history is None:  # a constant, or an input of the outermost model
        return 0
    operation, node_index, tensor_index = history
    node = operation._inbound_nodes[node_index]
    if node.is_input:
        depth = 0
    else:
        parents = [_tensor_depth(t, memo) for t in node.input_tensors]
        inner = _as_functional(operation)
        if inner is None:
            depth = max(parents, default=0) + isinstance(operation, WEIGHTED_LAYERS)
        else:  # seed the nested model's inputs with the depths that reach them
            for inner_input, d in zip(inner.inputs, parents):
                memo[id(inner_input)] = d
            depth = _tensor_depth(inner.outputs[tensor_index], memo)
            for inner_input in inner.inputs:  # the same model may be called again
                memo.pop(id(inner_input), None)
            _forget_inside(inner, memo)
    memo[key] = depth
    return depth


def _forget_inside(model: keras.Model, memo: dict[int, int]) -> None:
    """Drop memoised depths of a nested model's tensors (they depend on its call site)."""
    for layer in model._operations:
        for node in layer._inbound_nodes:
            for t in node.output_tensors:
                memo.pop(id(t), None)


# ------------------------------------------------------------- shared representation
def depends_on(tensor, operation) -> bool:
    """Whether ``operation`` (a top-level layer of the model) lies on ``tensor``'s path."""
    seen, stack = set(), [tensor]
    while stack:
        history = getattr(stack.pop(), "_keras_history", None)
        if history is None or id(history[0]) in seen:
            continue
        if history[0] is operation:
            return True
        seen.add(id(history[0]))
        stack.extend(history[0]._inbound_nodes[history[1]].input_tensors)
    return False


def shared_representation(model: keras.Model, layer: str | None = None) -> keras.Model:
    """A model over the same layers whose outputs are ``(representation, model outputs)``.

    ``layer`` names the layer whose output is the shared representation; by default the
    last layer (in the model's order) on the path to every output.
    """
    chosen = _representation_layer(model, layer)
    return keras.Model(model.inputs, [chosen.output, model.output], name=f"{model.name}_with_z")


def split_at_representation(model: keras.Model, layer: str | None = None) -> tuple:
    """``(trunk, heads)``: two models over the same layers, ``inputs -> representation`` and
    ``representation -> outputs`` (the representation chosen as in
    :func:`shared_representation`). ``heads(trunk(x))`` is ``model(x)``."""
    chosen = _representation_layer(model, layer)
    trunk = keras.Model(model.inputs, chosen.output, name=f"{model.name}_trunk")
    return trunk, keras.Model(chosen.output, model.output, name=f"{model.name}_heads")


def _representation_layer(model: keras.Model, layer: str | None):
    """The layer named ``layer``, or the last layer on the path to every output."""
    candidates = [la for la in model.layers if not isinstance(la, keras.layers.InputLayer)]
    if layer is None:
        common = [la for la in candidates if all(depends_on(o, la) for o in model.outputs)]
        if not common:
            raise ValueError(
                f"No layer of {model.name!r} lies on the path to every task: the tasks share "
                "no representation. Use a method on the shared weights (pcgrad, gradnorm) or "
                "a loss weighting, or name the layer with representation_layer=."
            )
        return common[-1]
    chosen = next((la for la in candidates if la.name == layer), None)
    if chosen is None:
        names = [la.name for la in candidates]
        raise ValueError(f"The model has no layer {layer!r}; its layers are {names}.")
    return chosen


# --------------------------------------------------------------------------- diagrams
def feeding_layers(layer) -> list[str]:
    """Names of the layers whose outputs ``layer`` takes in, each once, in call order."""
    nodes = layer._inbound_nodes
    names = [t._keras_history.operation.name for n in nodes for t in n.input_tensors]
    return list(dict.fromkeys(names))


def output_shapes(layer) -> list[tuple]:
    """The shapes of ``layer``'s outputs at its first call (empty if it was never called)."""
    nodes = layer._inbound_nodes
    return [tuple(t.shape) for t in nodes[0].output_tensors] if nodes else []


def block_ends(block: keras.Model) -> tuple:
    """The first and last layer of a nested block with one input and one output."""
    if len(block.inputs) != 1 or len(block.outputs) != 1:
        raise ValueError(
            f"Only a block with one input and one output can be opened alone, not "
            f"{block.name!r}; use expand_nested=True to open every block."
        )
    return block.inputs[0]._keras_history.operation, block.outputs[0]._keras_history.operation
