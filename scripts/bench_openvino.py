#!/usr/bin/env python
"""bench openvino: fxexport's OpenVINO IR and NNCF int8 against their anchors, in one process.

For each model's extractor (seeded random weights, 224x224, batch 1, ``--threads`` 2):

* ``runtime`` rows: the IR written by ``fxexport.formats.openvino.export`` against OpenVINO
  running the same extractor's ONNX file (``open_onnx_in_openvino``: the same compile
  settings, f32 precision hint) and onnxruntime on that ONNX (for context). Target: the IR
  within 5% of OpenVINO-on-ONNX.
* ``int8`` rows: ``quantize_int8`` (NNCF, calibrated on 16 seeded standard-normal inputs, as
  ``fxexport.edge``'s random calibration) against the fp32 IR: latency ratio, size ratio, and
  per-output cosine / max error (``max|out - ref| / max|ref|``) against the eager extractor on
  3 other seeded inputs. Targets (issue 13, resnet50): >= 1.8x faster, >= 3.5x smaller,
  cosine >= 0.99.
* ``--convert``: the two conversion paths (ONNX via ``export_onnx`` + ``Core.read_model``, and
  ``openvino.convert_model`` of the flat-output wrapper): wall time, value error, names kept, latency.
* ``--settings``: NNCF presets (performance / mixed) and target devices (CPU / ANY) on each model.

Every latency is the median of interleaved blocks (``fxexport._timing.interleaved``); ratios are
taken within one run. The load average is printed before and after: the cores may be shared.

Run: ``.venv/bin/python scripts/bench_openvino.py [--quick] [--convert] [--settings] [--json FILE]``
(or ``scripts/bench.py openvino`` once the suite is listed there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import cpu_count, interleaved, print_table  # noqa: E402 - after the path set-up

MODELS = {
    "resnet50": {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"},
    "mobilenet_v3_large": {"features.3": "s4", "features.6": "s8", "features.12": "s16", "features.16": "s32"},
}
QUICK = {"resnet18": {"layer3": "c4", "layer4": "c5"}}
TARGET_RUNTIME, TARGET_SPEED, TARGET_SIZE, TARGET_COSINE = 0.05, 1.8, 3.5, 0.99
CALIBRATION = 16
VERIFY_INPUTS = 3


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


def _extractor(name: str, nodes: dict[str, str]):
    from fxexport import create_feature_extractor
    from fxexport.models import load_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return create_feature_extractor(load_model(f"torchvision:{name}"), nodes).eval()


def _calibration(manifest, n: int) -> list[dict[str, np.ndarray]]:
    """Seeded standard-normal input dicts, batch 1: what fxexport.edge calibrates on without a folder."""
    sets = _make_inputs()(manifest, n_inputs=n, sizes={"batch": [1]} if manifest.dynamic else None, seed=1)
    return [{spec.name: t.numpy() for spec, t in zip(manifest.inputs, s)} for s in sets[:n]]


def _make_inputs():
    """verify's seeded input generator (``fxexport.verification`` after the restructuring, else ``fxexport.verify``)."""
    try:
        from fxexport.verification import make_inputs
    except ImportError:
        from fxexport.verify import make_inputs
    return make_inputs


def _accuracy(session, extractor, manifest, inputs) -> tuple[dict[str, float], dict[str, float]]:
    """Per output: the worst cosine and max error over ``inputs`` against the eager extractor."""
    from fxexport.flatten import OutputSpec, flatten

    cos: dict[str, float] = {}
    err: dict[str, float] = {}
    for x in inputs:
        with torch.no_grad():
            out = extractor(x)
        ref = [t.double().flatten() for t in flatten(OutputSpec.from_outputs(out), out)]
        got = [torch.as_tensor(np.asarray(v)).double().flatten() for v in session.run([x])]
        for name, r, g in zip(manifest.output_names, ref, got):
            c = float(torch.dot(r, g) / (r.norm() * g.norm()).clamp_min(1e-30))
            e = float((r - g).abs().max() / r.abs().max().clamp_min(1e-30))
            cos[name] = min(cos.get(name, 1.0), c)
            err[name] = max(err.get(name, 0.0), e)
    return cos, err


def _ort(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _size(xml: Path) -> int:
    return xml.stat().st_size + xml.with_suffix(".bin").stat().st_size


def run(args) -> list[dict]:
    from fxexport import export_onnx
    from fxexport.formats import openvino as fov

    make_inputs = _make_inputs()

    quick = getattr(args, "quick", False)
    threads = getattr(args, "threads", 2) or 2
    models = QUICK if quick else MODELS
    if getattr(args, "only", None):
        models = {k: v for k, v in models.items() if k in args.only}
    size = 64 if quick else 224
    blocks, reps = (3, 3) if quick else (11, 5)
    blocks, reps = getattr(args, "blocks", None) or blocks, getattr(args, "reps", None) or reps
    rows: list[dict] = []
    print(f"load average before (1/5 min): {_load()}, cpus {cpu_count()}, threads {threads}")
    with tempfile.TemporaryDirectory(prefix="bench-openvino-") as work:
        for name, nodes in models.items():
            extractor = _extractor(name, nodes)
            x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
            onnx_path, xml = Path(work) / f"{name}.onnx", Path(work) / f"{name}.xml"
            export_onnx(extractor, x, onnx_path, dynamic="batch")
            t0 = time.perf_counter()
            manifest = fov.export(extractor, x, xml, dynamic="batch")
            export_s = time.perf_counter() - t0
            calib = _calibration(manifest, CALIBRATION)
            int8 = Path(work) / f"{name}.int8.xml"
            t0 = time.perf_counter()
            qm = fov.quantize_int8(xml, int8, calib, manifest)
            quant_s = time.perf_counter() - t0
            print(f"{name}: IR export {export_s:.1f} s, NNCF int8 {quant_s:.1f} s")

            sessions = {"ir": fov.open(xml, manifest, threads=threads),
                        "ov_onnx": fov.open_onnx_in_openvino(onnx_path, manifest, threads=threads),
                        "int8": fov.open(int8, qm, threads=threads)}
            ort_sess = _ort(onnx_path, threads)
            feeds = [x]
            ort_feeds = {manifest.input_names[0]: x.numpy()}
            fns = {k: (lambda s=s, f=feeds: s.run(f)) for k, s in sessions.items()}
            fns["ort"] = lambda s=ort_sess, f=ort_feeds: s.run(None, f)
            load = _load()
            times = interleaved(fns, blocks=blocks, reps=reps)
            verify_inputs = [s[0] for s in make_inputs(manifest, n_inputs=VERIFY_INPUTS, sizes={"batch": [1]},
                                                       seed=0)]
            acc = {k: _accuracy(sessions[k], extractor, manifest, verify_inputs) for k in ("ir", "ov_onnx", "int8")}
            ov_ms = times["ov_onnx"] * 1e3
            for key, label in (("ir", "fxexport IR"), ("ov_onnx", "OpenVINO on ONNX"), ("ort", "onnxruntime")):
                ms = times[key] * 1e3
                row = {"model": name, "suite": "runtime", "variant": label, "ms": ms, "vs_ov_onnx": ms / ov_ms,
                       "MB": (_size(xml) if key == "ir" else onnx_path.stat().st_size) / 2**20,
                       "min_cos": min(acc[key][0].values()) if key in acc else None,
                       "max_err": max(acc[key][1].values()) if key in acc else None,
                       "target": None, "load": load}
                if key == "ir":
                    row["target"] = "met" if ms / ov_ms <= 1 + TARGET_RUNTIME else "MISSED"  # not slower by > 5%
                rows.append(row)
            speed = times["ir"] / times["int8"]
            smaller = _size(xml) / _size(int8)
            cos, err = acc["int8"]
            rows.append({"model": name, "suite": "int8", "variant": "NNCF int8 vs fp32 IR", "ms": times["int8"] * 1e3,
                         "x_faster": speed, "x_smaller": smaller, "MB": _size(int8) / 2**20,
                         "min_cos": min(cos.values()), "max_err": max(err.values()),
                         "cos_per_output": " ".join(f"{k}={v:.4f}" for k, v in cos.items()),
                         "target": ("met" if speed >= TARGET_SPEED and smaller >= TARGET_SIZE
                                    and min(cos.values()) >= TARGET_COSINE else "MISSED"),
                         "load": load})
            if getattr(args, "settings", False):
                rows.extend(_settings(name, extractor, xml, manifest, calib, verify_inputs, x, threads, blocks,
                                      reps, Path(work)))
            if getattr(args, "convert", False):
                rows.extend(_convert(name, extractor, x, threads, blocks, reps, Path(work)))
    print(f"load average after (1/5 min): {_load()}")
    keys = list(dict.fromkeys(k for r in rows for k in r))  # one column set: bench.py's table takes rows[0]'s keys
    return [{k: r.get(k) for k in keys} for r in rows]


def _settings(name, extractor, xml, manifest, calib, verify_inputs, x, threads, blocks, reps, work) -> list[dict]:
    """NNCF preset x target device (and model type transformer), each against the fp32 IR."""
    from fxexport.formats import openvino as fov

    base = dict(fov.NNCF_SETTINGS)
    sessions = {"fp32": fov.open(xml, manifest, threads=threads)}
    sizes, accs = {}, {}
    try:
        choices = [(preset, device, None) for preset in ("performance", "mixed") for device in ("CPU", "ANY")]
        for preset, device, model_type in choices + [("performance", "CPU", "transformer")]:
            key = f"{preset}/{device}" + (f"/{model_type}" if model_type else "")
            fov.NNCF_SETTINGS.update(preset=preset, target_device=device, model_type=model_type)
            dst = work / f"{name}.{key.replace('/', '.')}.xml"
            qm = fov.quantize_int8(xml, dst, calib, manifest)
            sessions[key] = fov.open(dst, qm, threads=threads)
            sizes[key] = _size(dst)
            accs[key] = _accuracy(sessions[key], extractor, manifest, verify_inputs)
    finally:
        fov.NNCF_SETTINGS.clear()
        fov.NNCF_SETTINGS.update(base)
    load = os.getloadavg()[0]
    times = interleaved({k: (lambda s=s: s.run([x])) for k, s in sessions.items()}, blocks=blocks, reps=reps)
    return [{"model": name, "suite": "nncf-settings", "variant": key, "ms": times[key] * 1e3,
             "x_faster": times["fp32"] / times[key], "x_smaller": _size(xml) / sizes[key],
             "min_cos": min(accs[key][0].values()), "max_err": max(accs[key][1].values()),
             "cos_per_output": " ".join(f"{k}={v:.4f}" for k, v in accs[key][0].items()), "load": f"{load:.2f}"}
            for key in sizes]


def _convert(name, extractor, x, threads, blocks, reps, work) -> list[dict]:
    """ONNX path vs openvino.convert_model: time, names, values, latency."""
    import openvino as ov

    from fxexport import export_onnx
    from fxexport.flatten import FlatOutputs, OutputSpec, flatten

    with torch.no_grad():
        spec = OutputSpec.from_outputs(extractor(x))
        x3 = torch.randn(3, *x.shape[1:], generator=torch.Generator().manual_seed(3))
        probes = [(t, [o.detach() for o in flatten(spec, extractor(t))]) for t in (x, x3)]
    t0 = time.perf_counter()
    export_onnx(extractor, x, work / f"{name}.conv.onnx", dynamic="batch")
    model_a = ov.Core().read_model(str(work / f"{name}.conv.onnx"))
    onnx_s = time.perf_counter() - t0
    names_a = [o.get_any_name() for o in model_a.outputs]
    wrapper = FlatOutputs(extractor, spec, ["x"])
    shapes = [ov.PartialShape([-1, *x.shape[1:]])]  # dynamic batch, as the ONNX path
    t0 = time.perf_counter()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        model_b = ov.convert_model(wrapper, example_input=(x.repeat(2, 1, 1, 1),), input=shapes)
    convert_s = time.perf_counter() - t0
    names_b = [sorted(o.get_names()) for o in model_b.outputs]
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
              "INFERENCE_PRECISION_HINT": "f32"}  # what fxexport.formats.openvino.open sets
    core = ov.Core()
    runs = {}
    rows = []
    for label, model, secs, names in (("onnx+read_model", model_a, onnx_s, names_a),
                                      ("convert_model", model_b, convert_s, names_b)):
        compiled = core.compile_model(model, "CPU", config)
        request = compiled.create_infer_request()
        errs = []
        for inp, flat in probes:
            res = request.infer({0: inp.numpy()})
            errs.append(max(float(np.abs(res[o] - f.numpy()).max() / max(1e-30, float(f.abs().max())))
                            for o, f in zip(compiled.outputs, flat)))
        runs[label] = (lambda r=request: r.infer({0: x.numpy()}))
        rows.append({"model": name, "suite": "convert", "variant": label, "convert_s": secs,
                     "names_kept": names == spec.names, "names": str(names)[:60], "max_err": max(errs),
                     "ops": len(model.get_ops())})
    times = interleaved(runs, blocks=blocks, reps=reps)
    for row in rows:
        row["ms"] = times[row["variant"]] * 1e3
        row["load"] = f"{os.getloadavg()[0]:.2f}"
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="resnet18 at 64x64, fewer repeats (a smoke run)")
    parser.add_argument("--threads", type=int, default=2, help="OpenVINO / onnxruntime threads (default 2)")
    parser.add_argument("--convert", action="store_true", help="also compare the two conversion paths")
    parser.add_argument("--settings", action="store_true", help="also compare NNCF presets and target devices")
    parser.add_argument("--blocks", type=int, default=None, help="interleaved blocks per timing (default 11)")
    parser.add_argument("--reps", type=int, default=None, help="runs per block (default 5)")
    parser.add_argument("--only", choices=sorted(MODELS), action="append", help="only this model (repeatable)")
    parser.add_argument("--json", default="bench-openvino.json", help="write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run(args)
    for suite in dict.fromkeys(r["suite"] for r in rows):
        sub = [r for r in rows if r["suite"] == suite]
        keys = [k for k in sub[0] if any(r.get(k) is not None for r in sub)]
        print_table(f"bench openvino: {suite}", [{k: r.get(k) for k in keys} for r in sub])
    Path(args.json).write_text(json.dumps({"openvino": rows}, indent=2, default=str))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
