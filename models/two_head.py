"""A two-head detector-style net whose heads return nested values (a tuple and a dict).

The case the export layer flattens: make the heads leaf modules and pick them as
nodes, and their outputs are a tuple (``det``: class logits and boxes) and a dict
(``seg``: mask and edge maps). They export as the flat outputs ``det.0``,
``det.1``, ``seg.mask``, ``seg.edge`` beside the plain tensor ``features``.
Small and CPU-fast (64x64 input).

Command line:
    fxexport export models/two_head.py:build --leaf-module DetHead --leaf-module SegHead \\
        --node backbone.2=features --node det_head=det --node seg_head=seg \\
        --dynamic batch --onnx two_head.onnx --torchscript two_head.pt --verify

Usage:
    >>> import torch
    >>> from fxexport import create_feature_extractor
    >>> from models.two_head import DetHead, SegHead, build
    >>> ex = create_feature_extractor(build(), {"backbone.2": "features", "det_head": "det", "seg_head": "seg"},
    ...                               leaf_modules=[DetHead, SegHead])
    >>> out = ex(torch.rand(2, 3, 64, 64))
    >>> [tuple(t.shape) for t in out["det"]], {k: tuple(v.shape) for k, v in out["seg"].items()}
    ([(2, 3, 16, 16), (2, 4, 16, 16)], {'mask': (2, 1, 64, 64), 'edge': (2, 1, 64, 64)})
"""

import torch
import torch.nn.functional as F
from torch import nn


class DetHead(nn.Module):
    """Per-location class logits and box offsets, returned as a tuple ``(logits, boxes)``."""

    def __init__(self, cin: int, num_classes: int = 3):
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(cin, num_classes + 4, 3, padding=1)

    def forward(self, x: torch.Tensor):
        y = self.conv(x)
        return y[:, : self.num_classes], y[:, self.num_classes :]


class SegHead(nn.Module):
    """Full-resolution mask and edge maps, returned as a dict ``{"mask", "edge"}``."""

    def __init__(self, cin: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, 2, 1)

    def forward(self, x: torch.Tensor):
        y = F.interpolate(self.conv(x), scale_factor=4.0, mode="bilinear", align_corners=False)
        return {"mask": torch.sigmoid(y[:, :1]), "edge": y[:, 1:]}


class TwoHeadNet(nn.Module):
    """Backbone (64x64 -> 16x16) shared by a detection head and a segmentation head."""

    def __init__(self, width: int = 16, num_classes: int = 3):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width * 2, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.det_head = DetHead(width * 2, num_classes)
        self.seg_head = SegHead(width * 2)

    def forward(self, x: torch.Tensor):
        f = self.backbone(x)
        return {"det": self.det_head(f), "seg": self.seg_head(f)}


def build(width: int = 16, num_classes: int = 3) -> TwoHeadNet:
    """The two-head net, seeded (same weights on every call), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return TwoHeadNet(width, num_classes).eval()
