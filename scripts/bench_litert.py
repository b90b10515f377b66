"""bench litert: LiteRT (.tflite) conversion time, fp32 latency against the other runtimes, static int8.

Seeded random weights, 224x224, batch 1, 2 threads everywhere:

* ``convert``: ``fxexport.formats.litert.export`` of the resnet18 layer2/layer4 extractor,
  conversion and the interpreter self-check included (the one-off litert-torch import
  is timed apart). Target (issue #14): under 60 s on 2 cores.
* ``fp32``: the same extractor in LiteRT's interpreter (XNNPACK) against onnxruntime on
  ``fxexport.export_onnx``'s file, and, when installed, ExecuTorch (XNNPACK) and
  OpenVINO (CPU): median of interleaved blocks in one process, as a ratio to onnxruntime
  (> 1: slower than onnxruntime), with export time and file size.
* ``int8``: resnet50 layer1..4, ``litert.quantize_int8`` (ai-edge-quantizer static int8,
  calibrated on 16 seeded standard-normal inputs) against its fp32 ``.tflite``: size
  ratio, per-output cosine with the eager extractor on 3 other inputs, speed ratio (an
  int8 file slower than its fp32 source is "slower", not "ok"). Targets: >= 3.5x smaller,
  cosine >= 0.99.
* ``pt2e`` (not with ``--quick``): the alternative int8 path, litert-torch's PT2E
  quantizer, which needs the eager model (``optimize`` may not rebuild it from an
  artifact), on the same extractor, calibration and test inputs.

The machine's load average (``os.getloadavg``) is printed before and after: other
work on a shared machine slows every figure, ratios less than absolute times.

Run: ``.venv/bin/python scripts/bench_litert.py [--quick] [--json FILE]`` (or ``scripts/bench.py litert``
once the suite is listed there).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_common import cpu_count, interleaved  # noqa: E402

CONVERT = ("resnet18", {"layer2": "c3", "layer4": "c5"})
INT8 = ("resnet50", {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"})
QUICK_INT8 = ("resnet18", {"layer3": "c4", "layer4": "c5"})
THREADS = 2
TARGET_CONVERT_S, TARGET_SIZE, TARGET_COSINE = 60.0, 3.5, 0.99


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _inputs(n: int, size: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, size, size, generator=g) for _ in range(n)]


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def _ort_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.intra_op_num_threads = THREADS
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run(args) -> list[dict]:
    from fxexport import create_feature_extractor
    from fxexport import export_onnx
    from fxexport.formats import litert
    from fxexport.models import load_model

    quick = getattr(args, "quick", False)
    size = 64 if quick else 224
    blocks, reps = (3, 3) if quick else (11, 5)
    torch.set_num_threads(THREADS)
    rows: list[dict] = []
    print(f"load average before: {_load()} ({cpu_count()} cpus)")
    with tempfile.TemporaryDirectory(prefix="bench-litert-") as work:
        work = Path(work)
        t0 = time.perf_counter()
        litert._import_converter()
        import_s = time.perf_counter() - t0

        # -- convert + fp32 latency -------------------------------------------------------------
        name, nodes = CONVERT
        extractor = create_feature_extractor(load_model(f"torchvision:{name}"), nodes).eval()
        x = _inputs(1, size, 0)[0]
        t0 = time.perf_counter()
        m = litert.export(extractor, x, work / f"{name}.tflite")
        convert_s = time.perf_counter() - t0
        rows.append(_row("convert", name, "litert.export + check", seconds=convert_s, import_s=import_s,
                         MB=(work / f"{name}.tflite").stat().st_size / 2**20,
                         target="met" if convert_s < TARGET_CONVERT_S else "MISSED"))
        print(f"convert {name}: {convert_s:.1f} s (+{import_s:.1f} s importing litert-torch), load {_load()}")

        fns, exports = {}, {}
        session = litert.open(work / f"{name}.tflite", m, threads=THREADS)
        fns["litert"] = lambda s=session: s.run([x])
        exports["litert"] = (convert_s, (work / f"{name}.tflite").stat().st_size)
        t0 = time.perf_counter()
        export_onnx(extractor, x, work / f"{name}.onnx")
        exports["onnxruntime"] = (time.perf_counter() - t0, (work / f"{name}.onnx").stat().st_size)
        ort_session = _ort_session(work / f"{name}.onnx")
        feeds = {"x": x.numpy()}
        fns["onnxruntime"] = lambda s=ort_session: s.run(None, feeds)
        for runtime, add in (("executorch", _add_executorch), ("openvino", _add_openvino)):
            try:
                t0 = time.perf_counter()
                fn, path = add(extractor, x, work / name)
                exports[runtime] = (time.perf_counter() - t0, path.stat().st_size)
                fns[runtime] = fn
            except Exception as err:  # noqa: BLE001 - a missing extra: report it and go on
                print(f"{runtime}: skipped ({type(err).__name__}: {str(err).splitlines()[0][:120]})")
        times = interleaved(fns, blocks=blocks, reps=reps)
        for runtime, sec in times.items():
            rows.append(_row("fp32", name, runtime, ms=sec * 1e3, x_onnxruntime_time=sec / times["onnxruntime"],
                             seconds=exports[runtime][0], MB=exports[runtime][1] / 2**20))
            print(f"fp32 {runtime}: {sec * 1e3:.2f} ms = {sec / times['onnxruntime']:.2f}x onnxruntime's")
        del fns, session, ort_session

        # -- int8 -------------------------------------------------------------------------------
        name, nodes = QUICK_INT8 if quick else INT8
        extractor = create_feature_extractor(load_model(f"torchvision:{name}"), nodes).eval()
        x = _inputs(1, size, 0)[0]
        src, dst = work / f"{name}.tflite", work / f"{name}.int8.tflite"
        m = litert.export(extractor, x, src)
        calib = [{"x": t.numpy()} for t in _inputs(16, size, 1)]
        tests = _inputs(3, size, 2)
        t0 = time.perf_counter()
        q = litert.quantize_int8(src, dst, calib, m)
        quant_s = time.perf_counter() - t0
        variants = {"fp32": litert.open(src, m, threads=THREADS), "int8": litert.open(dst, q, threads=THREADS)}
        sizes = {"fp32": src.stat().st_size, "int8": dst.stat().st_size}
        makes = {"int8": quant_s}
        if not quick:
            try:
                t0 = time.perf_counter()
                variants["pt2e-int8"], sizes["pt2e-int8"] = _pt2e(extractor, x, calib, work / f"{name}.pt2e.tflite")
                makes["pt2e-int8"] = time.perf_counter() - t0
            except Exception as err:  # noqa: BLE001
                print(f"pt2e: failed ({type(err).__name__}: {str(err).splitlines()[0][:160]})")
        with torch.no_grad():
            refs = [extractor(t) for t in tests]
        times = interleaved({k: (lambda s=s: s.run([x])) for k, s in variants.items()}, blocks=blocks, reps=reps)
        for variant, session in variants.items():
            outs = [session.run_named([t]) for t in tests]
            cos = {n: min(_cosine(r[n], o[n]) for r, o in zip(refs, outs)) for n in m.output_names}
            speed = times["fp32"] / times[variant]
            row = _row("int8", name, variant, MB=sizes[variant] / 2**20, x_smaller=sizes["fp32"] / sizes[variant],
                       ms=times[variant] * 1e3, x_faster=speed, min_cos=min(cos.values()),
                       cos_per_output=" ".join(f"{k}={v:.4f}" for k, v in cos.items()), seconds=makes.get(variant))
            if variant != "fp32":
                row["verdict"] = "slower" if speed < 1.0 else "ok"
                row["target"] = ("met" if row["x_smaller"] >= TARGET_SIZE and row["min_cos"] >= TARGET_COSINE
                                 else "MISSED")
            print(f"int8 {variant}: {row['MB']:.1f} MB ({row['x_smaller']:.2f}x smaller), {row['ms']:.1f} ms "
                  f"({speed:.2f}x fp32's speed), cosine {row['cos_per_output']}")
            rows.append(row)
    print(f"load average after: {_load()}")
    return rows


_COLUMNS = ("suite", "model", "what", "seconds", "import_s", "MB", "x_smaller", "ms", "x_onnxruntime_time", "x_faster",
            "min_cos", "cos_per_output", "verdict", "target", "load")


def _row(suite: str, model: str, what: str, **values) -> dict:
    """One result row with every column (None where it does not apply) and the load average now."""
    row = dict.fromkeys(_COLUMNS)
    row.update(suite=suite, model=model, what=what, load=_load(), **values)
    return row


def _add_executorch(extractor, x, stem: Path):
    from fxexport.formats.executorch import export_executorch, load_executorch

    path = stem.with_suffix(".pte")
    export_executorch(extractor, x, path)
    method = load_executorch(path)
    return (lambda: method.execute([x])), path


def _add_openvino(extractor, x, stem: Path):
    from fxexport.formats import openvino

    path = stem.with_suffix(".xml")
    m = openvino.export(extractor, x, path)
    session = openvino.open(path, m, threads=THREADS)
    return (lambda: session.run([x])), path.with_suffix(".bin")  # the weights: the .xml is the graph


def _pt2e(extractor, x, calib, path: Path):
    """litert-torch's PT2E static int8 (per-channel symmetric weights, per-tensor activations) of the eager
    extractor, calibrated on the same inputs, converted with the same flat-named signature."""
    from torchao.quantization.pt2e import quantize_pt2e

    from fxexport.formats.common import plan
    from fxexport.formats import litert
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig

    p = plan(extractor, x, None, None)
    module = litert._signature_module(extractor, p)
    exported = torch.export.export(module, (), {"x": x}).module()
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    prepared = quantize_pt2e.prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for item in calib:
            prepared(x=torch.from_numpy(item["x"]))
    converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    litert_torch = litert._import_converter()
    with litert._converter_quiet():
        content = litert_torch.convert(converted, sample_kwargs={"x": x},
                                       quant_config=QuantConfig(pt2e_quantizer=quantizer)).model_content()
    path.write_bytes(content)
    return litert.open(path, None, threads=THREADS), len(content)


if __name__ == "__main__":
    import json

    from bench_common import print_table

    results = run(type("Args", (), {"quick": "--quick" in sys.argv})())
    out = Path(sys.argv[sys.argv.index("--json") + 1] if "--json" in sys.argv else "bench-litert.json")
    out.write_text(json.dumps({"litert": results}, indent=2, default=str))
    for suite in ("convert", "fp32", "int8"):
        rows = [r for r in results if r["suite"] == suite]
        keep = [c for c in _COLUMNS if c != "suite" and any(r[c] is not None for r in rows)]
        print_table(f"bench litert: {suite}", [{c: r[c] for c in keep} for r in rows])
    print(f"wrote {out}")
