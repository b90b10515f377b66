"""A net that cannot be traced as is: one block branches on a tensor's *value*.

``Gate.forward`` does ``if x.mean() > 0`` -- torch.fx cannot trace control flow that
depends on tensor values (it raises "symbolically traced variables cannot be used as
inputs to control flow"). Mark the block as a *leaf module*: tracing then records one
call to ``Gate`` instead of looking inside it, and the node ``gate`` (its output) can
still be extracted.

Library:
    >>> import torch
    >>> from fxexport import get_graph_node_names, create_feature_extractor
    >>> model = build()
    >>> train_nodes, eval_nodes = get_graph_node_names(model, leaf_modules=[Gate])
    >>> "gate" in eval_nodes and "gate.pool" not in eval_nodes
    True
    >>> extractor = create_feature_extractor(
    ...     model, return_nodes={"features.1": "early", "gate": "gated"},
    ...     tracer_kwargs={"leaf_modules": [Gate]})
    >>> {k: tuple(v.shape) for k, v in extractor(torch.rand(1, 3, 32, 32)).items()}
    {'early': (1, 16, 16, 16), 'gated': (1, 32, 8, 8)}

Command line (``--leaf-module`` takes the class name):
    fxexport nodes models/needs_leaf.py:build --leaf-module Gate
    fxexport export models/needs_leaf.py:build --leaf-module Gate --node gate=gated --onnx gated.onnx
"""

import torch
from torch import nn


class Gate(nn.Module):
    """Data-dependent branch: untraceable by torch.fx unless it is a leaf module."""

    def __init__(self, channels: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.scale = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        if x.mean() > 0:  # control flow on a tensor value
            return x * torch.sigmoid(self.scale(self.pool(x)))
        return x


class GatedNet(nn.Module):
    example_input_shape = (1, 3, 32, 32)

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.gate = Gate(32)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.gate(self.features(x))
        return self.head(x.mean(dim=(2, 3)))


def build(num_classes: int = 10, seed: int = 0) -> GatedNet:
    """The gated net, seeded by ``seed`` (the same weights for the same seed), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GatedNet(num_classes).eval()
