"""A small net whose eval-mode output includes noise (``torch.rand_like``): a stochastic model.

The ``add`` node (features plus uniform noise) differs on every run, even on the same
input, while ``conv`` (the features) is deterministic. No export can match ``add``
value for value, so the export self-check sees two eager runs disagree, checks that
output's name, shape and dtype only, and records it in the manifest
(``extra["nondeterministic_outputs"]``); ``--verify`` then fails for ``add`` with a
note that the reference itself is nondeterministic. Small and CPU-fast (32x32 input).

Command line:
    fxexport export models/noisy.py:build --input-shape 1,3,32,32 --node conv=features --node add=noisy \\
        --onnx noisy.onnx --verify

Usage:
    >>> import torch
    >>> from fxexport import get_graph_node_names, create_feature_extractor
    >>> from models.noisy import build
    >>> get_graph_node_names(build())[1]
    ['x', 'conv', 'rand_like', 'add']
    >>> ex = create_feature_extractor(build(), {"conv": "features", "add": "noisy"})
    >>> x = torch.rand(1, 3, 32, 32)
    >>> a, b = ex(x), ex(x)
    >>> torch.equal(a["features"], b["features"]), torch.equal(a["noisy"], b["noisy"])
    (True, False)
"""

import torch
from torch import nn


class NoisyNet(nn.Module):
    """A 3x3 convolution whose output gets ``U(0, 1)`` noise added, in eval mode too."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y + torch.rand_like(y)


def build(width: int = 8) -> NoisyNet:
    """The noisy net, seeded (same weights on every call), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return NoisyNet(width).eval()
