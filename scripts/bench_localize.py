"""Benchmark of ``verify(..., localize=True)``: what localizing a mismatch costs on top of a plain verify.

Model: torchvision resnet50 (seeded random weights, batch-norm statistics randomized so that folding
matters), nodes layer1..layer4, exported to ONNX with dynamic batch (TorchScript-based exporter);
``verify(onnx, extractor, n_inputs=3)`` runs batch 1, 3, 1 at 224x224 (``--quick``: resnet18 at 64x64).
Two artifacts:

* ``faithful`` -- the export as written: verify passes, and with ``localize=True`` the first
  input is localized anyway, so every mapped node is compared (the worst case);
* ``tampered`` -- one weight of ``layer3.0.conv1`` scaled by 1.5 after export: verify fails, and
  the localization stops after the chunk that holds ``layer3.0.bn1``;
* ``openvino IR`` -- the same extractor as an OpenVINO IR (``formats.openvino.export``), verified and
  localized in OpenVINO: faithful, so every mapped node is compared (the worst case).

Each row pairs a plain verify with a verify that localizes, on the same artifact, measured as
the median of interleaved blocks (:func:`bench_common.interleaved`: the order rotates per block,
with gaps); ``x plain`` is the ratio (target: below 3). The localization's own phases (median
seconds) and the peak RSS follow.

Run: ``python scripts/bench_localize.py [--quick] [--json FILE]`` (or through ``scripts/bench.py``
once ``localize`` is among its suites).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import cpu_count, interleaved, peak_rss_mb, print_table  # noqa: E402


def _tamper(src: Path, dst: Path) -> None:
    """``dst``: ``src`` with the weight feeding ``layer3.0.bn1``'s value (the folded Conv) scaled by 1.5."""
    import onnx
    from onnx import numpy_helper

    from fxexport.formats.onnx import read_manifest

    value = dict(read_manifest(src).extra["node_values"])["layer3_0_bn1"]
    model = onnx.load(str(src))
    conv = next(n for n in model.graph.node if value in n.output)
    weight = next(t for t in model.graph.initializer if t.name == conv.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
    onnx.save(model, str(dst))


def run(args) -> list[dict]:
    import torchvision

    from fxexport import create_feature_extractor
    from fxexport.formats import openvino
    from fxexport.formats.onnx import export_onnx
    from fxexport.verification import verify

    quick = getattr(args, "quick", False)
    name, size = ("resnet18", 64) if quick else ("resnet50", 224)
    blocks = 3
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    extractor = create_feature_extractor(model, {f"layer{i}": f"feat{i}" for i in range(1, 5)}).eval()

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        faithful, tampered = Path(tmp) / "bench.onnx", Path(tmp) / "bench.tampered.onnx"
        t0 = time.perf_counter()
        export_onnx(extractor, torch.randn(2, 3, size, size), faithful, dynamic=("batch",), exporter="torchscript")
        export_s = time.perf_counter() - t0
        _tamper(faithful, tampered)
        ir = Path(tmp) / "bench.xml"
        openvino.export(extractor, torch.randn(2, 3, size, size), ir, dynamic=("batch",))

        results: dict[str, list] = {}

        def runner(key: str, path: Path, localize: bool, want_ok: bool):
            def once():
                report = verify(path, extractor, n_inputs=3, localize=localize)
                assert report.ok == want_ok, report.render()
                if localize:
                    (loc,) = report.localization
                    assert loc.diverged == (not want_ok), loc.render()
                results.setdefault(key, []).append(report)
            return once

        fns = {
            "faithful: plain": runner("faithful: plain", faithful, False, True),
            "faithful: localize": runner("faithful: localize", faithful, True, True),
            "tampered: plain": runner("tampered: plain", tampered, False, False),
            "tampered: localize": runner("tampered: localize", tampered, True, False),
            "openvino IR: plain": runner("openvino IR: plain", ir, False, True),
            "openvino IR: localize": runner("openvino IR: localize", ir, True, True),
        }
        med = interleaved(fns, blocks=blocks, reps=1, warmup=1, gap_s=0.5)

    case = f"{name} layer1..4 @{size}, verify batch 1,3,1, {cpu_count()} cores"
    for artifact in ("faithful", "tampered", "openvino IR"):
        plain, loc = med[f"{artifact}: plain"], med[f"{artifact}: localize"]
        reports = results[f"{artifact}: localize"][1:]  # without the warm-up call
        first = reports[-1].localization[0]
        rows.append({"case": case, "artifact": artifact, "what": "verify (plain)", "seconds": plain, "x plain": 1.0,
                     "detail": "ok" if reports[-1].ok else "mismatch"})
        where = first.first.node if first.first is not None else "no divergence"
        rows.append({"case": case, "artifact": artifact, "what": "verify, localize=True", "seconds": loc,
                     "x plain": loc / plain,
                     "detail": f"{where}; {first.compared}/{first.mapped} nodes compared"})
        phases = sorted({k for r in reports for k in r.localization[0].timings})
        for phase in phases:
            seconds = statistics.median(r.localization[0].timings.get(phase, 0.0) for r in reports)
            rows.append({"case": case, "artifact": artifact, "what": f"localize: {phase}", "seconds": seconds,
                         "x plain": seconds / plain, "detail": None})
    rows.append({"case": case, "artifact": None, "what": "export (not part of verify)", "seconds": export_s,
                 "x plain": None, "detail": None})
    rows.append({"case": case, "artifact": None, "what": "peak RSS MiB", "seconds": peak_rss_mb(), "x plain": None,
                 "detail": None})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="resnet18 at 64x64 (a smoke run)")
    parser.add_argument("--json", default="bench-localize.json", help="write the rows here")
    args = parser.parse_args(argv)
    rows = run(args)
    print_table("bench localize", rows)
    Path(args.json).write_text(json.dumps({"localize": rows}, indent=2, default=str))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
