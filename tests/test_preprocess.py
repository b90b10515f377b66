"""The preprocessing record (issue 16): decoding, steps, spec defaults, precedence, the manifest's
version-2 fields (and version-1 manifests), and optional None arguments made concrete.

Every image is built here from a seeded tensor (PIL for the EXIF tag and the RGBA file); nothing downloads.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision.io import encode_png

from _examples import load_example_model
from fxexport import create_feature_extractor, export_onnx, get_graph_node_names
from fxexport.errors import InvalidInputError, VerificationError
from fxexport.formats import read_manifest
from fxexport.formats.onnx import set_onnx_manifest
from fxexport.manifest import FORMAT_VERSION, Manifest, TensorSpec
from fxexport.preprocess import (
    Preprocess,
    PreprocessEntry,
    image_input_index,
    load_image,
    read_image,
    resolve,
    spec_default,
)
from fxexport.verification import verify
from fxexport.verification.core import preprocess_for
from fxexport.verification.inputs import load_input_folder


def seeded_image(h: int, w: int, seed: int = 0, channels: int = 3) -> torch.Tensor:
    return torch.randint(0, 256, (channels, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def write_png(path, image: torch.Tensor):
    path.write_bytes(encode_png(image).numpy().tobytes())
    return path


def write_exif_jpeg(path, image: torch.Tensor, orientation: int):
    im = Image.fromarray(image.permute(1, 2, 0).numpy())
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, format="JPEG", exif=exif.tobytes(), quality=100, subsampling=0)
    return path


# --------------------------------------------------------------------------- decoding


def test_png_decodes_to_the_tensor_it_was_made_from(tmp_path):
    image = seeded_image(5, 7)
    assert torch.equal(read_image(write_png(tmp_path / "a.png", image)), image)


def test_exif_orientation_is_applied_unless_the_record_says_not_to(tmp_path):
    image = seeded_image(4, 6, seed=1)
    path = write_exif_jpeg(tmp_path / "rotated.jpg", image, orientation=6)  # 6: rotate 90 degrees clockwise
    assert tuple(read_image(path).shape) == (3, 6, 4)
    assert tuple(read_image(path, Preprocess(exif_orientation=False)).shape) == (3, 4, 6)
    assert tuple(load_image(path, Preprocess(resize=(12, 8))).shape) == (1, 3, 12, 8)


def test_rgba_alpha_is_dropped_or_blended(tmp_path):
    rgba = seeded_image(3, 4, seed=2, channels=4).permute(1, 2, 0).numpy().copy()
    rgba[0, 0, 3] = 0  # one transparent pixel
    rgba[0, 1, 3] = 255
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    dropped = read_image(path)
    assert torch.equal(dropped, torch.from_numpy(rgba[..., :3]).permute(2, 0, 1))
    record = Preprocess(alpha="blend", background=(10, 20, 30))
    blended = record.apply(read_image(path, record))
    assert torch.allclose(blended[:, 0, 0] * 255, torch.tensor([10.0, 20.0, 30.0]))  # fully transparent
    assert torch.allclose(blended[:, 0, 1] * 255, torch.from_numpy(rgba[0, 1, :3]).float())  # opaque
    a = float(rgba[1, 1, 3])
    expected = (torch.from_numpy(rgba[1, 1, :3]).float() * a + torch.tensor([10.0, 20.0, 30.0]) * (255 - a)) / 255
    assert torch.allclose(blended[:, 1, 1] * 255, expected.round(), atol=1.0)


def test_a_file_that_is_no_image_is_one_line(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(InvalidInputError, match=r"image '.*notes.png' cannot be decoded by torchvision.io") as info:
        read_image(bad)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- the steps


def test_steps_range_mean_std_and_channel_order():
    image = seeded_image(6, 6, seed=3)
    x = image.float() / 255
    got = Preprocess(value_range=(-1, 1), mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0), channel_order="BGR").apply(image)
    mean, std = torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1), torch.tensor([0.5, 0.25, 2.0]).view(3, 1, 1)
    want = (x.flip(0) * 2 - 1 - mean) / std
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.equal(Preprocess(value_range=(0, 255)).apply(image), image.float())


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "convnext_tiny"])
def test_spec_default_reproduces_torchvisions_weights_transforms(name):
    """torchvision's preset (built from the Weights enum, nothing downloaded) is the oracle."""
    image = seeded_image(300, 411, seed=4)
    oracle = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    record = spec_default(f"torchvision:{name}")
    assert torch.equal(record.apply(image), oracle(image))


def test_spec_default_from_timm_pretrained_cfg():
    record = spec_default("timm:test_resnet")
    # timm's cfg: input 160, crop_pct 0.95, bilinear, mean/std 0.5
    assert record.crop == (160, 160) and record.crop_pct == 0.95 and record.effective_resize == math.floor(160 / 0.95)
    assert record.mean == (0.5, 0.5, 0.5) and record.std == (0.5, 0.5, 0.5) and record.interpolation == "bilinear"
    model = type("M", (), {"pretrained_cfg": {"input_size": (3, 96, 128), "crop_pct": 1.0, "crop_mode": "squash",
                                              "interpolation": "bicubic", "mean": (0, 0, 0), "std": (1, 1, 1)}})()
    squash = spec_default("models/mine.py", model)
    assert squash.resize == (96, 128) and squash.crop == (96, 128) and squash.interpolation == "bicubic"
    assert spec_default("models/mine.py") is None and spec_default("timm:no_such_model_anywhere") is None


def test_fit_keeps_the_resize_to_crop_ratio():
    record = Preprocess(resize=256, crop=224).fit(112, 112)
    assert record.crop == (112, 112) and record.effective_resize == 128
    assert Preprocess(resize=(300, 200), crop=(150, 100)).fit(60, 40).resize == (120, 80)


# --------------------------------------------------------------------------- data only, checked


@pytest.mark.parametrize("field, value, message", [
    ("resize", 0, "'preprocess.record.resize' must be a positive integer up to 16384"),
    ("resize", 10 ** 9, "'preprocess.record.resize' must be a positive integer up to 16384"),
    ("crop", [1, 2, 3], "'preprocess.record.crop' must be"),
    ("interpolation", "__import__('os')", "'preprocess.record.interpolation' must be one of"),
    ("mean", [0.5, float("nan"), 0.5], "'preprocess.record.mean' must be three finite numbers"),
    ("std", [1, 0, 1], "'preprocess.record.std' must be three finite numbers > 0"),
    ("value_range", [1, 1], "'preprocess.record.value_range' must be two different finite numbers"),
    ("antialias", "yes", "'preprocess.record.antialias' must be true or false"),
    ("channel_order", "GBR", "'preprocess.record.channel_order' must be one of 'RGB', 'BGR'"),
    ("background", [0, 0, 256], "'preprocess.record.background' must be three integers 0..255"),
    ("transform", "torchvision.transforms.ToTensor", "'preprocess.record.transform' is not a preprocessing field"),
])
def test_an_untrusted_record_is_checked_field_by_field(field, value, message):
    data = {"record": {field: value}, "input": "x", "source": "flag"}
    with pytest.raises(VerificationError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        PreprocessEntry.from_dict(data)
    assert "\n" not in str(info.value)


def test_record_round_trips_and_is_plain_json():
    entry = PreprocessEntry(Preprocess(resize=(10, 12), crop=8, value_range=(0, 255), mean=(1, 2, 3),
                                       std=(4, 5, 6), channel_order="BGR", alpha="blend", exif_orientation=False),
                            "rgb", "flag", ("resize", "crop"), "spec default")
    text = json.dumps(entry.to_dict())
    assert PreprocessEntry.from_dict(json.loads(text)) == entry
    assert all(isinstance(v, (int, float, str, bool, list, type(None))) for v in entry.to_dict()["record"].values())


# --------------------------------------------------------------------------- precedence


def test_precedence_flag_over_manifest_over_spec_default():
    spec = Preprocess(resize=256, crop=224, mean=(0.4, 0.4, 0.4), std=(0.2, 0.2, 0.2))
    recorded = PreprocessEntry(Preprocess(resize=80, crop=64), "x", "spec default")
    assert resolve(None, None, None, "x") is None
    assert resolve(None, None, spec, "x") == PreprocessEntry(spec, "x", "spec default")
    from_manifest = resolve(None, recorded, spec, "x")
    assert from_manifest.source == "manifest" and from_manifest.record == recorded.record
    flagged = resolve({"crop": 32, "mean": (0.1, 0.1, 0.1)}, recorded, spec, "x")
    assert flagged.source == "flag" and flagged.flags == ("crop", "mean") and flagged.base == "manifest"
    assert flagged.record.crop == (32, 32) and flagged.record.resize == 80 and flagged.record.mean == (0.1, 0.1, 0.1)
    whole = resolve(Preprocess(crop=5), recorded, spec, "x")
    assert whole.record == Preprocess(crop=5) and whole.source == "flag" and whole.base is None


def test_verify_resolves_the_spec_default_only_for_registry_specs():
    m = Manifest("onnx", [TensorSpec("x", ["batch", 3, 48, 48])], [], model={"spec": "torchvision:resnet18"})
    entry = preprocess_for(m)
    assert entry.source == "spec default" and entry.record.crop == (48, 48)
    file_spec = Manifest("onnx", [TensorSpec("x", ["batch", 3, 48, 48])], [], model={"spec": "evil.py:build"})
    assert preprocess_for(file_spec) is None  # nothing a manifest names is imported


def test_image_input_is_the_only_three_channel_input_or_the_named_one():
    specs = [TensorSpec("depth", [1, 1, 8, 8]), TensorSpec("rgb", ["batch", 3, 8, 8]), TensorSpec("ir", [1, 3, 8, 8])]
    with pytest.raises(InvalidInputError, match="'rgb', 'ir' all take 3 channels: name the image input"):
        image_input_index(specs)
    assert image_input_index(specs, "ir") == 2
    with pytest.raises(InvalidInputError, match="input 'depth' has shape"):
        image_input_index(specs, "depth")
    with pytest.raises(InvalidInputError, match="'nope' is not an input"):
        image_input_index(specs, "nope")


# --------------------------------------------------------------------------- folders


def test_folder_of_images_feeds_the_image_input_through_the_record(tmp_path):
    m = Manifest("onnx", [TensorSpec("x", ["batch", 3, 16, 16])], [])
    write_png(tmp_path / "b.png", seeded_image(20, 30, seed=5))
    write_png(tmp_path / "a.png", seeded_image(40, 24, seed=6))
    record = Preprocess(resize=18, crop=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    sets = load_input_folder(tmp_path, m, preprocess=record)
    assert [tuple(s[0].shape) for s in sets] == [(1, 3, 16, 16)] * 2
    assert torch.equal(sets[0][0], record.apply(seeded_image(40, 24, seed=6)).unsqueeze(0))  # a.png first
    too_big = r"a.png' is \(1, 3, 40, 24\) after preprocessing .* expects \(batch, 3, 16, 16"
    with pytest.raises(InvalidInputError, match=too_big):
        load_input_folder(tmp_path, m)


def test_images_for_a_model_with_several_inputs_ask_for_npz(tmp_path):
    m = Manifest("onnx", [TensorSpec("rgb", ["batch", 3, 8, 8]), TensorSpec("depth", ["batch", 1, 8, 8])], [])
    write_png(tmp_path / "a.png", seeded_image(8, 8))
    with pytest.raises(InvalidInputError, match=r"feeds input 'rgb' only, but the model also takes \['depth'\]"):
        load_input_folder(tmp_path, m)


# --------------------------------------------------------------------------- manifests


def _tiny_onnx(tmp_path, **model_info):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).eval()
    extractor = create_feature_extractor(net, {"0": "conv", "1": "act"})
    path = tmp_path / "tiny.onnx"
    manifest = export_onnx(extractor, torch.rand(1, 3, 32, 32), path, dynamic="batch", model_info=model_info or None)
    return extractor, path, manifest


def test_export_records_the_spec_default_fitted_to_the_input(tmp_path):
    _, path, manifest = _tiny_onnx(tmp_path, spec="torchvision:resnet18")
    assert manifest.format_version == FORMAT_VERSION == 2
    read = read_manifest(path)
    assert read.preprocess == manifest.preprocess
    assert read.preprocess.source == "spec default" and read.preprocess.input == "input"
    assert read.preprocess.record.crop == (32, 32) and read.preprocess.record.mean == (0.485, 0.456, 0.406)


def test_a_version_1_manifest_still_reads_and_verifies(tmp_path):
    import onnx

    extractor, path, manifest = _tiny_onnx(tmp_path, spec="torchvision:resnet18")
    old = manifest.to_dict()
    old["format_version"] = 1
    del old["preprocess"]
    old["preprocess"] = {"record": {"eval": "x"}}  # a version-1 manifest has no such field: ignored, not read
    model = onnx.load(str(path))
    set_onnx_manifest(model, Manifest.from_dict(old))
    for prop in model.metadata_props:
        if prop.key == "fxexport":
            prop.value = json.dumps(old)
    onnx.save(model, str(path))
    read = read_manifest(path)
    assert read.format_version == 1 and read.preprocess is None
    images = tmp_path / "images"
    images.mkdir()
    write_png(images / "a.png", seeded_image(40, 50, seed=7))
    report = verify(path, extractor, inputs=images)
    assert report.ok and report.inputs == [[[1, 3, 32, 32]]]
    assert any("(for input 'input'; spec default)" in n for n in report.notes)  # the spec's, not a manifest's


def test_manifest_refuses_a_record_for_an_input_it_does_not_have():
    data = {"format": "onnx", "format_version": 2, "inputs": [{"name": "x", "shape": [1, 3, 8, 8]}], "outputs": [],
            "preprocess": {"record": {}, "input": "y", "source": "flag"}}
    with pytest.raises(VerificationError, match=r"'preprocess.input' names 'y', which is not one of the inputs"):
        Manifest.from_dict(data)
    with pytest.raises(VerificationError, match=r"'concrete_args\['mask'\].auto' must be true or false"):
        Manifest.from_dict(dict(data, preprocess=None, concrete_args={"mask": {"auto": "yes", "value": None}}))


# --------------------------------------------------------------------------- optional None arguments


Masked = load_example_model("masked").Masked  # timm hiera's shape of forward: an optional mask defaulting to None


def test_optional_none_argument_is_concrete_and_leaves_no_trace(tmp_path):
    import onnx

    train, eval_ = get_graph_node_names(Masked())
    assert train == eval_ == ["x", "conv", "relu"]  # no mask placeholder, no _assert_is_none
    extractor = create_feature_extractor(Masked().eval(), ["conv", "relu"])
    assert extractor.auto_concrete_args == ("mask",) and dict(extractor.concrete_args) == {"mask": None}
    assert [n.op for n in extractor.graph.nodes].count("placeholder") == 1
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(extractor(x, None)["relu"], extractor(x)["relu"])  # the fixed value may still be passed
    with pytest.raises(InvalidInputError, match="argument 'mask' was fixed to None"):
        extractor(x, torch.ones(1))
    manifest = export_onnx(extractor, x, tmp_path / "masked.onnx")
    assert [i.name for i in onnx.load(str(tmp_path / "masked.onnx")).graph.input] == ["x"]
    assert manifest.input_names == ["x"]
    assert read_manifest(tmp_path / "masked.onnx").concrete_args == {"mask": {"auto": True, "value": None}}


def test_optional_flags_are_fixed_to_their_defaults_too():
    """timm's VisionTransformer.forward(x, attn_mask=None, is_causal=False): with the mask fixed to None, the flag
    would be a Proxy in `if attn_mask is not None or is_causal:` and tracing would fail."""

    class Causal(nn.Module):
        def forward(self, x, attn_mask=None, is_causal: bool = False):
            if attn_mask is not None or is_causal:
                x = x * 0
            return x + 1

    train, eval_ = get_graph_node_names(Causal())
    assert train == eval_ == ["x", "add"]
    extractor = create_feature_extractor(Causal(), ["add"])
    assert dict(extractor.concrete_args) == {"attn_mask": None, "is_causal": False}
    assert torch.equal(extractor(torch.ones(2))["add"], torch.full((2,), 2.0))


def test_the_users_concrete_args_win_and_ph_keeps_an_input():
    model = Masked().eval()
    user = create_feature_extractor(model, ["mul"], concrete_args={"mask": torch.fx.PH})
    assert user.auto_concrete_args == ()
    assert [n.target for n in user.graph.nodes if n.op == "placeholder"] == ["x", "mask"]
    x, mask = torch.rand(1, 3, 4, 4), torch.rand(1, 4, 4, 4)
    with torch.no_grad():
        assert torch.allclose(user(x, mask)["mul"], model.conv(x) * mask)
    fixed = create_feature_extractor(model, ["mul", "relu"], concrete_args={"mask": 2.0})
    assert fixed.auto_concrete_args == () and dict(fixed.concrete_args) == {"mask": 2.0}
    with torch.no_grad():
        assert torch.allclose(fixed(x)["relu"], (model.conv(x) * 2.0).relu())


def test_dynamic_dims_apply_to_every_input_that_has_them(tmp_path):
    class Two(nn.Module):
        def forward(self, image, meta):
            return {"pooled": image.mean(dim=(2, 3)) + meta}

    extractor = create_feature_extractor(Two(), ["add"])
    manifest = export_onnx(extractor, (torch.rand(1, 3, 8, 8), torch.rand(1, 3)), tmp_path / "two.onnx",
                           dynamic="batch,height")
    assert [s.shape for s in manifest.inputs] == [["batch", 3, "height", 8], ["batch", 3]]
    x = (torch.rand(2, 3, 16, 8), torch.rand(2, 3))
    assert verify(tmp_path / "two.onnx", extractor, inputs=[x]).ok
    assert manifest.dynamic == ["batch", "height"]
