"""bench edge: size, onnxruntime latency and accuracy of edge variants vs the fp32 ONNX export.

For each model's extractor (seeded random weights, 224x224, batch 1): export with
``fxexport.export_onnx``, then ``fxexport.edge.optimize`` writes the optimized,
float16 and static-int8 (QDQ, per-channel, calibrated on 16 seeded standard-normal
inputs) variants, verifies them on 3 other standard-normal inputs against the
eager extractor, and times them in onnxruntime against the fp32 file in the same
process (median of interleaved blocks, thread spinning off).

Targets (issue #7): static int8 of mobilenet_v3_large and resnet50 >= 3.5x smaller,
>= 1.5x faster, per-output cosine >= 0.98.

Run: ``.venv/bin/python scripts/bench.py edge [--quick]``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from bench_common import cpu_count

MODELS = {
    "resnet50": {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"},
    "mobilenet_v3_large": {"features.3": "s4", "features.6": "s8", "features.12": "s16", "features.16": "s32"},
}
QUICK = {"resnet18": {"layer3": "c4", "layer4": "c5"}}
TARGET_SIZE, TARGET_SPEED, TARGET_COSINE = 3.5, 1.5, 0.98


def run(args) -> list[dict]:
    from fxexport import create_feature_extractor
    from fxexport.edge import optimize
    from fxexport.export import export_onnx
    from fxexport.models import load_model, model_info

    quick = getattr(args, "quick", False)
    models = QUICK if quick else MODELS
    size = 64 if quick else 224
    blocks, reps = (3, 3) if quick else (11, 5)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as work:
        for name, nodes in models.items():
            spec = f"torchvision:{name}"
            extractor = create_feature_extractor(load_model(spec), nodes).eval()
            src = Path(work) / f"{name}.onnx"
            x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
            t0 = time.perf_counter()
            export_onnx(extractor, x, src, model_info=model_info(spec))
            export_s = time.perf_counter() - t0
            report = optimize(src, fp16=True, int8="static", calibration_random=16, extractor=extractor,
                              blocks=blocks, reps=reps)
            print(report.render())
            for v in report.variants:
                row = {
                    "model": name,
                    "variant": v.name,
                    "MB": v.size_bytes / 2**20,
                    "x_smaller": v.size_ratio,
                    "ms": v.latency_ms,
                    "x_faster": v.speedup,
                    "min_cos": v.min_cosine,
                    "max_err": v.max_error,
                    "cos_per_output": " ".join(f"{o.name}={o.cosine:.4f}" for o in v.outputs if o.cosine is not None),
                    "ok": v.ok,
                    "target": None,
                }
                if v.name == "int8-static":
                    row["target"] = ("met" if v.size_ratio >= TARGET_SIZE and (v.speedup or 0) >= TARGET_SPEED
                                     and (v.min_cosine or 0) >= TARGET_COSINE else "MISSED")
                rows.append(row)
            print(f"{name}: export {export_s:.1f} s, variants {report.timings.get('make.optimized', 0) + report.timings.get('make.fp16', 0) + report.timings.get('make.int8-static', 0):.1f} s, "
                  f"verify {report.timings.get('verify', 0):.1f} s, timing {report.timings.get('measure', 0):.1f} s, {report.threads} threads")
    print(f"cpus: {cpu_count()}")
    return rows
