#!/usr/bin/env python
"""OpenVINO from C++ vs OpenVINO's Python API on the same file, same threads, batch 1.

Model: torchvision resnet50 (seeded random weights), nodes layer1..layer4 (``--model
resnet18`` for a smaller one), exported with ``fxexport.export_onnx`` (dynamic batch) and,
with ``--format xml`` or ``both``, with fxexport's OpenVINO format (an IR, float32 weights).
Input 1x3x224x224. Both sides compile the file for CPU with the same properties:
PERFORMANCE_HINT LATENCY, NUM_STREAMS 1, INFERENCE_NUM_THREADS ``--threads`` (2),
INFERENCE_PRECISION_HINT f32.

Rows (one per file and side):
  * ``c++``: ``fxexport_openvino FILE x.npy --bench R --warmup W --threads T``, one process per
    block; each block's figure is the median of the R timed ``request.infer()`` calls the
    program reports (after its W warm-up runs);
  * ``python infer()``: ``request.infer()`` on an input tensor set once (what the C++ side times);
  * ``python compiled(x)``: the convenience call ``compiled_model(x)`` (wraps the numpy input and
    returns the outputs), the usual Python usage.
Blocks interleave the three (the order rotates, with a gap before each), ``--blocks`` of them;
``ms`` is the median of the block medians and ``x python`` a row's time over ``python
infer()`` on the same file. The load average (``os.getloadavg``, as ``uptime`` shows it) is
printed before and after: the machine's cores are shared.

Run: ``python scripts/bench_cpp_openvino.py [--model resnet50] [--blocks 9] [--json FILE]``.
As a suite of ``scripts/bench.py`` it exposes ``run(args) -> list[dict]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

NODES = {
    "resnet50": {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"},
    "resnet18": {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"},
}


def _export(model: str, folder: Path, formats: list[str]) -> dict[str, Path]:
    import torch

    from fxexport import create_feature_extractor
    from fxexport import export_onnx
    from fxexport.models import load_model

    extractor = create_feature_extractor(load_model(f"torchvision:{model}"), NODES[model]).eval()
    onnx_path = folder / f"{model}.onnx"
    manifest = export_onnx(extractor, torch.rand(1, 3, 224, 224), onnx_path, dynamic=["batch"])
    files = {"onnx": onnx_path}
    if "xml" in formats:
        files["xml"] = folder / f"{model}.xml"
        try:
            from fxexport.formats.openvino import export as export_openvino
        except ImportError:  # before fxexport's OpenVINO format: the same conversion by hand
            export_openvino = None
        if export_openvino is not None:
            export_openvino(extractor, torch.rand(1, 3, 224, 224), files["xml"], dynamic=["batch"])
        else:
            import openvino as ov

            ir = ov.convert_model(str(onnx_path))
            ir.set_rt_info(json.dumps(dict(manifest.to_dict(), format="openvino")), ["fxexport", "manifest"])
            ov.save_model(ir, str(files["xml"]), compress_to_fp16=False)
    return {k: v for k, v in files.items() if k in formats}


def _config(threads: int) -> dict:
    """What the C++ program sets (and fxexport.formats.openvino.compile_config for a float32 file)."""
    return {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": "f32"}


def _cpp_block(binary: Path, path: Path, x_npy: Path, out: Path, *, runs: int, warmup: int, threads: int) -> float:
    cmd = [str(binary), str(path), str(x_npy), "--bench", str(runs), "--warmup", str(warmup),
           "--threads", str(threads), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise SystemExit(f"bench_cpp_openvino: {' '.join(cmd)} failed: {proc.stderr.strip()}")
    listing = json.loads((out / "outputs.json").read_text())
    if listing["threads"] != threads or listing["inference_precision"] != "f32":
        raise SystemExit(f"bench_cpp_openvino: the C++ program ran with {listing['threads']} threads and "
                         f"{listing['inference_precision']}, not {threads} and f32")
    return statistics.median(listing["times_ms"])


def _timed_median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure(path: Path, binary: Path, x: np.ndarray, *, threads: int, blocks: int, runs: int, warmup: int,
            gap_s: float, scratch: Path) -> dict[str, list[float]]:
    """Block medians (ms) of each side on ``path``, interleaved."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", _config(threads))
    precision = compiled.get_property("INFERENCE_PRECISION_HINT")
    got = (int(compiled.get_property("INFERENCE_NUM_THREADS")), precision.get_type_name())
    if got != (threads, "f32"):
        raise SystemExit(f"bench_cpp_openvino: the Python side compiled with {got}, not {threads} threads and f32")
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(x))
    x_npy = scratch / "x.npy"
    np.save(x_npy, x)
    sides = {
        "c++": lambda: _cpp_block(binary, path, x_npy, scratch / "cpp", runs=runs, warmup=warmup, threads=threads),
        "python infer()": lambda: _timed_median_ms(request.infer, runs),
        "python compiled(x)": lambda: _timed_median_ms(lambda: compiled(x), runs),
    }
    for _ in range(warmup):  # the C++ side warms up inside each block
        request.infer()
        compiled(x)
    samples: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for b in range(blocks):
        for name in names[b % len(names):] + names[: b % len(names)]:
            time.sleep(gap_s)
            samples[name].append(sides[name]())
    return samples


def run(args) -> list[dict]:
    from fxexport.cpp import build_openvino_example

    model = getattr(args, "model", None) or ("resnet18" if getattr(args, "quick", False) else "resnet50")
    formats = {"both": ["onnx", "xml"]}.get(getattr(args, "format", "onnx"), [getattr(args, "format", "onnx")])
    threads = getattr(args, "threads", 2)
    blocks = getattr(args, "blocks", None) or (3 if getattr(args, "quick", False) else 9)
    runs = getattr(args, "runs", None) or (5 if getattr(args, "quick", False) else 10)
    warmup = getattr(args, "warmup", 5)
    binary = build_openvino_example()
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-cpp-ov-") as tmp:
        files = _export(model, Path(tmp), formats)
        load_before = os.getloadavg()
        for fmt, path in files.items():
            samples = measure(path, binary, x, threads=threads, blocks=blocks, runs=runs, warmup=warmup,
                              gap_s=getattr(args, "gap", 0.2), scratch=Path(tmp))
            anchor = statistics.median(samples["python infer()"])
            for side, values in samples.items():
                ms = statistics.median(values)
                rows.append({"file": f"{model}.{fmt}", "side": side, "ms": ms, "x python": ms / anchor,
                             "min block": min(values), "max block": max(values), "blocks": len(values)})
        load_after = os.getloadavg()
    print(f"load average (1, 5, 15 min): before {_load(load_before)}, after {_load(load_after)}; "
          f"{os.cpu_count()} CPUs", file=sys.stderr)
    for row in rows:
        row["load before"], row["load after"] = _load(load_before), _load(load_after)
    return rows


def _load(values) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(NODES), default=None, help="default resnet50 (--quick: resnet18)")
    parser.add_argument("--format", choices=["onnx", "xml", "both"], default="onnx", help="which file(s) to time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=None, help="interleaved blocks (default 9; --quick 3)")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per block and side (default 10)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs before each C++ block's timed runs")
    parser.add_argument("--gap", type=float, default=0.2, help="seconds of sleep before each block")
    parser.add_argument("--quick", action="store_true", help="resnet18, fewer blocks (a smoke run)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    from bench_common import print_table

    rows = run(args)
    print_table(f"OpenVINO: C++ program vs Python API (layer1..4, same file, {args.threads} threads, batch 1)",
                [{k: v for k, v in row.items() if not k.startswith("load")} for row in rows])
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
