"""A two-input RGB + depth net: separate stems, a fused trunk, segmentation and depth-refinement heads.

The multi-input case of the export layer: ``forward(rgb, depth)`` takes a colour image
``(N, 3, H, W)`` and a depth map ``(N, 1, H, W)``; the exported artifacts name their inputs
``rgb`` and ``depth`` after those arguments. Convolutions, batch norm, ReLU, channel
concatenation and bilinear upsampling only; the batch dim can be dynamic. LiteRT's
converter (litert-torch 0.10) keeps it so for ``fused`` and ``seg`` but not for the
one-channel ``depth`` map, whose NHWC -> NCHW reshape gets the example's batch baked in:
``fxexport.formats.litert.export`` says so in one line instead of writing a file that is
wrong at other batch sizes. Small and CPU-fast (64x64 input).

Nodes worth exporting: ``rgb_stem`` and ``depth_stem`` (each 32x32), ``fuse`` (16x16, the
joint features), ``seg_head.interpolate`` (the segmentation logits, 64x64) and ``refine.sigmoid``
(the refined depth, 64x64). The command line takes one input shape, so export it from
Python with a tuple of example inputs (:func:`example_inputs`).

Usage:
    >>> import torch
    >>> from fxexport import create_feature_extractor
    >>> from models.rgbd import build, example_inputs
    >>> nodes = {"fuse": "fused", "seg_head.interpolate": "seg", "refine.sigmoid": "depth"}
    >>> ex = create_feature_extractor(build(), nodes)
    >>> rgb, depth = example_inputs(batch=2)
    >>> {k: tuple(v.shape) for k, v in ex(rgb, depth).items()}
    {'fused': (2, 32, 16, 16), 'seg': (2, 5, 64, 64), 'depth': (2, 1, 64, 64)}
"""

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class SegHead(nn.Module):
    """Per-pixel class logits at full resolution: conv block, 1x1 conv, 4x bilinear upsampling."""

    def __init__(self, cin: int, num_classes: int):
        super().__init__()
        self.block = conv_bn_relu(cin, cin // 2)
        self.classifier = nn.Conv2d(cin // 2, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.classifier(self.block(x)), scale_factor=4.0, mode="bilinear", align_corners=False)


class Refine(nn.Module):
    """Depth from the depth stem's features (strided conv to the fused resolution), corrected by a
    residual predicted from the fused features, upsampled back and squashed to (0, 1)."""

    def __init__(self, cin: int, cdepth: int):
        super().__init__()
        self.residual = nn.Conv2d(cin, 1, 3, padding=1)
        self.skip = nn.Conv2d(cdepth, 1, 3, stride=2, padding=1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, fused: torch.Tensor, depth_features: torch.Tensor) -> torch.Tensor:
        coarse = self.skip(depth_features) + self.residual(fused)
        return self.sigmoid(F.interpolate(coarse, scale_factor=4.0, mode="bilinear", align_corners=False))


class RGBDNet(nn.Module):
    """RGB stem (3 -> width) and depth stem (1 -> width / 2), concatenated and fused (stride 4 in all)."""

    #: the example inputs' shapes, in forward's order (rgb, depth)
    example_input_shapes = ((1, 3, 64, 64), (1, 1, 64, 64))

    def __init__(self, width: int = 16, num_classes: int = 5):
        super().__init__()
        self.rgb_stem = conv_bn_relu(3, width, stride=2)
        self.depth_stem = conv_bn_relu(1, width // 2, stride=2)
        self.fuse = conv_bn_relu(width + width // 2, width * 2, stride=2)
        self.seg_head = SegHead(width * 2, num_classes)
        self.refine = Refine(width * 2, width // 2)

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> dict[str, torch.Tensor]:
        depth_features = self.depth_stem(depth)
        fused = self.fuse(torch.cat([self.rgb_stem(rgb), depth_features], dim=1))
        return {"seg": self.seg_head(fused), "depth": self.refine(fused, depth_features)}


def build(width: int = 16, num_classes: int = 5, seed: int = 0) -> RGBDNet:
    """The RGB + depth net, seeded by ``seed`` (the same weights for the same seed), in eval mode.

    Batch-norm statistics are seeded too (not the identity), so folding them is exercised.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = RGBDNet(width, num_classes)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        return net.eval()


def example_inputs(batch: int = 1, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded ``(rgb, depth)``: standard-normal colour, depth uniform in [0, 1).

    Example:
        >>> [tuple(t.shape) for t in example_inputs(batch=2, size=32)]
        [(2, 3, 32, 32), (2, 1, 32, 32)]
    """
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=g), torch.rand(batch, 1, size, size, generator=g)
