"""A multi-task net: one shared conv trunk, three heads (classification, segmentation, depth).

The "multi-head model shipped to an edge device" case: export the trunk's features and the
heads' outputs as one artifact with named outputs. Small and CPU-fast (64x64 input).

Usage:
    fxexport nodes models/multitask.py:build --shapes
    fxexport export models/multitask.py:build --node trunk.stage3=features \\
        --node cls_head.fc=logits --node seg_head.interpolate=seg --node depth_head.sigmoid=depth \\
        --onnx multitask.onnx --torchscript multitask.pt --verify

Example:
    >>> import torch
    >>> model = build().eval()
    >>> out = model(torch.rand(2, 3, 64, 64))
    >>> {k: tuple(v.shape) for k, v in out.items()}
    {'logits': (2, 10), 'seg': (2, 5, 64, 64), 'depth': (2, 1, 64, 64)}
"""

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Trunk(nn.Module):
    """Shared encoder: 64x64 -> 32x32 (stage1) -> 16x16 (stage2) -> 8x8 (stage3)."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.stem = conv_bn_relu(3, width)
        self.stage1 = conv_bn_relu(width, width * 2, stride=2)
        self.stage2 = conv_bn_relu(width * 2, width * 4, stride=2)
        self.stage3 = conv_bn_relu(width * 4, width * 8, stride=2)

    def forward(self, x):
        return self.stage3(self.stage2(self.stage1(self.stem(x))))


class ClassificationHead(nn.Module):
    def __init__(self, cin: int, num_classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(x), 1))


class SegmentationHead(nn.Module):
    def __init__(self, cin: int, num_classes: int):
        super().__init__()
        self.block = conv_bn_relu(cin, cin // 2)
        self.out = nn.Conv2d(cin // 2, num_classes, 1)

    def forward(self, x, size):
        return F.interpolate(self.out(self.block(x)), size=size, mode="bilinear", align_corners=False)


class DepthHead(nn.Module):
    def __init__(self, cin: int, width: int):
        super().__init__()
        self.block = conv_bn_relu(cin, width)
        self.out = nn.Conv2d(width, 1, 1)

    def forward(self, x, size):
        up = F.interpolate(self.out(self.block(x)), size=size, mode="bilinear", align_corners=False)
        return torch.sigmoid(up)


class MultiTaskNet(nn.Module):
    """Shared trunk + classification / segmentation / depth heads; returns a dict."""

    example_input_shape = (1, 3, 64, 64)

    def __init__(self, num_classes: int = 10, seg_classes: int = 5, width: int = 16):
        super().__init__()
        self.trunk = Trunk(width)
        self.cls_head = ClassificationHead(width * 8, num_classes)
        self.seg_head = SegmentationHead(width * 8, seg_classes)
        self.depth_head = DepthHead(width * 8, width * 2)

    def forward(self, x):
        feats = self.trunk(x)
        size = x.shape[-2:]
        return {"logits": self.cls_head(feats), "seg": self.seg_head(feats, size),
                "depth": self.depth_head(feats, size)}


def build(num_classes: int = 10, seg_classes: int = 5, width: int = 16, seed: int = 0) -> MultiTaskNet:
    """The multi-task net, seeded by ``seed`` (the same weights for the same seed), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MultiTaskNet(num_classes, seg_classes, width).eval()
