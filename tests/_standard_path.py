"""Run a training notebook on its Colab path (the standard profile), offline and small.

The standard profile reads the real datasets through TensorFlow Datasets and loads the
pretrained ResNet18 with keras-hub, neither of which can be reached here. The notebook is
executed unchanged apart from one cell inserted after its parameters, which

* enters ``tfds.testing.mock_data`` for the rest of the kernel's life, so ``tfds.load``
  hands out random records built from each dataset's own features (no download), and
* shrinks the standard profile in place (``studies.CIFAR_PROFILES`` and
  ``studies.CELEBA_PROFILES``): one epoch, a few dozen images, 32-pixel faces, and
* (``EAGER``) runs the training and evaluation steps eagerly: with one step per epoch,
  tracing the steps into graphs is most of a run's cost (a one-step CelebA run with PCGrad:
  21 s of CPU in graph mode, 10 s eagerly; a CIFAR-100 run: 7 s and 3 s). The graph-mode
  steps run in the quick-profile notebook runs, on the same code; the input pipelines
  (``tf.data``) are traced here all the same.

Everything else is the standard path: ``source="tfds"`` chosen by the settings functions,
``weights="imagenet"`` loaded from the preset named by ``MTLKIT_RESNET18_PRESET`` (a local
folder written by ``save_to_preset`` in the test). It proves that the path runs end to end;
its numbers mean nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import papermill

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

MOCK_EXAMPLES = 40
"""Records in every split of every mocked TFDS dataset: CIFAR-100's 80/20 split of the
training records gives 32 training and 8 validation images; CelebA's three splits get 40."""

CIFAR_SHRINK = dict(epochs=1, train_limit=32, eval_limit=8)
CELEBA_SHRINK = dict(epochs=1, image_size=32, train_limit=32, eval_limit=16)
"""What replaces the standard profile's sizes (the seeds are chosen per notebook)."""

EAGER = True
"""Run ``tf.function`` steps eagerly in the executed notebooks (see the module's docstring)."""

SETUP_TAG = "standard-path-setup"

SETUP = """\
# Inserted by tests/test_standard_path.py: TFDS mocked, the standard profile shrunk.
import tensorflow as tf
import tensorflow_datasets as tfds

from mtlkit import studies

assert PROFILE == "standard", PROFILE
_mock = tfds.testing.mock_data(num_examples={examples},
                               policy=tfds.testing.MockPolicy.USE_CODE)
_mock.__enter__()  # left open: every later cell reads the mocked records
studies.CIFAR_PROFILES["standard"].update({cifar})
for _study in studies.CELEBA_PROFILES.values():
    _study["standard"].update({celeba})
tf.config.run_functions_eagerly({eager})
"""


def numbered_notebooks() -> list[Path]:
    """Every numbered notebook (``NN_name.ipynb``)."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def training_notebooks() -> list[Path]:
    """The numbered notebooks from 02 on (01 only builds and draws the architectures)."""
    return [path for path in numbered_notebooks() if int(path.name[:2]) >= 2]


def parameters_cell(notebook: Path) -> nbformat.NotebookNode:
    """The notebook's one cell tagged ``parameters`` (papermill's), or a clear error."""
    nb = nbformat.read(notebook, as_version=4)
    return nb.cells[_parameters_index(nb, notebook.name)]


def _parameters_index(nb: nbformat.NotebookNode, name: str) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"{name}: {len(tagged)} cells tagged 'parameters', expected 1")
    return tagged[0]


def setup_source(seeds: tuple[int, ...]) -> str:
    """The inserted cell's code, with ``seeds`` as every standard profile's seeds."""
    return SETUP.format(
        examples=MOCK_EXAMPLES,
        cifar=repr({**CIFAR_SHRINK, "seeds": seeds}),
        celeba=repr({**CELEBA_SHRINK, "seeds": seeds}),
        eager=EAGER,
    )


def with_setup(notebook: Path, destination: Path, seeds: tuple[int, ...]) -> Path:
    """Write a copy of ``notebook`` with the setup cell right after its parameters cell."""
    nb = nbformat.read(notebook, as_version=4)
    position = _parameters_index(nb, notebook.name) + 1
    cell = nbformat.v4.new_code_cell(setup_source(seeds))
    cell.metadata["tags"] = [SETUP_TAG]
    cell.id = SETUP_TAG
    nb.cells.insert(position, cell)
    nbformat.write(nb, destination)
    return destination


def execute(notebook: Path, output: Path, timeout: int = 600, parameters=None) -> None:
    """Execute ``notebook`` in the standard profile, in notebooks/, as the CLI would.

    Raises papermill's ``PapermillExecutionError`` (the failing cell and its error) when a
    cell fails.
    """
    papermill.execute_notebook(
        str(notebook),
        str(output),
        parameters={"PROFILE": "standard", **(parameters or {})},
        cwd=str(NOTEBOOKS),
        kernel_name="python3",
        progress_bar=False,
        execution_timeout=timeout,
    )


def failure_summary(err: papermill.PapermillExecutionError, executed: Path) -> str:
    """A short account of a failed cell: its id in the notebook, its error, the last frames."""
    cell_id = nbformat.read(executed, as_version=4).cells[err.cell_index].get("id", "?")
    frames = "\n".join(err.traceback[-4:])
    frames = re.sub(r"\x1b\[[0-9;]*m", "", frames)  # the kernel's colour codes
    first = err.source.strip().splitlines()[0] if err.source.strip() else ""
    return f"cell id {cell_id!r} ({first!r}): {err.ename}: {err.evalue}\n{frames}"


def stored_runs(runs_dir: Path) -> list[dict]:
    """The metadata of every run a notebook stored (``history.json`` files), with its folder."""
    found = []
    for path in sorted(runs_dir.rglob("history.json")):
        metadata = json.loads(path.read_text()).get("metadata") or {}
        found.append({"folder": str(path.parent.relative_to(runs_dir)), **metadata})
    return found


def printed_text(executed: Path) -> str:
    """Everything the executed notebook printed or displayed as text."""
    parts = []
    for cell in nbformat.read(executed, as_version=4).cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "data" in out:
                parts.append(out["data"].get("text/plain", ""))
    return "\n".join(parts)


def slowest_cells(executed: Path, n: int = 3) -> str:
    """The ``n`` slowest cells of an executed notebook, as papermill timed them."""
    cells = nbformat.read(executed, as_version=4).cells
    timed = [(c.metadata.get("papermill", {}).get("duration") or 0.0, i)
             for i, c in enumerate(cells)]  # fmt: skip
    return ", ".join(f"cell {i}: {s:.1f} s" for s, i in sorted(timed, reverse=True)[:n])
