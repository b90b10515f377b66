"""A net whose forward takes an optional mask that defaults to None (the shape of timm hiera's forward).

Tracing fixes such an argument to its default (``extractor.auto_concrete_args == ("mask",)``),
so the artifacts take ``x`` alone; naming ``mask`` as an input keeps it one.

Usage:
    >>> from fxexport import get_graph_node_names
    >>> get_graph_node_names(build())[1]
    ['x', 'conv', 'relu']
"""

import torch
from torch import nn


class Masked(nn.Module):
    """``relu(conv(x) * mask)``, or ``relu(conv(x))`` without a mask."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x, mask=None):
        y = self.conv(x)
        if mask is not None:
            y = y * mask
        return y.relu()


def build() -> nn.Module:
    """The seeded net in eval mode."""
    torch.manual_seed(0)
    return Masked().eval()
