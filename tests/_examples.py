"""Small seeded extractors the export tests share."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from fxexport import create_feature_extractor

ROOT = Path(__file__).resolve().parents[1]
R18_NODES = {"layer1": "feat1", "layer2": "feat2", "layer3": "feat3", "layer4": "feat4"}


def load_example_model(name: str):
    """The module ``models/NAME.py`` (the example models users copy)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "models" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_two_head():
    """The ``models/two_head.py`` module (a tuple head and a dict head)."""
    return load_example_model("two_head")


def two_head_extractor():
    """Features, a tuple-valued head (``det``) and a dict-valued head (``seg``) of the two-head net."""
    th = load_two_head()
    return create_feature_extractor(th.build(), {"backbone.2": "features", "det_head": "det", "seg_head": "seg"},
                                    leaf_modules=[th.DetHead, th.SegHead])


def randomize_batch_norm(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with non-trivial batch-norm statistics and affine terms (so folding into convolutions matters)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def bn_resnet18(nodes):
    """Seeded torchvision resnet18 with non-trivial batch norms, and its extractor of ``nodes`` (both eval)."""
    import torchvision

    torch.manual_seed(0)
    model = randomize_batch_norm(torchvision.models.resnet18()).eval()
    return model, create_feature_extractor(model, nodes).eval()
