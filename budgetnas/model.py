"""The one builder that turns a spec into an ``nn.Module``.

Every shape is known up front (no ``LazyLinear``), so a model can be counted, summarised
and exported before it sees data.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from budgetnas.spec import CNNSpec, FCNSpec, Spec, feature_shapes

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
}


class Net(nn.Module):
    """``blocks`` (conv blocks, empty for FCNs) followed by ``head`` (flatten/GAP + FC layers).

    Keeping the conv blocks as a separate list lets feature-map tools hook each block.
    """

    def __init__(self, blocks: list[nn.Module], head: nn.Sequential) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def build_model(spec: Spec, input_shape: tuple[int, int, int], num_classes: int) -> Net:
    """Build the network that ``spec`` describes for ``input_shape`` (C, H, W) inputs."""
    from budgetnas.cost import check_model_memory

    check_model_memory(spec, input_shape, num_classes)  # before PyTorch allocates the weights
    if not isinstance(spec, (CNNSpec, FCNSpec)):  # any other family builds its own model
        from budgetnas.families import family_of

        return family_of(spec).build(spec, input_shape, num_classes)
    act = _ACTIVATIONS[spec.activation]
    blocks: list[nn.Module] = []
    head: list[nn.Module] = []
    if isinstance(spec, CNNSpec):
        c_in = input_shape[0]
        for block in spec.conv:
            layers: list[nn.Module] = [nn.Conv2d(c_in, block.out_channels, block.kernel_size, padding=block.padding)]
            if block.batch_norm:
                layers.append(nn.BatchNorm2d(block.out_channels))
            layers.append(act())
            if block.pool:
                layers.append(nn.MaxPool2d(block.pool))
            blocks.append(nn.Sequential(*layers))
            c_in = block.out_channels
        c, h, w = feature_shapes(spec, input_shape)[-1]
        if spec.head == "gap":
            head += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            fan_in = c
        else:
            head.append(nn.Flatten())
            fan_in = c * h * w
        widths, fc_bn = spec.fc, spec.fc_batch_norm
    elif isinstance(spec, FCNSpec):
        head.append(nn.Flatten())
        fan_in = math.prod(input_shape)
        widths, fc_bn = spec.hidden, spec.batch_norm
    else:
        raise TypeError(f"not a spec: {spec!r}")
    for width in widths:
        head.append(nn.Linear(fan_in, width))
        if fc_bn:
            head.append(nn.BatchNorm1d(width))
        head.append(act())
        if spec.dropout:
            head.append(nn.Dropout(spec.dropout))
        fan_in = width
    head.append(nn.Linear(fan_in, num_classes))
    model = Net(blocks, nn.Sequential(*head))
    _initialise(model, spec.init)
    return model


def _initialise(model: nn.Module, init: str) -> None:
    if init == "default":
        return  # PyTorch's own layer defaults, as in the paper's baseline
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if init == "xavier_normal":
                nn.init.xavier_normal_(module.weight)
            elif init == "kaiming":
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:  # efficient families' convs are bias-free (batch norm follows)
                nn.init.zeros_(module.bias)


def trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
