"""Zero-cost proxies: training-free scores of a candidate at initialisation, from one mini-batch.

A proxy ranks candidates before any of them trains. Whether that ranking agrees with the
accuracy after training is an empirical question for *this* space (the literature measured
it on NAS-Bench cells, not on budget-fitted CNNs/FCNs), so the scores are only used where
``benchmarks/proxy_correlation.py`` shows they pay; see ``benchmarks/results/proxy_correlation.md``.

Three scores, each computed on the model the trainer would train (``torch.manual_seed(seed)``
then :func:`~budgetnas.model.build_model`, as :mod:`budgetnas.trainer` does), on a copy, so
the caller's model is never changed:

``synflow`` (Tanaka et al. 2020; as in SamsungLabs' zero-cost-nas)
    Every parameter is replaced by its absolute value, batch norm is removed (replaced by the
    identity: batch statistics of an all-ones input are degenerate) and dropout is off
    (eval mode); an all-ones input goes through in float64 (products of many positive
    weights overflow float32); ``R = sum(output)`` is back-propagated and the score is
    ``sum |w * dR/dw|`` over the weights of every conv and linear layer (biases excluded,
    as in the reference). Data-independent: the batch only gives the input shape.
``naswot`` (Mellor et al. 2021, "Neural Architecture Search without Training")
    For each activation unit the binary code ``pre-activation > 0`` of every image of the
    batch; the kernel ``K = C C^T + (1-C)(1-C)^T`` (Hamming similarity, summed over all
    activation layers) and the score ``log|det K|``. Higher means the net separates the
    images into more distinct linear regions. The paper defines it for ReLU; here every
    activation module's input is coded by its sign (for leaky ReLU, ELU, GELU, SiLU and
    tanh that is the natural analogue). Training mode (batch statistics), as the reference.
``grad_norm`` (Abdelfattah et al. 2021)
    Cross-entropy of the batch at initialisation, back-propagated; the score is the sum over
    conv and linear layers of the L2 norm of the weight gradient.

Higher is "better" for all three. Scores are deterministic for a fixed spec, seed and batch.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from budgetnas.errors import UsageError
from budgetnas.families import describe as describe_spec
from budgetnas.model import _ACTIVATIONS, build_model
from budgetnas.spec import Spec

PROXIES = ("synflow", "naswot", "grad_norm")
PROXY_BATCH = 128  # the NASWOT paper's batch size; one batch is all a proxy sees

_WEIGHTED = (nn.Conv2d, nn.Linear)
_ACTIVATION_TYPES = tuple(set(_ACTIVATIONS.values()))


def check_proxy(name: str) -> str:
    if name not in PROXIES:
        raise UsageError(f"unknown proxy {name!r}; choose one of {', '.join(PROXIES)}")
    return name


def synflow(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    """Synaptic flow of ``model`` (see the module docstring); ``x`` gives only the input shape."""
    net = _without_batch_norm(copy.deepcopy(model)).double().eval()
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    net.zero_grad(set_to_none=True)
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    net(ones).sum().backward()
    total = 0.0
    for layer in net.modules():
        if isinstance(layer, _WEIGHTED) and layer.weight.grad is not None:
            total += float((layer.weight.detach() * layer.weight.grad).abs().sum())
    return total


def naswot(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    """log|det K| of the binary activation-code kernel over the images of ``x``."""
    net = copy.deepcopy(model).train()
    n = x.shape[0]
    kernel = torch.zeros((n, n), dtype=torch.float64)

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        codes = (inputs[0].detach().reshape(n, -1) > 0).to(torch.float64)
        kernel.add_(codes @ codes.T + (1 - codes) @ (1 - codes).T)

    handles = [m.register_forward_pre_hook(hook) for m in net.modules() if isinstance(m, _ACTIVATION_TYPES)]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for handle in handles:
            handle.remove()
    sign, logdet = np.linalg.slogdet(kernel.numpy())
    return float(logdet) if sign > 0 else -math.inf  # a singular kernel: images the net cannot tell apart


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    """Sum over conv/linear layers of ||dL/dw||_2 for the cross-entropy of the batch."""
    if y is None:
        raise UsageError("grad_norm needs the batch's labels")
    net = copy.deepcopy(model).train()
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()
    return float(sum(float(m.weight.grad.norm()) for m in net.modules()
                     if isinstance(m, _WEIGHTED) and m.weight.grad is not None))


SCORES: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor | None], float]] = {
    "synflow": synflow, "naswot": naswot, "grad_norm": grad_norm}


def score(name: str, spec: Spec, x: torch.Tensor, y: torch.Tensor, num_classes: int, seed: int = 0) -> float:
    """Proxy ``name`` of ``spec`` as the trainer would initialise it with ``seed``, on the batch (x, y).

    ``x`` is a prepared float batch (N, C, H, W), normalised as the trainer normalises (see
    :func:`proxy_batch`). The global RNG state is restored afterwards, so scoring a candidate
    does not change what a later training run draws (and dropout masks are seeded).
    """
    check_proxy(name)
    with torch.random.fork_rng(devices=[]):  # dropout masks are seeded too, and the caller's RNG is untouched
        torch.manual_seed(seed)
        model = build_model(spec, tuple(x.shape[1:]), num_classes)
        return SCORES[name](model, x, y)


def proxy_batch(images: torch.Tensor, labels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
                size: int = PROXY_BATCH, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random batch of ``size`` training images as float inputs standardised like the trainer's."""
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(labels), generator=generator)[:size]
    x = images[idx].to(torch.float32).div_(255)
    x = x.sub_(torch.tensor(mean).view(1, -1, 1, 1)).div_(torch.tensor(std).view(1, -1, 1, 1))
    return x, labels[idx]


def _without_batch_norm(model: nn.Module) -> nn.Module:
    """``model`` with every batch-norm layer replaced by the identity (in place)."""
    for parent in list(model.modules()):
        for key, child in list(parent._modules.items()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                parent._modules[key] = nn.Identity()
    return model


SCREEN_ATTR = "proxy_score"  # trial user attribute: the candidate's score under the study's --proxy
SCREEN_PROXY_ATTR = "proxy_name"  # and which proxy gave it: a resumed study may use another --proxy
MIN_SCORED = 5  # no candidate is screened out before this many earlier candidates were scored


class ProxyScreen:
    """``--proxy NAME --proxy-screen FRACTION``: score each candidate before training; reject it when
    its score is below the ``FRACTION`` quantile of the scores of the study's earlier candidates.

    Why a quantile of earlier candidates rather than "sample K, train the best": Optuna's sampler
    proposes one candidate per trial, and a rejected trial is the signal that teaches TPE to
    avoid that region (as the budget and compute caps do). Enqueued starting points are never
    screened out; with ``FRACTION = 0`` the score is only recorded (user attribute ``proxy_score``).
    """

    def __init__(self, name: str, fraction: float, images: torch.Tensor, labels: torch.Tensor,
                 mean: tuple[float, ...], std: tuple[float, ...], num_classes: int, seed: int = 0) -> None:
        check_screen(name, fraction)
        self.name = name
        self.fraction = fraction
        self.num_classes = num_classes
        self.seed = seed
        self.x, self.y = proxy_batch(images, labels, mean, std, seed=seed)

    def check(self, spec: Spec, earlier: list[float], enqueued: bool = False) -> tuple[float, str | None]:
        """(score, reason to reject or None) of ``spec`` against the ``earlier`` candidates' scores."""
        value = score(self.name, spec, self.x, self.y, self.num_classes, seed=self.seed)
        if enqueued or self.fraction == 0 or len(earlier) < MIN_SCORED:
            return value, None
        threshold = float(np.quantile(np.asarray(earlier, dtype=float), self.fraction, method="lower"))  # -inf safe
        if value < threshold:
            return value, (f"{self.name} {value:.4g} below the {self.fraction:.0%} quantile {threshold:.4g} "
                           f"of {len(earlier)} earlier candidates: {describe_spec(spec)}")
        return value, None


def check_screen(proxy: str | None, fraction: float) -> None:
    """The ``--proxy`` / ``--proxy-screen`` pair, checked before anything is loaded."""
    if proxy is not None:
        check_proxy(proxy)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise UsageError(f"--proxy-screen must be a fraction in [0, 1), got {fraction!r}")
    if fraction and proxy is None:
        raise UsageError("--proxy-screen needs --proxy NAME (the score to screen by)")
