"""Artifacts shared by test_cpp.py and test_export_aoti.py, built once per test process.

AOTInductor compiles take tens of seconds and the C++ program about as long, so
each is made once (memoized here, not in a fixture, so that both test modules
share them) and the Inductor cache lives in the repository's ignored .cache/.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from fxexport import create_feature_extractor
from fxexport.models import load_model, model_info

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache"
MULTITASK_SPEC = str(REPO / "models" / "multitask.py") + ":build"
MULTITASK_NODES = {"trunk.stage3": "features", "cls_head.fc": "logits", "seg_head.interpolate": "seg",
                   "depth_head.sigmoid": "depth"}
RESNET_NODES = {"layer2": "layer2", "layer4": "layer4"}

_memo: dict[str, object] = {}
#: seconds each memoized build took (reported by the tests that time them)
TIMINGS: dict[str, float] = {}


@contextlib.contextmanager
def inductor_cache():
    """Point TORCHINDUCTOR_CACHE_DIR at .cache/inductor for one compile, then restore it."""
    old = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(CACHE / "inductor")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = old


def resnet18_extractor():
    if "r18" not in _memo:
        _memo["r18"] = create_feature_extractor(load_model("torchvision:resnet18"), RESNET_NODES).eval()
    return _memo["r18"]


def multitask_extractor():
    if "mt" not in _memo:
        _memo["mt"] = create_feature_extractor(load_model(MULTITASK_SPEC), MULTITASK_NODES).eval()
    return _memo["mt"]


def example(batch: int = 2, height: int = 64, width: int = 64, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, height, width, generator=gen)


def aoti_package(which: str, root: Path):
    """(path, manifest) of an AOTInductor package: "resnet18" (dynamic batch, made and verified by
    `fxexport export --aoti`) or "multitask" (dynamic batch, height and width, by export_aoti)."""
    key = f"aoti-{which}"
    if key not in _memo:
        path = root / f"{which}.pt2"
        start_cpp_build()
        start = time.perf_counter()
        with inductor_cache():
            if which == "resnet18":
                # Through the command line (same seeded weights as resnet18_extractor()), verified there too.
                from fxexport.cli import main
                from fxexport.formats import read_manifest

                code = main(["export", "torchvision:resnet18", "--node", "layer2", "--node", "layer4",
                             "--input-shape", "2,3,64,64", "--dynamic", "batch", "--aoti", str(path),
                             "--verify", "--quiet"])
                assert code == 0, f"fxexport export --aoti exited {code}"
                manifest = read_manifest(path)
            else:
                manifest = export_multitask_aoti(path)
        TIMINGS[key] = time.perf_counter() - start
        _memo[key] = (path, manifest)
    return _memo[key]


def export_multitask_aoti(path: Path):
    """export_aoti of the multi-task extractor (dynamic batch, height and width) to ``path``."""
    from fxexport.formats.aoti import export_aoti

    with inductor_cache():
        return export_aoti(multitask_extractor(), example(), path, dynamic=["batch", "height", "width"],
                           model_info=model_info(MULTITASK_SPEC))


def torchscript_module(which: str, root: Path):
    """(path, manifest) of a TorchScript export of "resnet18" or "multitask"."""
    key = f"ts-{which}"
    if key not in _memo:
        from fxexport.formats.torchscript import export_torchscript

        extractor = resnet18_extractor() if which == "resnet18" else multitask_extractor()
        path = root / f"{which}.pt"
        manifest = export_torchscript(extractor, example(), path)
        _memo[key] = (path, manifest)
    return _memo[key]


def start_cpp_build() -> None:
    """Build the C++ program in a background process (it overlaps an AOTInductor compile,
    which keeps one core busy), unless it is cached or already being built."""
    if "cpp" in _memo or "cpp-build" in _memo or not (os.environ.get("CXX") or shutil.which("g++")):
        return
    from fxexport.cpp import cached_binary_path

    if cached_binary_path(CACHE / "cpp").exists():
        return
    _memo["cpp-build"] = (time.perf_counter(), subprocess.Popen(
        [sys.executable, "-m", "fxexport.cpp", str(CACHE / "cpp")], cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))


def cpp_program() -> Path:
    if "cpp" not in _memo:
        from fxexport.cpp import build_cpp_example

        start = time.perf_counter()
        if "cpp-build" in _memo:  # a background build: wait for it (a failure is reported by the build below)
            start, proc = _memo.pop("cpp-build")
            proc.communicate()
        _memo["cpp"] = build_cpp_example(CACHE / "cpp")
        TIMINGS["cpp-build"] = time.perf_counter() - start
    return _memo["cpp"]


def max_scaled_error(ref: torch.Tensor, got) -> float:
    """max |ref - got| / max(1, max |ref|): the error relative to the output's magnitude."""
    got = torch.as_tensor(got)
    assert tuple(got.shape) == tuple(ref.shape), (tuple(got.shape), tuple(ref.shape))
    ref64, got64 = ref.double(), got.double()
    scale = max(1.0, float(ref64.abs().max()))
    return float((ref64 - got64).abs().max()) / scale
