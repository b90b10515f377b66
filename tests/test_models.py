"""Model specs, weights and the example models (in process, no downloads)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from fxexport.errors import InvalidInputError, TraceError
from fxexport.models import (
    ModelSpec,
    default_input_shape,
    extractor_from_info,
    load_model,
    model_from_info,
    model_info,
    parse_model_kwargs,
    parse_spec,
    resolve_leaf_modules,
    weights_sha256,
)

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


def spec(name: str, attr: str = "build") -> str:
    return f"{MODELS / name}.py:{attr}"


# ----------------------------------------------------------------------------- specs


@pytest.mark.parametrize(
    "text, expected",
    [
        ("torchvision:resnet18", ModelSpec("torchvision", "resnet18")),
        ("timm:resnet50.a1_in1k", ModelSpec("timm", "resnet50.a1_in1k")),
        ("models/multitask.py", ModelSpec("file", "models/multitask.py", "build")),
        ("models/multitask.py:build", ModelSpec("file", "models/multitask.py", "build")),
        ("./net:make", ModelSpec("file", "./net", "make")),
        ("pkg.sub.mod:make_net", ModelSpec("module", "pkg.sub.mod", "make_net")),
    ],
)
def test_parse_spec_forms(text, expected):
    assert parse_spec(text) == expected
    assert isinstance(str(expected), str)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty model spec"),
        ("torchvision:", "names no model"),
        ("pkg.mod:", "malformed model spec"),
        ("resnet18", "did you mean 'torchvision:resnet18'"),
        ("resnt18", "'torchvision:resnet18'"),
    ],
)
def test_parse_spec_errors(text, fragment):
    with pytest.raises(InvalidInputError) as info:
        parse_spec(text)
    assert fragment in str(info.value)


def test_unknown_names_get_closest_suggestions():
    with pytest.raises(InvalidInputError) as info:
        load_model("torchvision:resnt18")
    assert "unknown torchvision model 'resnt18'" in str(info.value)
    assert "'torchvision:resnet18'" in str(info.value)
    with pytest.raises(InvalidInputError) as info:
        load_model("timm:resnt50")
    assert "'timm:resnet50'" in str(info.value)


def test_timm_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(InvalidInputError, match="pip install timm"):
        load_model("timm:resnet18")


def test_timm_model_builds_without_download():
    model = load_model("timm:resnet18", kwargs={"num_classes": 3})
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 3)
    assert default_input_shape(model) == (1, 3, 224, 224)
    with pytest.raises(InvalidInputError, match="never downloads"):
        load_model("timm:resnet18", kwargs={"pretrained": True})


def test_torchvision_never_downloads():
    with pytest.raises(InvalidInputError, match="never downloads"):
        load_model("torchvision:resnet18", kwargs={"weights": "DEFAULT"})
    # detection builders default to a pretrained backbone: it must be switched off
    model = load_model("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn")
    assert type(model).__name__ == "FasterRCNN"


def test_file_and_module_specs(tmp_path, monkeypatch):
    model = load_model(spec("multitask"), kwargs={"num_classes": 4})
    assert model.cls_head.fc.out_features == 4
    assert not model.training
    with pytest.raises(InvalidInputError, match="closest: 'build'"):
        load_model(spec("multitask", "buidl"))
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_model(str(tmp_path / "nope.py"))
    with pytest.raises(InvalidInputError, match="does not accept"):
        load_model(spec("multitask"), kwargs={"colour": "red"})
    (tmp_path / "mynets.py").write_text(
        "import torch\ndef make(n=2):\n    return torch.nn.Linear(3, n)\ndef notmodel():\n    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_model("mynets:make", kwargs={"n": 5}).out_features == 5
    with pytest.raises(InvalidInputError, match="not a torch.nn.Module"):
        load_model("mynets:notmodel")
    with pytest.raises(InvalidInputError, match="cannot import module 'nosuchpkg.mod'"):
        load_model("nosuchpkg.mod:make")


def test_model_kwargs_parsing():
    assert parse_model_kwargs('{"num_classes": 10}') == {"num_classes": 10}
    assert parse_model_kwargs("") == {}
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        parse_model_kwargs("{num_classes: 10}")
    with pytest.raises(InvalidInputError, match="JSON object"):
        parse_model_kwargs("[1, 2]")


# ----------------------------------------------------------------------------- seeding


def test_seeded_init_is_reproducible_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = load_model(spec("train_eval"), seed=0)
    b = load_model(spec("train_eval"), seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    # a builder with a `seed` parameter (the example models) gets load_model's seed
    e = load_model(spec("train_eval"), seed=1)
    assert not torch.equal(a.fc.weight, e.fc.weight)
    assert torch.equal(e.fc.weight, load_model(spec("train_eval"), seed=1).fc.weight)
    c = load_model("torchvision:resnet18", seed=1)
    d = load_model("torchvision:resnet18", seed=2)
    assert not torch.equal(c.conv1.weight, d.conv1.weight)
    assert torch.equal(c.conv1.weight, load_model("torchvision:resnet18", seed=1).conv1.weight)


# ----------------------------------------------------------------------------- weights


@pytest.fixture(scope="module")
def net_and_files(tmp_path_factory):
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("weights")
    model = load_model(spec("multitask"), seed=7)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(d / "w.safetensors"))
    torch.save(sd, d / "w.pt")
    torch.save({"state_dict": sd, "epoch": 3}, d / "wrapped.pt")
    torch.save(model, d / "whole_model.pt")
    extra = dict(sd, **{"extra.weight": torch.zeros(1)})
    torch.save(extra, d / "extra.pt")
    missing = {k: v for k, v in sd.items() if not k.startswith("seg_head")}
    torch.save(missing, d / "missing.pt")
    (d / "garbage.safetensors").write_bytes(b"not a safetensors file")
    return model, d


@pytest.mark.parametrize("name", ["w.safetensors", "w.pt", "wrapped.pt"])
def test_weights_load_exactly(net_and_files, name):
    model, d = net_and_files
    loaded = load_model(spec("multitask"), weights=d / name, seed=0)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_weights_errors_name_the_problem(net_and_files):
    _, d = net_and_files
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_model(spec("multitask"), weights=d / "nope.pt")
    with pytest.raises(InvalidInputError) as info:
        load_model(spec("multitask"), weights=d / "missing.pt")
    assert "missing keys 'seg_head." in str(info.value)
    with pytest.raises(InvalidInputError, match="unexpected keys 'extra.weight'"):
        load_model(spec("multitask"), weights=d / "extra.pt")
    with pytest.raises(InvalidInputError, match=r"shape mismatch: 'cls_head.fc.weight' is \(10, 128\)"):
        load_model(spec("multitask"), kwargs={"num_classes": 3}, weights=d / "w.pt")
    with pytest.raises(InvalidInputError, match="never unpickles"):
        load_model(spec("multitask"), weights=d / "whole_model.pt")
    with pytest.raises(InvalidInputError, match="not a readable .safetensors"):
        load_model(spec("multitask"), weights=d / "garbage.safetensors")


def test_model_info_and_rebuild(net_and_files):
    model, d = net_and_files
    info = model_info(spec("multitask"), kwargs={"num_classes": 10}, weights=d / "w.pt", seed=7)
    assert info == {"spec": spec("multitask"), "kwargs": {"num_classes": 10},
                    "weights_sha256": weights_sha256(d / "w.pt"), "seed": 7}
    assert len(info["weights_sha256"]) == 64
    # a file spec is code: rebuilt only on the user's word (trust_model_spec=True, see tests/test_trust.py)
    with pytest.raises(InvalidInputError, match="a Python file, and fxexport never imports code"):
        model_from_info(info, weights=d / "w.pt")
    rebuilt = model_from_info(info, weights=d / "w.pt", trust_model_spec=True)
    assert torch.equal(rebuilt.cls_head.fc.weight, model.cls_head.fc.weight)
    with pytest.raises(InvalidInputError, match="pass the same file with --weights"):
        model_from_info(info, trust_model_spec=True)
    with pytest.raises(InvalidInputError, match="is not the one the artifact was exported with"):
        model_from_info(info, weights=d / "wrapped.pt", trust_model_spec=True)
    with pytest.raises(InvalidInputError, match="records no model spec"):
        model_from_info({})
    # no weights recorded: the seed rebuilds the same random model
    seeded = model_from_info(model_info(spec("multitask"), seed=7), trust_model_spec=True)
    assert torch.equal(seeded.cls_head.fc.weight, model.cls_head.fc.weight)


# ----------------------------------------------------------------------------- example models


def test_multitask_heads():
    model = load_model(spec("multitask"))
    assert default_input_shape(model) == (1, 3, 64, 64)
    out = model(torch.rand(2, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "logits": (2, 10), "seg": (2, 5, 64, 64), "depth": (2, 1, 64, 64)}


def test_needs_leaf_model_traces_only_with_leaf():
    from fxexport import create_feature_extractor, get_graph_node_names

    model = load_model(spec("needs_leaf"))
    with pytest.raises(TraceError, match="Gate"):
        get_graph_node_names(model)
    leaves = resolve_leaf_modules(model, ["Gate"])
    assert [c.__name__ for c in leaves] == ["Gate"]
    _, eval_nodes = get_graph_node_names(model, leaf_modules=leaves)
    assert "gate" in eval_nodes and "gate.pool" not in eval_nodes
    extractor = create_feature_extractor(model, {"gate": "gated"}, leaf_modules=leaves)
    assert extractor(torch.rand(1, 3, 32, 32))["gated"].shape == (1, 32, 8, 8)
    with pytest.raises(InvalidInputError, match="closest: 'Gate'"):
        resolve_leaf_modules(model, ["Gat"])
    # the leaf modules travel in the manifest's model entry
    info = model_info(spec("needs_leaf"), leaf_modules=["Gate"])
    rebuilt = extractor_from_info(info, {"gate": "gated"}, trust_model_spec=True)
    assert torch.equal(rebuilt(torch.ones(1, 3, 32, 32))["gated"], extractor(torch.ones(1, 3, 32, 32))["gated"])


def test_train_eval_model_graphs_differ():
    from fxexport import get_graph_node_names

    model = load_model(spec("train_eval"))
    train_nodes, eval_nodes = get_graph_node_names(model, suppress_diff_warning=True)
    only_train = [n for n in train_nodes if n not in eval_nodes]
    assert "aux_head.fc" in only_train and "randn_like" in only_train
    assert set(eval_nodes) <= set(train_nodes)
    assert list(model.train()(torch.rand(2, 3, 32, 32))) == ["logits", "aux"]
    assert list(model.eval()(torch.rand(2, 3, 32, 32))) == ["logits"]


def test_describe_nodes_shapes_and_merge():
    from fxexport.describe import describe_nodes, merge_node_lists, node_tree

    model = load_model(spec("train_eval"))
    train = describe_nodes(model, torch.rand(1, 3, 32, 32), mode="train")
    by_name = {i.name: i for i in train}
    assert by_name["aux_head.fc"].op == "Linear" and by_name["aux_head.fc"].shape == [1, 10]
    assert by_name["stage1.1"].op == "BatchNorm2d"
    assert model.stage1[1].num_batches_tracked.item() == 0  # ran on a copy: statistics untouched
    assert not model.training
    eval_ = describe_nodes(model, mode="eval")
    assert all(i.shape is None for i in eval_)
    merged = merge_node_lists([i.name for i in train], [i.name for i in eval_])
    assert [n for n, _ in merged] == [i.name for i in train]
    assert dict(merged)["aux_head.fc"] == "train" and dict(merged)["fc"] == "both"
    assert merge_node_lists(["x", "a"], ["x", "b"]) == [("x", "both"), ("a", "train"), ("b", "eval")]
    tree = node_tree((n, None) for n, _ in merged)
    assert list(tree.children["aux_head"].children) == ["pool", "flatten", "fc"]
    with pytest.raises(InvalidInputError, match="--input-shape"):
        describe_nodes(model, torch.rand(1, 5, 32, 32))
