"""The trained model as an ONNX file, checked by running it with onnxruntime.

Why ONNX beside ``torch.export``: a ``.pt2`` program needs torch to run; an ``.onnx`` file
runs in onnxruntime, browsers, mobile runtimes and most inference servers. The exported
graph is :func:`budgetnas.export.deployable` (the normalisation included), so the contract is
the same as the ``.pt2`` file's: float images (N, C, H, W) in [0, 1] in, class logits out,
any batch size (input ``images``, output ``logits``).

Why the check: an exporter can silently change numerics (an unsupported op rewritten, a
constant folded wrongly). :func:`export_onnx` runs the written file with onnxruntime on a
batch of real images and compares the logits with the torch model's; a mismatch raises
:class:`~budgetnas.errors.RunFailure` instead of leaving a wrong file behind.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from budgetnas.data import Data
from budgetnas.errors import RunFailure
from budgetnas.export import deployable
from budgetnas.trainer import Recipe

TOLERANCE = 1e-4  # max |logit difference| allowed between onnxruntime and torch (float32)


def export_onnx(model: nn.Module, data: Data, recipe: Recipe, path: str | Path,
                images: torch.Tensor | None = None) -> Path:
    """Write ``model`` (with its normalisation) to ``path`` as ONNX and check it with onnxruntime.

    ``images``: uint8 images (N, C, H, W) for the check (default: the first 64 validation images).
    """
    path = Path(path)
    module = deployable(model, data, recipe)
    example = torch.rand(2, *data.input_shape)
    with warnings.catch_warnings():  # the exporter's own chatter; a real failure raises
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), input_names=["images"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 20)},), dynamo=True,
                          verbose=False, external_data=False)  # one self-contained file (the weights inside:
    # budgets stop far below protobuf's 2 GB), not model.onnx beside a model.onnx.data that must travel with it
    batch = (images if images is not None else data.val.x[:64]).float() / 255
    difference = max_difference(module, path, batch)
    if not difference <= TOLERANCE:
        path.unlink(missing_ok=True)
        raise RunFailure(f"the ONNX export of the model differs from it by {difference:.2g} (> {TOLERANCE:g}) "
                         "on a test batch; not written")
    return path


def max_difference(module: nn.Module, path: str | Path, images: torch.Tensor) -> float:
    """Largest |logit difference| between ``module`` and the ONNX file at ``path`` on [0, 1] ``images``."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"images": images.numpy().astype(np.float32)})
    with torch.inference_mode():
        expected = module(images).numpy()
    return float(np.abs(got - expected).max())
