"""Artifacts are data (issue 11, item 1): a manifest never makes fxexport import or run code.

Each test crafts an artifact the way an attacker would: export a tiny model with
``export_onnx``, then rewrite the manifest JSON in ``metadata_props["fxexport"]`` with onnx.
The model specs name code that would create a marker file; every test asserts the marker was
not created, besides the exit code and the one-line message. The opt-ins (``--model``,
``--trust-model-spec``) are tested to work, and user code that calls ``sys.exit(0)`` or is
interrupted never ends in exit 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

from fxexport import create_feature_extractor, export_onnx
from fxexport.cli import main
from fxexport.errors import InvalidInputError
from fxexport.formats import read_manifest
from fxexport.models import REFUSED_KWARGS, check_rebuildable, load_model, model_info

TINY = '''
from torch import nn


class Tiny(nn.Module):
    example_input_shape = (1, 3, 16, 16)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x))


def build():
    return Tiny()
'''

# A file lying beside the artifact: importing it or calling build() creates MARKER.
EVIL = '''
import pathlib

pathlib.Path({marker!r}).touch()


def build():
    pathlib.Path({marker!r}).touch()
    raise RuntimeError("evil build ran")
'''


def _write_manifest_model(src: Path, dst: Path, model: object, **fields: object) -> Path:
    """Copy the ONNX file ``src`` to ``dst`` with the manifest's ``model`` entry (and ``fields``) replaced."""
    proto = onnx.load(str(src))
    for prop in proto.metadata_props:
        if prop.key == "fxexport":
            data = json.loads(prop.value)
            data["model"] = model
            data.update(fields)
            prop.value = json.dumps(data)
            break
    else:  # pragma: no cover - export_onnx always writes one
        raise AssertionError("no fxexport manifest in the exported file")
    onnx.save(proto, str(dst))
    return dst


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("fxexport: error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    """A folder with ``tiny.py``, its ONNX export (``tiny.onnx``, spec = the file) and a marker path."""
    d = tmp_path_factory.mktemp("trust")
    (d / "tiny.py").write_text(TINY)
    spec = f"{d / 'tiny.py'}:build"
    extractor = create_feature_extractor(load_model(spec), {"relu": "feat"}).eval()
    export_onnx(extractor, torch.randn(1, 3, 16, 16), d / "tiny.onnx", exporter="torchscript",
                model_info=model_info(spec))
    return {"dir": d, "spec": spec, "onnx": d / "tiny.onnx", "marker": d / "pwned.txt"}


@pytest.fixture(autouse=True)
def _no_marker(art):
    art["marker"].unlink(missing_ok=True)
    yield
    art["marker"].unlink(missing_ok=True)


def _code_specs(marker: Path) -> dict[str, dict]:
    return {
        "subprocess": {"spec": "subprocess:check_call", "kwargs": {"args": ["touch", str(marker)]}, "seed": 0},
        "os.system": {"spec": "os:system", "kwargs": {"command": f"touch {marker}"}, "seed": 0},
        "evil.py": {"spec": "evil.py:build", "kwargs": {}, "seed": 0},
    }


@pytest.fixture(params=["subprocess", "os.system", "evil.py"])
def evil(request, art, tmp_path, monkeypatch):
    """An artifact whose manifest names code; ``evil.py`` lies beside it and the cwd is its folder."""
    (tmp_path / "evil.py").write_text(EVIL.format(marker=str(art["marker"])))
    monkeypatch.chdir(tmp_path)  # 'evil.py:build' resolves here
    entry = _code_specs(art["marker"])[request.param]
    path = _write_manifest_model(art["onnx"], tmp_path / "evil.onnx", entry)
    return path, entry["spec"]


# ----------------------------------------------------------------------------- code named by a manifest


def test_verify_never_imports_a_manifest_spec(evil, art, capsys):
    path, spec = evil
    assert main(["verify", str(path)]) == 2
    line = _error_line(capsys.readouterr().err)
    assert f"'{spec}'" in line and "--model SPEC --node NODE=NAME" in line and "--trust-model-spec" in line
    assert not art["marker"].exists()


def test_optimize_never_imports_a_manifest_spec(evil, art, tmp_path, capsys):
    path, spec = evil
    out = tmp_path / "edge"
    assert main(["optimize", str(path), "-o", str(out), "--no-timing"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert f"'{spec}'" in line and "--trust-model-spec" in line
    assert not art["marker"].exists()
    assert not out.exists()  # refused before anything is written, the output folder included


def test_library_verify_and_optimize_refuse(evil, art, tmp_path):
    from fxexport.edge import optimize
    from fxexport.verification import verify

    path, spec = evil
    with pytest.raises(InvalidInputError, match="trust_model_spec=True"):
        verify(path)
    with pytest.raises(InvalidInputError, match="extractor="):
        optimize(path, out_dir=tmp_path / "edge", measure=False)
    assert not art["marker"].exists()


def test_entry_point_refuses_file_spec(art, tmp_path):
    """The real entry point (``python -m fxexport``), run in the folder where ``evil.py`` lies."""
    (tmp_path / "evil.py").write_text(EVIL.format(marker=str(art["marker"])))
    path = _write_manifest_model(art["onnx"], tmp_path / "evil.onnx", _code_specs(art["marker"])["evil.py"])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "fxexport", "verify", path.name], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "'evil.py:build', a Python file" in _error_line(proc.stderr)
    assert not art["marker"].exists()


def test_model_flag_works_on_any_artifact(evil, art, tmp_path, capsys):
    path, _ = evil
    assert main(["verify", str(path), "--model", art["spec"], "--node", "relu=feat", "--quiet"]) == 0
    assert main(["optimize", str(path), "-o", str(tmp_path / "edge"), "--no-timing", "--quiet",
                 "--model", art["spec"], "--node", "relu=feat"]) == 0
    assert (tmp_path / "edge" / "evil.optimized.onnx").is_file()
    assert not art["marker"].exists()
    assert main(["verify", str(path), "--model", art["spec"], "--node", "relu=feat", "--trust-model-spec"]) == 2
    assert "--trust-model-spec" in _error_line(capsys.readouterr().err)


def test_trust_model_spec_imports_the_recorded_file(art, tmp_path, capsys):
    """A file spec recorded by a real export: refused without the flag, rebuilt and verified with it."""
    assert main(["verify", str(art["onnx"])]) == 2
    assert f"'{art['spec']}', a Python file" in _error_line(capsys.readouterr().err)
    assert main(["verify", str(art["onnx"]), "--trust-model-spec", "--quiet"]) == 0
    assert main(["optimize", str(art["onnx"]), "-o", str(tmp_path), "--no-timing", "--quiet",
                 "--trust-model-spec"]) == 0

    from fxexport.verification import verify

    assert verify(art["onnx"], trust_model_spec=True, n_inputs=1).ok
    # the flag does what its help says: it imports and runs the code the manifest names
    (tmp_path / "evil.py").write_text(EVIL.format(marker=str(art["marker"])))
    path = _write_manifest_model(art["onnx"], tmp_path / "evil.onnx",
                                 {"spec": f"{tmp_path / 'evil.py'}:build", "kwargs": {}, "seed": 0})
    assert main(["verify", str(path), "--trust-model-spec"]) == 2
    assert "evil build ran" in _error_line(capsys.readouterr().err)
    assert art["marker"].exists()


def test_leaf_modules_are_never_imported(art, tmp_path, capsys):
    name = "fxexport_trust_never_imported.Evil"
    path = _write_manifest_model(art["onnx"], tmp_path / "leaf.onnx", {
        "spec": "torchvision:resnet18", "kwargs": {}, "seed": 0, "leaf_modules": [name, "subprocess.Popen"]})
    assert main(["verify", str(path)]) == 2
    assert f"leaf module '{name}' is not a module class used in the model" in _error_line(capsys.readouterr().err)
    assert "fxexport_trust_never_imported" not in sys.modules
    path = _write_manifest_model(art["onnx"], tmp_path / "leaf2.onnx", {
        "spec": "torchvision:resnet18", "kwargs": {}, "seed": 0, "leaf_modules": "os.system"})
    assert main(["verify", str(path)]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "leaf_modules" in line and "list" in line  # refused as data (by the manifest reader or the rule)


def test_manifest_format_cannot_pick_another_runtime(art, tmp_path):
    """The manifest's format never makes an .onnx file load as TorchScript or an AOTInductor library."""
    from fxexport.verification.core import plan_targets

    for fmt in (".pt2", ".pt", ".pte", "aoti"):
        path = _write_manifest_model(art["onnx"], tmp_path / "fmt.onnx", read_manifest(str(art["onnx"])).model,
                                     format=fmt)
        assert [t.runtime for t in plan_targets([path], [read_manifest(str(path))])] == ["onnxruntime"], fmt


# ----------------------------------------------------------------------------- the registry allowlist


def _tv(kwargs: dict, name: str = "resnet18") -> dict:
    return {"spec": f"torchvision:{name}", "kwargs": kwargs, "seed": 0, "weights_sha256": None}


@pytest.mark.parametrize("key", sorted(REFUSED_KWARGS))
def test_refused_kwarg_names(key):
    for value in (True, "DEFAULT", None):
        with pytest.raises(InvalidInputError, match=f"model kwarg '{key}' .* would make the builder read"):
            check_rebuildable(_tv({key: value}))


@pytest.mark.parametrize("value", [
    "http://example.com/w.pth", "https://x", "file:w", "s3://bucket/w", "~/w.pth", "/etc/passwd", "a/b",
    "C:\\w", "\x1b[31m", "x" * 65, float("nan"), float("inf"), 2**40, [[[[["deep"]]]]], list(range(300)),
    {"bad key/": 1}, {1: 2},
])
def test_refused_kwarg_values(value):
    with pytest.raises(InvalidInputError, match="model kwarg 'num_classes'"):
        check_rebuildable(_tv({"num_classes": value}))


def test_existing_path_value_refused(tmp_path, monkeypatch):
    (tmp_path / "w.pth").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInputError, match="'w.pth', which is an existing path"):
        check_rebuildable(_tv({"norm": "w.pth"}))
    with pytest.raises(InvalidInputError, match="existing path"):
        check_rebuildable(_tv({"layers": {"a": ["ok", ".."]}}))


def test_plain_kwargs_accepted():
    check_rebuildable(_tv({"num_classes": 10, "zero_init_residual": True, "dropout": 0.2, "x": None,
                           "groups": [1, 2], "cfg": {"act": "gelu", "depths": [2, 2]}, "name": "layer_norm-2d"}))
    check_rebuildable({"spec": "timm:resnet18.a1_in1k", "kwargs": {"drop_rate": 0.1}})


def test_registry_names_checked():
    with pytest.raises(InvalidInputError, match="not a torchvision model name; closest: 'torchvision:resnet18'"):
        check_rebuildable(_tv({}, name="resnet19"))
    for spec in ("timm:hf-hub:someone/model", "timm:resnet18/../x", "torchvision:", 7, None):
        with pytest.raises(InvalidInputError):
            check_rebuildable({"spec": spec})
    with pytest.raises(InvalidInputError, match="not an identifier"):
        check_rebuildable(_tv({"not an identifier": 1}))
    for bad in ({"spec": "torchvision:resnet18", "kwargs": [1]}, {"spec": "torchvision:resnet18", "seed": "x"}):
        with pytest.raises(InvalidInputError):
            check_rebuildable(bad)


def test_refused_registry_kwargs_end_to_end(art, tmp_path, capsys):
    for kwargs, fragment in (({"pretrained": True}, "model kwarg 'pretrained'"),
                             ({"weights": "http://example.com/w.pth"}, "model kwarg 'weights'"),
                             ({"num_classes": "http://example.com"}, "could be a URL or a path")):
        path = _write_manifest_model(art["onnx"], tmp_path / "tv.onnx", _tv(kwargs))
        assert main(["verify", str(path)]) == 2
        assert fragment in _error_line(capsys.readouterr().err)
    path = _write_manifest_model(art["onnx"], tmp_path / "tv.onnx", _tv({}, name="resnet19"))
    assert main(["verify", str(path)]) == 2
    assert "closest: 'torchvision:resnet18'" in _error_line(capsys.readouterr().err)


def test_torchvision_manifest_verifies_without_a_flag(tmp_path):
    spec, kwargs = "torchvision:resnet18", {"num_classes": 10}
    extractor = create_feature_extractor(load_model(spec, kwargs=kwargs), {"layer1": "feat"}).eval()
    path = tmp_path / "r18.onnx"
    export_onnx(extractor, torch.randn(1, 3, 32, 32), path, exporter="torchscript",
                model_info=model_info(spec, kwargs=kwargs))
    assert main(["verify", str(path), "--quiet", "--n-inputs", "1"]) == 0


# ----------------------------------------------------------------------------- exits from user code


EXITS = '''
import sys

from torch import nn


def exit_in_build():
    raise SystemExit(0)


def interrupt_in_build():
    raise KeyboardInterrupt


class ExitsInForward(nn.Module):
    def forward(self, x):
        sys.exit(0)  # runs when `fxexport nodes` traces the model


def exit_in_forward():
    return ExitsInForward()
'''


@pytest.fixture
def exits(tmp_path):
    (tmp_path / "exits.py").write_text(EXITS)
    (tmp_path / "exit_on_import.py").write_text("import sys\nsys.exit(0)\n")
    return tmp_path


def test_system_exit_in_a_builder_is_exit_2(art, exits, capsys):
    path = _write_manifest_model(art["onnx"], exits / "exit.onnx",
                                 {"spec": f"{exits / 'exits.py'}:exit_in_build", "kwargs": {}, "seed": 0})
    assert main(["verify", str(path), "--trust-model-spec"]) == 2
    assert "raised SystemExit(0)" in _error_line(capsys.readouterr().err)
    assert main(["verify", str(art["onnx"]), "--model", f"{exits / 'exit_on_import.py'}:build",
                 "--node", "relu=feat"]) == 2
    assert "raised SystemExit(0)" in _error_line(capsys.readouterr().err)
    with pytest.raises(InvalidInputError, match="SystemExit"):
        load_model(f"{exits / 'exits.py'}:exit_in_build")


def test_system_exit_in_model_code_is_exit_2(exits, capsys):
    assert main(["nodes", f"{exits / 'exits.py'}:exit_in_forward"]) == 2
    assert "the model code called sys.exit(0) during 'nodes'" in _error_line(capsys.readouterr().err)


def test_keyboard_interrupt_in_a_builder_is_130(art, exits, capsys):
    path = _write_manifest_model(art["onnx"], exits / "int.onnx",
                                 {"spec": f"{exits / 'exits.py'}:interrupt_in_build", "kwargs": {}, "seed": 0})
    assert main(["verify", str(path), "--trust-model-spec"]) == 130
    assert "fxexport: interrupted" in capsys.readouterr().err


def test_interrupted_export_leaves_no_partial_file(art, tmp_path, monkeypatch):
    """Ctrl-C just before the written artifact is committed: exit 130, the old file intact, no temp file left."""
    target = tmp_path / "out.onnx"
    target.write_bytes(b"old")
    real = os.replace
    seen = []

    def interrupted(src, dst, *args, **kwargs):
        if Path(dst) == target:
            seen.append(Path(src).stat().st_size)  # the new artifact, fully written to its temp file
            raise KeyboardInterrupt
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", interrupted)
    assert main(["export", art["spec"], "--node", "relu=feat", "--onnx", str(target), "--exporter", "torchscript",
                 "--quiet"]) == 130
    assert seen and seen[0] > 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]
    assert target.read_bytes() == b"old"
