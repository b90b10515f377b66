"""bench edge: size, latency and accuracy of edge variants vs their fp32 source, for every backend.

For each model's extractor (seeded random weights, 224x224, batch 1): export with
``fxexport.export_onnx``, then ``fxexport.edge.optimize(..., backends=...)`` writes the
onnxruntime variants (optimized, float16, static int8 QDQ per-channel), the OpenVINO IR
(fp32 and NNCF int8) and the LiteRT model (fp32 and ai-edge-quantizer int8), every int8
calibrated on the same 16 seeded standard-normal inputs; verifies them on 3 other
standard-normal inputs against the eager extractor, and times each in its own runtime
(the fxexport.formats sessions, same thread count) against its fp32 source in the same
process (median of interleaved blocks). ``x_faster`` / ``x_smaller`` are relative to
``vs``: the fp32 file of the same backend. ``verdict`` is the report's: an accurate
int8/fp16 variant slower than its fp32 source is ``slower``, never ``ok``.

Targets: issue #7 (onnxruntime static int8: >= 3.5x smaller, >= 1.5x faster, per-output
cosine >= 0.98), issue #13 (OpenVINO NNCF int8: >= 1.8x faster than the fp32 IR, >= 3.5x
smaller, cosine >= 0.99), issue #14 (LiteRT int8: >= 3.5x smaller, cosine >= 0.99; speed
reported).

Run: ``.venv/bin/python scripts/bench.py edge [--quick]``. ``--quick``: resnet18 at 64x64,
fewer repeats.
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
#: backend -> (x smaller, x faster or None: reported only, min cosine) of its int8 variant
TARGETS = {"onnxruntime": (3.5, 1.5, 0.98), "openvino": (3.5, 1.8, 0.99), "litert": (3.5, None, 0.99)}


def _target(v) -> str | None:
    if v.precision != "int8" or v.name.startswith("ort:"):
        return None
    size, speed, cosine = TARGETS[v.backend]
    met = (v.size_ratio >= size and (speed is None or (v.speedup or 0) >= speed)
           and (v.min_cosine or 0) >= cosine)
    return "met" if met else "MISSED"


def run(args) -> list[dict]:
    from fxexport import create_feature_extractor, export_onnx
    from fxexport.edge import BACKENDS, optimize
    from fxexport.models import load_model, model_info

    quick = getattr(args, "quick", False)
    backends = getattr(args, "backends", None) or BACKENDS
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
                              backends=backends, blocks=blocks, reps=reps)
            print(report.render())
            for v in report.variants:
                rows.append({
                    "model": name,
                    "variant": v.name,
                    "backend": v.backend,
                    "vs": v.baseline,
                    "MB": v.size_bytes / 2**20,
                    "x_smaller": v.size_ratio,
                    "ms": v.latency_ms,
                    "x_faster": v.speedup,
                    "min_cos": v.min_cosine,
                    "max_err": v.max_error,
                    "cos_per_output": " ".join(f"{o.name}={o.cosine:.4f}" for o in v.outputs if o.cosine is not None),
                    "verdict": v.verdict,
                    "target": _target(v),
                })
            made = ", ".join(f"{k.removeprefix('make.')} {t:.1f} s" for k, t in report.timings.items()
                             if k.startswith("make."))
            print(f"{name}: export {export_s:.1f} s; variants: {made}; verify {report.timings.get('verify', 0):.1f} s, "
                  f"timing {report.timings.get('measure', 0):.1f} s, {report.threads} threads")
    print(f"cpus: {cpu_count()}")
    return rows
