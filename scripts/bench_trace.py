"""Tracing benchmark: fxexport vs torchvision's feature_extraction, side by side.

Rows:
* ``trace``: ``get_graph_node_names`` + ``create_feature_extractor`` (three nodes) per
  model; ratio = fxexport time / torchvision time (target <= 1.0; <= 0.5 for
  densenet201 and maxvit_t).
* ``layer2 extractor``: resnet50 extractor returning only ``layer2`` vs the full
  model's forward (batch 8, 224x224; target <= 0.45).

Run: ``python scripts/bench.py trace``
"""

from __future__ import annotations

import warnings

import torch
import torchvision
from torchvision.models import feature_extraction as tv_fx

from bench_common import interleaved

import fxexport

MODELS = ["resnet50", "vit_b_16", "convnext_tiny", "efficientnet_b0", "densenet201", "maxvit_t"]
TARGETS = {"densenet201": 0.5, "maxvit_t": 0.5}


def _pick_nodes(names: list[str]) -> list[str]:
    return [names[len(names) // 4], names[len(names) // 2], names[-1]]


def run(args) -> list[dict]:
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    rows = []
    models = MODELS[:2] if getattr(args, "quick", False) else MODELS
    for name in models:
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None).eval()
        nodes = _pick_nodes(tv_fx.get_graph_node_names(model, suppress_diff_warning=True)[1])

        def ours(model=model, nodes=nodes):
            fxexport.get_graph_node_names(model, suppress_diff_warning=True)
            fxexport.create_feature_extractor(model, nodes, suppress_diff_warning=True)

        def theirs(model=model, nodes=nodes):
            tv_fx.get_graph_node_names(model, suppress_diff_warning=True)
            tv_fx.create_feature_extractor(model, nodes, suppress_diff_warning=True)

        blocks = 3 if getattr(args, "quick", False) else 5
        t = interleaved({"fxexport": ours, "torchvision": theirs}, blocks=blocks, reps=1, warmup=1, gap_s=0.02)
        ratio = t["fxexport"] / t["torchvision"]
        target = TARGETS.get(name, 1.0)
        rows.append({"bench": "trace", "model": name, "fxexport_s": t["fxexport"], "torchvision_s": t["torchvision"],
                     "ratio": ratio, "target": f"<= {target}", "met": ratio <= target})

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    extractor = fxexport.create_feature_extractor(model, ["layer2"])
    x = torch.rand(8, 3, 224, 224)
    with torch.no_grad():
        t = interleaved({"layer2": lambda: extractor(x), "full": lambda: model(x)},
                        blocks=3 if getattr(args, "quick", False) else 5, reps=2, warmup=1, gap_s=0.05)
    ratio = t["layer2"] / t["full"]
    rows.append({"bench": "layer2 extractor", "model": "resnet50 b8 224", "fxexport_s": t["layer2"],
                 "torchvision_s": t["full"], "ratio": ratio, "target": "<= 0.45", "met": ratio <= 0.45})
    return rows
