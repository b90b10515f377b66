"""Benchmark of ``fxexport.verify``: where the time goes, and how it compares to the bare runs.

Model: torchvision resnet50 (seeded random weights), nodes layer1..layer4, exported to
ONNX (dynamic batch) and TorchScript; ``verify([onnx, pt], extractor, n_inputs=3)`` runs
batch 1, 3, 1 at 224x224 (``--quick``: resnet18 at 64x64).

Rows:
  * one per phase of a verify call (median of the calls): reference (eager extractor),
    each runtime's load and run, comparison, other (manifest reading, inputs, report);
  * ``bare runs``: the same forward passes without verify -- eager extractor + warm
    onnxruntime session + warm TorchScript module on the same inputs -- the anchor;
    ``x bare`` is a row's wall time over it. verify and the bare passes run interleaved
    (:func:`bench_common.interleaved`); ``cpu s`` (process CPU seconds, all threads) is the
    steadier figure on a machine shared with other work.

Run: ``python scripts/bench.py verify [--quick]``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench_common import cpu_count, interleaved, peak_rss_mb


def _export(extractor, example, folder: Path, nodes):
    """ONNX + TorchScript artifacts written by fxexport's format modules."""
    from fxexport.formats.onnx import export_onnx
    from fxexport.formats.torchscript import export_torchscript

    onnx_path, ts_path = folder / "bench.onnx", folder / "bench.pt"
    export_onnx(extractor, (example,), onnx_path, dynamic=("batch",))
    export_torchscript(extractor, (example,), ts_path)
    return onnx_path, ts_path, "fxexport"


def run(args) -> list[dict]:
    import torchvision

    from fxexport import create_feature_extractor
    from fxexport.formats import open_session, read_manifest
    from fxexport.verification import make_inputs, verify

    quick = getattr(args, "quick", False)
    name, size = ("resnet18", 64) if quick else ("resnet50", 224)
    repeats = 3 if quick else 5
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    nodes = {f"layer{i}": f"feat{i}" for i in range(1, 5)}
    extractor = create_feature_extractor(model, nodes).eval()
    example = torch.randn(2, 3, size, size)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        onnx_path, ts_path, how = _export(extractor, example, Path(tmp), nodes)
        export_s = time.perf_counter() - t0

        manifest = read_manifest(str(onnx_path))
        inputs = make_inputs(manifest, n_inputs=3)
        ort_session = open_session(onnx_path, manifest)
        ts_session = open_session(ts_path, read_manifest(str(ts_path)))
        reports: list[dict] = []

        def run_verify():
            report = verify([onnx_path, ts_path], extractor, n_inputs=3)
            assert report.ok, report.render()
            reports.append(dict(report.timings))

        def eager():
            with torch.inference_mode():
                for x in inputs:
                    extractor(*x)

        def ort():
            for x in inputs:
                ort_session.run(list(x))

        def ts():
            for x in inputs:
                ts_session.run(list(x))

        # verify and the bare passes it makes (eager + onnxruntime + TorchScript on the same 3 inputs,
        # warm sessions), interleaved in the same blocks so that machine load hits both alike; CPU
        # seconds (all threads) are recorded too: on a shared machine they vary less than wall time
        cpu: dict[str, list[float]] = {}

        def with_cpu(name, fn):
            def timed():
                c = time.process_time()
                fn()
                cpu.setdefault(name, []).append(time.process_time() - c)
            return timed

        fns = {"verify": run_verify, "eager": eager, "onnxruntime": ort, "torchscript": ts}
        med_s = interleaved({k: with_cpu(k, f) for k, f in fns.items()}, blocks=repeats, reps=1, warmup=1, gap_s=0.2)
        med_cpu = {k: statistics.median(v[1:]) for k, v in cpu.items()}  # without the warm-up call
        reports = reports[1:]
        bare = {k: med_s[k] for k in ("eager", "onnxruntime", "torchscript")}
        bare_total = sum(bare.values())
        bare_cpu = sum(med_cpu[k] for k in bare)
        phases = ["reference", "onnxruntime.load", "onnxruntime.run", "torchscript.load", "torchscript.run", "compare"]
        for t in reports:  # manifest reading, input generation, report building
            t["other"] = t["total"] - sum(t.get(p, 0.0) for p in phases)
        med = {p: statistics.median(t.get(p, 0.0) for t in reports) for p in [*phases, "other"]}
        total = statistics.median(t["total"] for t in reports)

    case = f"{name} layer1..4 @{size}, batch 1,3,1, {cpu_count()} cores"
    rows = []
    for phase in [*phases, "other"]:
        rows.append({"case": case, "phase": f"verify: {phase}", "seconds": med[phase], "share": med[phase] / total,
                     "x bare": med[phase] / bare_total, "cpu s": None})
    rows.append({"case": case, "phase": "verify total", "seconds": total, "share": 1.0, "x bare": total / bare_total,
                 "cpu s": med_cpu["verify"]})
    for key, seconds in bare.items():
        rows.append({"case": case, "phase": f"bare {key} (warm)", "seconds": seconds, "share": None,
                     "x bare": seconds / bare_total, "cpu s": med_cpu[key]})
    rows.append({"case": case, "phase": "bare runs (anchor)", "seconds": bare_total, "share": None, "x bare": 1.0,
                 "cpu s": bare_cpu})
    rows.append({"case": case, "phase": "verify/bare in CPU seconds", "seconds": None, "share": None,
                 "x bare": med_cpu["verify"] / bare_cpu, "cpu s": None})
    rows.append({"case": case, "phase": f"export ({how}; not part of verify)", "seconds": export_s, "share": None,
                 "x bare": None, "cpu s": None})
    rows.append({"case": case, "phase": "peak RSS MiB", "seconds": peak_rss_mb(), "share": None, "x bare": None,
                 "cpu s": None})
    return rows
