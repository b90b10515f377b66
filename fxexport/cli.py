"""The ``fxexport`` command line: parse, call the library, print. No logic of its own.

Commands: ``nodes``, ``export``, ``verify``, ``inspect``, ``demo``, ``cpp-example``, ``zoo``,
``optimize``. Every command has ``--help`` with an example, ``--json`` / ``--quiet`` for
scripts and ``--debug`` for tracebacks. Errors are one line on stderr,
``fxexport: error: <message>``, exit code 2; a verification mismatch exits with 1.

What each command does is one library call away: formats and runtimes come from the
registry (:mod:`fxexport.formats`), tables from :mod:`fxexport.display` and the reports'
own ``__rich__``, the C++ programs from :mod:`fxexport.cpp`.

Adding a command: write ``add_<name>_parser(sub)`` (which calls ``_command(sub, ...)``
with the handler) and ``cmd_<name>(args) -> int``, and append the add function to
:data:`COMMANDS`.

Example:
    >>> main(["nodes", "torchvision:resnet18", "--filter", "^layer4.1", "--quiet"])
    layer4.1.conv1
    layer4.1.bn1
    layer4.1.relu
    layer4.1.conv2
    layer4.1.bn2
    layer4.1.add
    layer4.1.relu_1
    0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Iterator

PROG = "fxexport"
DEMO_OUT = "build/demo"


# ----------------------------------------------------------------------------- plumbing


class CliError(Exception):
    """A usage error found while parsing (printed like any other error, exit 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line: ``fxexport: error: <message>``."""

    def error(self, message: str):  # noqa: D401 - argparse API
        hint = f" (see '{self.prog} --help')"
        sys.stderr.write(f"{PROG}: error: {message}{hint}\n")
        raise SystemExit(2)


def _console(stderr: bool = False):
    """A pipe or a log gets 160 columns at least and every table uncut (:func:`fxexport.display.console`)."""
    from fxexport.display import console

    return console(stderr=stderr)


def _out(args) -> Any:
    """The stdout console, or None when the command prints nothing but data."""
    if getattr(args, "json", False) or getattr(args, "quiet", False):
        return None
    return _console()


@contextlib.contextmanager
def _step(args, message: str) -> Iterator[None]:
    """A spinner on stderr while a slow step runs (silent with --quiet / --json / no tty)."""
    if getattr(args, "quiet", False) or getattr(args, "json", False):
        yield
        return
    err = _console(stderr=True)
    start = time.perf_counter()
    if err.is_terminal:
        with err.status(message):
            yield
    else:
        yield
    elapsed = time.perf_counter() - start
    if elapsed >= 1.0:
        err.print(f"[dim]{message.rstrip('.')} ({elapsed:.1f} s)[/dim]")


def _esc(value: Any) -> str:
    from rich.markup import escape

    return escape(str(value))


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


#: the longest error line the CLI prints (the library's messages are one line; this only stops a runaway one)
ERROR_LIMIT = 1000


# ----------------------------------------------------------------------------- argument types


def _shape(text: str) -> tuple[int, ...]:
    """``B,C,H,W`` (or ``BxCxHxW``) -> tuple of positive ints."""
    parts = [p.strip() for p in re.split(r"[,x]", text.strip())] if text.strip() else []
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(
            f"malformed shape {text!r}: expected positive integers separated by commas, e.g. 1,3,224,224"
        )
    return tuple(int(p) for p in parts)


def _input(text: str) -> tuple[str, tuple[int, ...], str]:
    """``NAME=B,C,H,W[:DTYPE]`` -> (name, shape, dtype) for ``--input`` (nodes, export)."""
    name, sep, rest = text.partition("=")
    shape_text, _, dtype = rest.partition(":")
    name, dtype = name.strip(), dtype.strip() or "float32"
    hint = (f"malformed --input {text!r}: expected NAME=B,C,H,W[:DTYPE] (e.g. rgb=1,3,224,224 or "
            "ids=1,128:int64), one per forward argument (cpp-example's --input takes a FILE.npy)")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(hint)
    try:
        shape = _shape(shape_text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(hint) from None
    from fxexport.verification.inputs import torch_dtype

    try:
        torch_dtype(dtype)
    except ValueError:
        raise argparse.ArgumentTypeError(f"unknown dtype {dtype!r} in --input {text!r}: use float32, float16, "
                                         "int64, int32, uint8 or bool") from None
    return name, shape, dtype


def _size(text: str) -> int | tuple[int, int]:
    """``N`` or ``H,W`` (``--resize``, ``--crop``)."""
    shape = _shape(text)
    if len(shape) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected a size N or H,W, got {text!r}")
    return shape[0] if len(shape) == 1 else (shape[0], shape[1])


def _floats(count: int) -> Callable[[str], tuple[float, ...]]:
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"expected {count} comma-separated numbers, got {text!r}")
        return values
    return parse


def _node(text: str) -> tuple[str, str]:
    """``NODE=NAME`` or ``NODE`` -> (node, output name)."""
    node, sep, name = text.partition("=")
    node, name = node.strip(), name.strip()
    if not sep:
        name = node
    if not node or not name or "=" in name or any(c.isspace() for c in node + name):
        raise argparse.ArgumentTypeError(
            f"malformed --node {text!r}: expected NODE=NAME (e.g. layer1=feat1) or NODE (e.g. layer1)"
        )
    return node, name


def _return_nodes(pairs: list[tuple[str, str]] | None) -> dict[str, str]:
    nodes: dict[str, str] = {}
    for node, name in pairs or []:
        if node in nodes:
            raise CliError(f"--node '{node}' is given twice")
        if name in nodes.values():
            raise CliError(f"output name '{name}' is used by two --node options; output names must be unique")
        nodes[node] = name
    return nodes


DYNAMIC_DIMS = ("batch", "height", "width")


def _dynamic(text: str) -> tuple[str, ...]:
    dims = tuple(d.strip() for d in text.split(",") if d.strip())
    bad = [d for d in dims if d not in DYNAMIC_DIMS]
    if not dims or bad:
        raise argparse.ArgumentTypeError(
            f"unknown dynamic dim {', '.join(map(repr, bad)) or repr(text)}: expected any of {', '.join(DYNAMIC_DIMS)}"
        )
    return dims


def _regex(text: str) -> re.Pattern:
    try:
        return re.compile(text)
    except re.error as err:
        raise argparse.ArgumentTypeError(f"malformed --filter regex {text!r}: {err}") from None


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


# ----------------------------------------------------------------------------- shared options


def _common(p: argparse.ArgumentParser, *, json_help: str = "print JSON on stdout (nothing else)") -> None:
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help=json_help)
    g.add_argument("--quiet", "-q", action="store_true", help="print only the essentials (no tables, no progress)")
    g.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")


def _model_options(p: argparse.ArgumentParser, *, positional: bool = True) -> None:
    if positional:
        p.add_argument("model", metavar="MODEL",
                       help="model spec: torchvision:NAME, timm:NAME, path/to/file.py[:callable] or "
                            "package.module:callable")
    g = p.add_argument_group("model")
    if not positional:
        g.add_argument("--model", metavar="MODEL", default=None,
                       help="model spec (default: the one recorded in the artifact)")
    g.add_argument("--model-kwargs", metavar="JSON", default=None,
                   help="keyword arguments for the model builder, e.g. '{\"num_classes\": 10}'")
    g.add_argument("--weights", metavar="FILE", default=None,
                   help="state dict: .safetensors or torch.save file (loaded with weights_only=True); "
                        "default: seeded random")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the random initialisation and example input (default 0)")
    g.add_argument("--leaf-module", metavar="CLASS", action="append", default=[],
                   help="module class not to trace into (control flow on tensor values); repeatable")


def _input_shape_option(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--input-shape", metavar="B,C,H,W", type=_shape, default=None,
                   help="example input shape of a one-input model (default: the model's own, else 1,3,224,224)")
    g.add_argument("--input", metavar="NAME=B,C,H,W[:DTYPE]", type=_input, action="append", default=None,
                   help="an example input by its forward argument's name, with its shape and dtype (default "
                        "float32); repeatable, one per input (a model with several inputs); --dynamic applies "
                        "to every input that has those dims")


#: ``--preprocess`` flags: option dest -> the preprocessing record's field (fxexport.preprocess.Preprocess)
PREPROCESS_FLAGS = {"resize": "resize", "crop": "crop", "crop_pct": "crop_pct", "interpolation": "interpolation",
                    "antialias": "antialias", "range": "value_range", "mean": "mean", "std": "std",
                    "channel_order": "channel_order", "alpha": "alpha", "background": "background",
                    "exif_orientation": "exif_orientation"}


def _preprocess_options(p: argparse.ArgumentParser, what: str) -> None:
    from fxexport.preprocess import INTERPOLATIONS

    g = p.add_argument_group(
        "image preprocessing", f"how {what}; each flag sets one field over the record the artifact's "
        "manifest holds, else the model spec's default (timm pretrained_cfg, torchvision weights transforms)")
    g.add_argument("--image-input", metavar="NAME", default=None,
                   help="the input images feed (default: the only (N, 3, H, W) input)")
    g.add_argument("--resize", metavar="N|H,W", type=_size, default=None,
                   help="resize the shorter side to N, or to exactly H,W")
    g.add_argument("--crop", metavar="N|H,W", type=_size, default=None, help="center crop to N x N or H x W")
    g.add_argument("--crop-pct", metavar="F", type=float, default=None,
                   help="with --crop and no --resize: resize to floor(crop / F) first (timm's crop_pct)")
    g.add_argument("--interpolation", choices=INTERPOLATIONS, default=None, help="resize interpolation")
    g.add_argument("--antialias", action=argparse.BooleanOptionalAction, default=None,
                   help="antialiased down-scaling (default on)")
    g.add_argument("--range", metavar="LO,HI", type=_floats(2), default=None,
                   help="map pixel values 0..255 to LO..HI (default 0,1)")
    g.add_argument("--mean", metavar="R,G,B", type=_floats(3), default=None, help="subtract per channel")
    g.add_argument("--std", metavar="R,G,B", type=_floats(3), default=None, help="then divide per channel")
    g.add_argument("--channel-order", choices=("RGB", "BGR"), default=None, help="channel order (default RGB)")
    g.add_argument("--alpha", choices=("drop", "blend"), default=None,
                   help="an alpha channel: drop it (default) or blend over --background")
    g.add_argument("--background", metavar="R,G,B", type=_floats(3), default=None,
                   help="what --alpha blend composites over, 0..255 (default 255,255,255)")
    g.add_argument("--exif-orientation", action=argparse.BooleanOptionalAction, default=None,
                   help="apply the file's EXIF orientation tag (default on)")


def _preprocess_flags(args) -> dict[str, Any]:
    """The preprocessing fields given on the command line, checked (``{field: value}``)."""
    from fxexport.errors import InvalidInputError
    from fxexport.preprocess import Preprocess

    flags = {field: getattr(args, dest) for dest, field in PREPROCESS_FLAGS.items()
             if getattr(args, dest, None) is not None}
    if "background" in flags:
        flags["background"] = tuple(int(v) if float(v).is_integer() else v for v in flags["background"])
    try:
        Preprocess().override(dict(flags, crop=flags.get("crop", 1)) if "crop_pct" in flags else flags)
    except InvalidInputError as err:
        message = str(err)
        for dest, field in PREPROCESS_FLAGS.items():
            message = message.replace(f"preprocess field '{field}'", "--" + dest.replace("_", "-"))
        raise CliError(message) from None
    return flags


def _command(sub, name: str, handler: Callable, help: str, example: str,
             description: str = "") -> argparse.ArgumentParser:
    p = sub.add_parser(
        name, help=help, description=(description or help) + "\n\nexample:\n" + textwrap.indent(example.strip(), "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(handler=handler)
    return p


def _load(args):
    """(model, leaf classes, model_info) from the model options."""
    from fxexport.models import load_model, model_info, parse_model_kwargs, resolve_leaf_modules

    kwargs = parse_model_kwargs(args.model_kwargs)
    with _step(args, f"Building {args.model}..."):
        model = load_model(args.model, kwargs=kwargs, weights=args.weights, seed=args.seed)
    leaves = resolve_leaf_modules(model, args.leaf_module)
    info = model_info(args.model, kwargs=kwargs, weights=args.weights, seed=args.seed, leaf_modules=args.leaf_module)
    return model, leaves, info


def _example_input(args, model):
    """The example input(s): one tensor (``--input-shape``, the model's own shape), or a tuple of tensors in
    the order of the model's forward arguments (``--input NAME=...``, or a model's ``example_input_shapes``)."""
    return _example_inputs(args, model)[0]


def _example_inputs(args, model) -> tuple[Any, dict[str, Any] | None]:
    """(example, concrete_args): the example as :func:`_example_input` gives it, and ``{name: torch.fx.PH}`` for
    the inputs given by name that default to None (so they stay inputs instead of being fixed to None)."""
    import inspect

    import torch

    from fxexport.models import default_input_shape
    from fxexport.verification.inputs import torch_dtype

    gen = torch.Generator().manual_seed(args.seed)
    given = getattr(args, "input", None)
    if not given:
        shapes = getattr(model, "example_input_shapes", None)
        if args.input_shape is None and shapes is not None and len(shapes) > 1:
            return tuple(torch.randn(*s, generator=gen) for s in shapes), None
        return torch.randn(*(args.input_shape or default_input_shape(model)), generator=gen), None
    names = [n for n, _, _ in given]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CliError(f"--input '{dupes[0]}' is given twice")
    try:
        params = [p for p in inspect.signature(model.forward).parameters.values()]
    except (TypeError, ValueError):
        params = []
    if params and not any(p.kind == p.VAR_POSITIONAL for p in params):
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        order = [p.name for p in positional]
        unknown = [n for n in names if n not in order]
        if unknown:
            raise CliError(f"--input '{unknown[0]}' is not an argument of the model's forward "
                           f"({', '.join(order)}); name each input after its argument")
        missing = [p.name for p in positional if p.name not in names and p.default is p.empty]
        if missing:
            raise CliError(f"the model's forward also needs {', '.join(missing)}: give --input NAME=SHAPE for each")
        given = sorted(given, key=lambda g: order.index(g[0]))
        defaults = {p.name: p.default for p in positional}
        gaps = [p.name for p in positional[:order.index(given[-1][0])] if p.name not in names]
        if gaps:
            raise CliError(f"inputs are positional: give --input for {', '.join(gaps)} too (it comes before "
                           f"'{given[-1][0]}' in forward)")
        keep = {n: torch.fx.PH for n in names if defaults.get(n, 0) is None}
    else:
        keep = {}
    tensors = []
    for _, shape, dtype_name in given:
        dtype = torch_dtype(dtype_name)
        if dtype.is_floating_point:
            tensors.append(torch.randn(*shape, generator=gen).to(dtype))
        elif dtype == torch.bool:
            tensors.append(torch.randint(0, 2, shape, generator=gen).bool())
        else:
            tensors.append(torch.randint(0, 10, shape, generator=gen, dtype=dtype))
    return (tensors[0] if len(tensors) == 1 else tuple(tensors)), (keep or None)


# ----------------------------------------------------------------------------- nodes


def add_nodes_parser(sub) -> None:
    p = _command(
        sub, "nodes", cmd_nodes, "list a model's graph node names (the names --node takes)",
        """fxexport nodes torchvision:resnet18 --shapes --filter '^layer[1-4]$|relu_1$'
fxexport nodes models/train_eval.py:build --mode both --tree
fxexport nodes models/needs_leaf.py:build --leaf-module Gate --json""",
        "List the node names of a model's FX graph in execution order. Nodes that exist only "
        "in train or only in eval mode are marked.",
    )
    _model_options(p)
    p.add_argument("--mode", choices=("train", "eval", "both"), default="both",
                   help="which graph to list (default both: eval order, train-only nodes marked)")
    p.add_argument("--shapes", action="store_true",
                   help="run the graph once on an example input and show each node's shape, dtype and op")
    _input_shape_option(p)
    p.add_argument("--filter", metavar="REGEX", type=_regex, default=None, help="only nodes whose name matches REGEX")
    p.add_argument("--tree", action="store_true", help="group nodes by module path")
    p.add_argument("--html", metavar="FILE.html", default=None,
                   help="write the node explorer page instead (one self-contained file: module tree, shapes, "
                        "stages, search, click to build --node flags / return_nodes)")
    _common(p, json_help='print {"train": [...], "eval": [...]} (with shapes when asked)')


def cmd_nodes(args) -> int:
    from fxexport.describe import describe_nodes
    from fxexport.display import NodeListing
    from fxexport.errors import InvalidInputError, one_line

    if args.html and (args.filter or args.tree or args.mode != "both"):
        raise CliError("--html writes every node of both modes (the page filters and groups them): "
                       "drop --filter, --tree and --mode")
    model, leaves, _ = _load(args)
    if args.html:
        from fxexport.explorer import write_node_explorer

        example, keep = _example_inputs(args, model)
        with _step(args, f"Tracing, running once and writing {args.html}..."):
            page = write_node_explorer(model, args.html, example, title=args.model,
                                       spec=args.model, leaf_modules=leaves or None, concrete_args=keep)
        if args.json:
            _print_json({"html": str(page.path), "nodes": page.n_nodes, "stages": page.stages, "bytes": page.bytes})
        else:
            sys.stdout.write(f"{page.path}\n" if args.quiet else
                             f"wrote {page.path}: {page.n_nodes} nodes, {len(page.stages)} stages, "
                             f"{page.bytes / 1024:.0f} KB\n")
        return 0
    example, keep = _example_inputs(args, model)
    example = example if args.shapes else None
    modes = ("train", "eval") if args.mode == "both" else (args.mode,)
    per_mode = {}
    with _step(args, "Tracing" + (" and running" if args.shapes else "") + f" ({', '.join(modes)})..."):
        for mode in modes:
            try:
                per_mode[mode] = describe_nodes(model, example, mode=mode, leaf_modules=leaves or None,
                                                concrete_args=keep)
            except InvalidInputError as err:
                if args.mode != "both" or mode != "train" or example is None:
                    raise
                # e.g. batch norm in train mode on a batch of 1: the eval shapes are still worth showing
                sys.stderr.write(f"{PROG}: warning: no train-mode shapes: {one_line(err, typed=False)}\n")
                per_mode[mode] = describe_nodes(model, None, mode=mode, leaf_modules=leaves or None,
                                                concrete_args=keep)
    keep = (lambda n: bool(args.filter.search(n))) if args.filter else (lambda n: True)

    if args.json:
        _print_json({mode: [i.to_dict() if args.shapes else i.name for i in infos if keep(i.name)]
                     for mode, infos in per_mode.items()})
        return 0
    listing = NodeListing.from_modes(args.model, per_mode, keep=keep, shapes=args.shapes, tree=args.tree)
    if args.quiet:
        sys.stdout.write("".join(line + "\n" for line in listing.quiet_lines()))
    else:
        _console().print(listing)
    return 0


# ----------------------------------------------------------------------------- export


def add_export_parser(sub) -> None:
    p = _command(
        sub, "export", cmd_export, "export a multi-output extractor (ONNX, TorchScript, AOTInductor, ExecuTorch, "
        "OpenVINO IR, TFLite) with named outputs",
        """fxexport export torchvision:resnet18 --node layer1=feat1 --node layer4=feat4 \\
    --dynamic batch --onnx out/resnet18.onnx --torchscript out/resnet18.pt --verify
fxexport export torchvision:resnet18 --node layer2 --node layer4 --openvino out/r18.xml \\
    --tflite out/r18.tflite --verify""",
        "Build an extractor returning the given nodes and export it; graph outputs are named "
        "after the output names. Nothing is written when something fails.",
    )
    _model_options(p)
    p.add_argument("--node", metavar="NODE[=NAME]", type=_node, action="append", required=True,
                   help="a node to return (name from `fxexport nodes`), optionally renamed; repeatable")
    _input_shape_option(p)
    g = p.add_argument_group("formats")
    g.add_argument("--onnx", metavar="FILE", default=None, help="write an ONNX model here")
    g.add_argument("--torchscript", metavar="FILE", default=None, help="write a TorchScript archive here")
    g.add_argument("--aoti", metavar="FILE.pt2", default=None,
                   help="compile an AOTInductor package here, for C++ (built for this machine's CPU; tens of seconds)")
    g.add_argument("--executorch", metavar="FILE.pte", default=None,
                   help="lower to an ExecuTorch program here (XNNPACK; static shapes; needs fxexport[edge])")
    g.add_argument("--openvino", metavar="FILE.xml", default=None,
                   help="write an OpenVINO IR here (FILE.xml + FILE.bin, float32 weights; needs fxexport[openvino])")
    g.add_argument("--tflite", metavar="FILE.tflite", default=None,
                   help="convert to a LiteRT (TFLite) model here, manifest inside the file (needs fxexport[litert])")
    g.add_argument("--dynamic", metavar="DIMS", type=_dynamic, default=None,
                   help="dims that may vary at run time: batch[,height,width]")
    g.add_argument("--opset", type=_positive_int, default=None,
                   help="ONNX opset, also of the graph the OpenVINO IR is converted from (default: the exporter's)")
    g.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default="auto",
                   help="ONNX exporter, for --onnx and --openvino (default auto: the one that works, fastest first)")
    g.add_argument("--ts-method", choices=("auto", "script", "trace"), default="auto",
                   help="TorchScript method (default auto: script, else trace)")
    v = p.add_argument_group("verification")
    v.add_argument("--verify", action="store_true", help="verify the artifacts against the eager extractor afterwards")
    _tolerance_options(v)
    _preprocess_options(p, "images become the image input, recorded in the manifest (source 'flag'; without "
                           "flags the model spec's default is recorded, source 'spec default')")
    _common(p, json_help="print the manifests (and verification report) as JSON")


def _known_suffixes() -> str:
    """The suffixes the format registry reads, for help texts."""
    from fxexport.formats import suffixes

    return ", ".join(suffixes())


def _known_runtimes() -> str:
    from fxexport.formats import runtimes

    return ", ".join(runtimes())


def _runtimes_by_suffix() -> str:
    """``.onnx: onnxruntime, openvino; .pt/.ts: torchscript; ...`` from the format registry."""
    from fxexport.formats import formats

    return "; ".join(f"{'/'.join(f.SUFFIXES)}: {', '.join(f.RUNTIMES)}" for f in formats())


def _tolerance_options(g) -> None:
    g.add_argument("--atol", type=_nonneg_float, default=1e-4, help="absolute tolerance (default 1e-4)")
    g.add_argument("--rtol", type=_nonneg_float, default=1e-3, help="relative tolerance (default 1e-3)")
    g.add_argument("--n-inputs", type=_positive_int, default=3, help="random inputs to compare on (default 3)")


def _print_manifest_outputs(console, manifest, path) -> None:
    from fxexport.display import ManifestView

    console.print(ManifestView(manifest, path))


def _report(args, report, console) -> int:
    if args.json:
        return 0 if report.ok else 1
    if console is not None:
        console.print(report)
    elif not report.ok:
        _console(stderr=True).print(report)
    if args.quiet:
        verdict = "ok" if report.ok else "MISMATCH" if getattr(report, "compared", True) else "NOT VERIFIED"
        sys.stdout.write(verdict + "\n")
    return 0 if report.ok else 1


def cmd_export(args) -> int:
    from fxexport.formats.onnx import export_onnx
    from fxexport.formats.torchscript import export_torchscript
    from fxexport.extractor import create_feature_extractor
    from fxexport.verification import verify

    if not any((args.onnx, args.torchscript, args.aoti, args.executorch, args.openvino, args.tflite)):
        raise CliError("nothing to write: give --onnx FILE, --torchscript FILE, --aoti FILE.pt2, "
                       "--executorch FILE.pte, --openvino FILE.xml and/or --tflite FILE.tflite")
    if args.executorch and args.dynamic:
        raise CliError("--executorch programs have static shapes: export them without --dynamic "
                       "(or in a separate command)")
    nodes = _return_nodes(args.node)
    flags = _preprocess_flags(args)
    model, leaves, info = _load(args)
    example, keep = _example_inputs(args, model)
    example = example if isinstance(example, tuple) else (example,)
    with _step(args, "Tracing..."):
        extractor = create_feature_extractor(model, nodes, leaf_modules=leaves or None, concrete_args=keep).eval()
    if flags or args.image_input:  # the manifest's preprocess record (fxexport.formats.common.make_manifest)
        info = dict(info, preprocess=flags or None, image_input=args.image_input)
    manifests = {}
    if args.onnx:
        with _step(args, f"Exporting ONNX to {args.onnx}..."):
            manifests[args.onnx] = export_onnx(
                extractor, example, args.onnx, dynamic=args.dynamic, opset=args.opset,
                exporter=args.exporter, model_info=info)
    if args.torchscript:
        with _step(args, f"Exporting TorchScript to {args.torchscript}..."):
            manifests[args.torchscript] = export_torchscript(
                extractor, example, args.torchscript, method=args.ts_method, dynamic=args.dynamic, model_info=info)
    if args.aoti:
        from fxexport.formats.aoti import export_aoti

        with _step(args, f"Compiling AOTInductor package {args.aoti}..."):
            manifests[args.aoti] = export_aoti(extractor, example, args.aoti, dynamic=args.dynamic, model_info=info)
    if args.executorch:
        from fxexport.formats.executorch import export_executorch

        with _step(args, f"Lowering to ExecuTorch {args.executorch}..."):
            manifests[args.executorch] = export_executorch(extractor, example, args.executorch, model_info=info)
    if args.openvino:
        from fxexport.formats import openvino

        with _step(args, f"Exporting OpenVINO IR to {args.openvino}..."):
            manifests[args.openvino] = openvino.export(extractor, example, args.openvino, dynamic=args.dynamic,
                                                       opset=args.opset, exporter=args.exporter, model_info=info)
    if args.tflite:
        from fxexport.formats import litert

        with _step(args, f"Converting to LiteRT {args.tflite}..."):
            manifests[args.tflite] = litert.export(extractor, example, args.tflite, dynamic=args.dynamic,
                                                   model_info=info)
    console = _out(args)
    if console is not None:
        for path, manifest in manifests.items():
            _print_manifest_outputs(console, manifest, path)
    elif args.quiet:
        for path in manifests:
            sys.stdout.write(f"{path}\n")
    report = None
    if args.verify:
        with _step(args, f"Verifying on {args.n_inputs} inputs..."):
            report = verify(list(manifests), extractor, n_inputs=args.n_inputs,
                                     rtol=args.rtol, atol=args.atol, seed=args.seed)
    if args.json:
        data = {"artifacts": {p: m.to_dict() for p, m in manifests.items()}}
        if report is not None:
            data["verify"] = report.to_dict()
        _print_json(data)
    return _report(args, report, console) if report is not None else 0


# ----------------------------------------------------------------------------- verify


def add_verify_parser(sub) -> None:
    p = _command(
        sub, "verify", cmd_verify, "check exported artifacts against the eager extractor, output by output",
        """fxexport verify out/resnet18.onnx out/resnet18.pt
fxexport verify out/model.onnx --weights model.safetensors --atol 1e-5 --report report.json
fxexport verify other.onnx --model torchvision:resnet18 --node layer1=feat1 --node layer4=feat4
fxexport verify out/resnet18.onnx out/resnet18.xml out/resnet18.tflite --runtime onnxruntime --runtime openvino \\
    --runtime litert
fxexport verify out/resnet18.onnx --inputs photos/ --resize 256 --crop 224""",
        "Run each artifact in its runtime (per suffix, the first is the default: "
        f"{_runtimes_by_suffix()}) and the eager extractor on the same inputs; compare every output. "
        "With --runtime, each artifact runs in every requested runtime its format supports (an .onnx in "
        "onnxruntime and OpenVINO with --runtime onnxruntime --runtime openvino). "
        "Exit 0 when all pass, 1 on a mismatch. "
        "The model and nodes are read from the artifact's manifest unless --model/--node are given; a manifest "
        "is untrusted, so only its torchvision:/timm: specs with plain kwargs are rebuilt (a file or module spec "
        "needs --model or --trust-model-spec). With --inputs DIR the inputs are your files: images (JPEG/PNG, "
        "preprocessed as the flags say, else as the manifest records, else as the model spec's weights expect), "
        ".npz files with one array per input name, or .npy files.",
    )
    p.add_argument("artifacts", metavar="ARTIFACT", nargs="+",
                   help=f"an artifact written by fxexport ({_known_suffixes()})")
    p.add_argument("--inputs", metavar="DIR", default=None,
                   help="verify on the files of DIR, one sample each: .jpg/.jpeg/.png images (for the image "
                        "input), .npz (one array per input name), .npy (one-input models); instead of random inputs")
    p.add_argument("--runtime", metavar="RUNTIME", action="append", default=None,
                   help=f"run in this runtime ({_known_runtimes()}); repeatable (default: each format's first)")
    _model_options(p, positional=False)
    p.add_argument("--node", metavar="NODE[=NAME]", type=_node, action="append", default=None,
                   help="with --model: the nodes the artifact returns; repeatable")
    _trust_option(p)
    _tolerance_options(p)
    p.add_argument("--report", metavar="FILE.json", default=None, help="also write the report as JSON here")
    p.add_argument("--html", metavar="FILE.html", default=None,
                   help="also write the report as a self-contained page (per runtime and output: max error vs "
                        "tolerance, cosine)")
    p.add_argument("--localize", action="store_true",
                   help="also name the first node where an .onnx or OpenVINO .xml artifact diverges from eager (on the "
                        "first failing input; exit codes unchanged)")
    _preprocess_options(p, "images in --inputs DIR become the image input")
    _common(p, json_help="print the report as JSON")


_TRUST_HELP = ("import and run the Python file or module that the artifact's manifest names as its model "
               "(a 'path.py:callable' or 'package.module:callable' spec) and pass its recorded kwargs unchecked; "
               "only for artifacts whose author you trust. Without it, only torchvision:/timm: specs with plain "
               "kwargs are rebuilt from a manifest; --model works on any artifact")


def _trust_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-model-spec", action="store_true", help=_TRUST_HELP)


def _explicit_extractor(args):
    """The extractor of ``--model SPEC --node ...``, or None when the manifest names the model."""
    if args.model:
        from fxexport.extractor import create_feature_extractor

        if args.trust_model_spec:
            raise CliError("--trust-model-spec is about the model spec recorded in the artifact; with --model "
                           "you name the model yourself, so drop one of them")
        if not args.node:
            raise CliError("--model needs the nodes the artifact returns: --node NODE=NAME (repeatable)")
        nodes = _return_nodes(args.node)
        model, leaves, _ = _load(args)
        with _step(args, "Tracing..."):
            return create_feature_extractor(model, nodes, leaf_modules=leaves or None).eval()
    if args.node:
        raise CliError("--node needs --model (without them the model and nodes come from the manifest)")
    if args.model_kwargs or args.leaf_module:
        raise CliError("--model-kwargs and --leaf-module need --model (the manifest records its own)")
    return None


@contextlib.contextmanager
def _progress(args, message: str) -> Iterator[Callable[[Any], None] | None]:
    """A progress bar on stderr fed by ``verify(progress=)`` (a terminal only; nothing with --quiet / --json)."""
    if getattr(args, "quiet", False) or getattr(args, "json", False):
        yield None
        return
    err = _console(stderr=True)
    if not err.is_terminal:
        with _step(args, message):
            yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(BarColumn(bar_width=20), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
                  console=err, transient=True) as bar:
        task = bar.add_task(_esc(message), total=None)

        def update(step: Any) -> None:
            bar.update(task, completed=step.done, total=step.total, description=_esc(step))

        yield update


def cmd_verify(args) -> int:
    from fxexport.verification import verify

    flags = _preprocess_flags(args)
    if (flags or args.image_input) and not args.inputs:
        raise CliError("the image preprocessing flags apply to the images of --inputs DIR")
    extractor = _explicit_extractor(args)
    what = f"the files of {args.inputs}" if args.inputs else f"{args.n_inputs} inputs"
    with _progress(args, f"Verifying {len(args.artifacts)} artifact(s) on {what}...") as progress:
        report = verify(args.artifacts if len(args.artifacts) > 1 else args.artifacts[0], extractor,
                        n_inputs=args.n_inputs, rtol=args.rtol, atol=args.atol, seed=args.seed,
                        weights=args.weights if extractor is None else None, runtimes=args.runtime,
                        trust_model_spec=args.trust_model_spec, localize=args.localize, inputs=args.inputs,
                        preprocess=flags or None, image_input=args.image_input, progress=progress)
    if args.report:
        report.to_json(args.report)
    if args.html:
        from fxexport.html_report import write_verify_report

        write_verify_report(report, args.html)
    if args.json:
        _print_json(report.to_dict())
    return _report(args, report, _out(args))


# ----------------------------------------------------------------------------- inspect


def add_inspect_parser(sub) -> None:
    p = _command(
        sub, "inspect", cmd_inspect, "show what an exported artifact says about itself",
        "fxexport inspect out/resnet18.onnx\nfxexport inspect out/resnet18.pt --json\n"
        "fxexport inspect out/resnet18.xml\nfxexport inspect out/resnet18.tflite --quiet",
        "Show the manifest, inputs and outputs with shapes, file size, opset and exporter of an artifact "
        f"({_known_suffixes()}). Only the file's bytes are read: nothing "
        "is imported, built or loaded (a TorchScript archive's forward signature comes from the source text in "
        "its zip; a .pt2's shared library is not loaded, its recorded CPU features are shown). A file fxexport "
        "did not write is shown as far as it can be read, then exit 2.",
    )
    p.add_argument("artifact", metavar="ARTIFACT", help=f"an artifact file ({_known_suffixes()})")
    _common(p, json_help="print the description as JSON")


def cmd_inspect(args) -> int:
    from fxexport.formats import describe_artifact
    from fxexport.display import ArtifactView

    with _step(args, f"Reading {args.artifact}..."):
        info = describe_artifact(args.artifact)
    if args.json:
        _print_json(info)
    elif args.quiet:
        sys.stdout.write("".join(line + "\n" for line in ArtifactView(info).quiet_lines()))
    else:
        _console().print(ArtifactView(info))
    if info["error"]:
        raise CliError(info["error"])
    return 0


# ----------------------------------------------------------------------------- demo


DEMO_MODEL = "torchvision:resnet18"
DEMO_NODES = {"layer1": "feat1", "layer2": "feat2", "layer3": "feat3", "layer4": "feat4", "fc": "logits"}


def add_demo_parser(sub) -> None:
    p = _command(
        sub, "demo", cmd_demo, "run the whole job on a built-in model (no download)",
        f"fxexport demo --out {DEMO_OUT}",
        f"On {DEMO_MODEL} with seeded random weights: list a few nodes with shapes, export layer1..layer4 "
        "and the logits as named outputs to ONNX and TorchScript, verify both, print the table.",
    )
    p.add_argument("--out", metavar="DIR", default=DEMO_OUT, help=f"where to write the artifacts (default {DEMO_OUT})")
    _common(p, json_help="print the manifests and the verification report as JSON")


def cmd_demo(args) -> int:
    from fxexport.describe import describe_nodes
    from fxexport.formats.onnx import export_onnx
    from fxexport.formats.torchscript import export_torchscript
    from fxexport.extractor import create_feature_extractor
    from fxexport.verification import verify
    from fxexport.models import load_model, model_info

    console = _out(args)
    start = time.perf_counter()
    if console is not None:
        console.rule(f"[bold]fxexport demo[/bold]: {DEMO_MODEL}, seeded random weights")
    with _step(args, f"Building {DEMO_MODEL}..."):
        model = load_model(DEMO_MODEL, seed=0)
    import torch

    example = (torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)),)
    with _step(args, "Tracing and running the graph once..."):
        infos = describe_nodes(model, example[0][:1])
    if console is not None:
        from fxexport.display import NodeListing

        shown = [i for i in infos if i.name in ("x", "conv1", "maxpool", *DEMO_NODES)
                 or i.name in [f"{n}.1.relu_1" for n in DEMO_NODES]]
        console.print(f"1. nodes ({len(infos)} in the eval graph; `fxexport nodes {DEMO_MODEL}` lists all):")
        console.print(NodeListing.from_modes(DEMO_MODEL, {"eval": shown}, shapes=True).table())
        console.print("2. extractor: " + ", ".join(f"{n} -> [bold]{o}[/bold]" for n, o in DEMO_NODES.items()))
    extractor = create_feature_extractor(model, DEMO_NODES).eval()
    out_dir = Path(args.out)
    info = model_info(DEMO_MODEL, seed=0)
    onnx_path, ts_path = out_dir / "resnet18_features.onnx", out_dir / "resnet18_features.pt"
    manifests = {}
    with _step(args, f"Exporting ONNX to {onnx_path}..."):
        manifests[str(onnx_path)] = export_onnx(extractor, example, onnx_path, dynamic=("batch",),
                                                         model_info=info)
    with _step(args, f"Exporting TorchScript to {ts_path}..."):
        manifests[str(ts_path)] = export_torchscript(extractor, example, ts_path, dynamic=("batch",),
                                                     model_info=info)
    if console is not None:
        console.print("3. exported:")
        for path, manifest in manifests.items():
            _print_manifest_outputs(console, manifest, path)
    with _step(args, "Verifying both in onnxruntime / torch.jit..."):
        report = verify(list(manifests), extractor, n_inputs=3)
    if args.json:
        _print_json({"artifacts": {p: m.to_dict() for p, m in manifests.items()}, "verify": report.to_dict()})
        return 0 if report.ok else 1
    if console is not None:
        console.print("4. verification (eager extractor vs each runtime):")
    code = _report(args, report, console)
    if console is not None:
        console.print(f"\nfiles: [bold]{_esc(onnx_path)}[/bold], [bold]{_esc(ts_path)}[/bold]   "
                      f"(try `fxexport inspect {_esc(onnx_path)}`)   [dim]{time.perf_counter() - start:.1f} s[/dim]")
    return code


# ----------------------------------------------------------------------------- cpp-example


def add_cpp_example_parser(sub) -> None:
    from fxexport.cpp import RUNTIMES

    p = _command(
        sub, "cpp-example", cmd_cpp_example,
        "build a C++ example program (libtorch: TorchScript / AOTInductor; OpenVINO: ONNX / IR) and optionally "
        "run an artifact in it",
        """fxexport cpp-example
fxexport cpp-example --run out/resnet18.pt2 --input x.npy --out out/cpp
fxexport cpp-example --runtime openvino --run out/resnet18.onnx --out out/cpp-ov""",
        "Compile scripts/cpp/fxexport_infer.cpp against the libtorch inside the installed torch, or with "
        "--runtime openvino scripts/cpp/fxexport_openvino.cpp against the C++ SDK inside the openvino wheel "
        "(once: the binary is cached and rebuilt only when the sources, the compiler or the library change) and "
        "print its path. With --run, run an artifact in it (.pt / .pt2 for libtorch, .onnx / .xml for OpenVINO): "
        "it prints each output's name, shape and checksums.",
    )
    p.add_argument("--runtime", choices=RUNTIMES, default=RUNTIMES[0],
                   help=f"which program: {' or '.join(RUNTIMES)} (default {RUNTIMES[0]})")
    p.add_argument("--cache-dir", metavar="DIR", default=None,
                   help="where to keep the binary (default $FXEXPORT_CACHE_DIR/cpp or ~/.cache/fxexport/cpp)")
    p.add_argument("--force", action="store_true", help="rebuild even if a cached binary exists")
    p.add_argument("--run", metavar="ARTIFACT", default=None,
                   help="an artifact to run: .pt (TorchScript) or .pt2 (AOTInductor) with libtorch, "
                        ".onnx or .xml (OpenVINO IR) with --runtime openvino")
    p.add_argument("--input", metavar="FILE.npy", default=None,
                   help="input tensor for --run (default: seeded random input of the manifest's shape)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="with --run: write each output to DIR/<i>_<name>.npy and DIR/outputs.json")
    p.add_argument("--threads", type=_positive_int, default=None, help="intra-op threads for the program")
    _common(p, json_help="print {binary, outputs} as JSON")


def cmd_cpp_example(args) -> int:
    import tempfile

    from fxexport.cpp import build_example, run_example

    if (args.input or args.out or args.threads) and not args.run:
        raise CliError("--input, --out and --threads are options of --run ARTIFACT (the artifact to run)")
    with _step(args, f"Building the {args.runtime} C++ example (cached after the first time)..."):
        binary = build_example(args.runtime, args.cache_dir, force=args.force)
    if not args.run:
        if args.json:
            _print_json({"binary": str(binary)})
        else:
            sys.stdout.write(f"{binary}\n")
        return 0
    with tempfile.TemporaryDirectory(prefix="fxexport-cpp-") as tmp:
        run = run_example(args.run, args.input, args.out or tmp, runtime=args.runtime, binary=binary,
                          threads=args.threads)
    if args.json:
        _print_json(run.to_dict())
    elif args.quiet:
        sys.stdout.write("".join(line + "\n" for line in run.output_lines()))
    else:
        sys.stdout.write(run.stdout)
    return 0


# ----------------------------------------------------------------------------- zoo


def add_zoo_parser(sub) -> None:
    from fxexport.zoo.command import add_arguments

    p = _command(
        sub, "zoo", cmd_zoo, "compatibility sweep over the model zoos (writes docs/compatibility.md)",
        """fxexport zoo --models smoke --fresh --no-matrix
fxexport zoo --models timm --workers 2 --backend ray""",
        "Trace, export (ONNX auto + the other exporter, TorchScript) and verify every model of a zoo set, "
        "each in its own worker process with a time limit; results go to a JSONL file (a re-run skips "
        "finished models) and the matrix to docs/compatibility.md.",
    )
    add_arguments(p)


def cmd_zoo(args) -> int:
    from fxexport.zoo.command import main_from_args

    return main_from_args(args)


# ----------------------------------------------------------------------------- optimize


def add_optimize_parser(sub) -> None:
    p = _command(
        sub, "optimize", cmd_optimize, "write optimized / fp16 / int8 / ORT-format variants of an export "
        "(onnxruntime, OpenVINO, LiteRT), each verified and measured",
        """fxexport optimize out/resnet18.onnx --fp16 --int8 static --calibration-random 16 --ort-format -o out/edge
fxexport optimize out/model.onnx --int8 static --calibration calib_npy/ --min-cosine 0.99 --report edge.json
fxexport optimize out/resnet18.onnx --int8 static --backend onnxruntime --backend openvino
fxexport optimize out/resnet18.tflite --int8 static
fxexport optimize out/resnet18.onnx --int8 static --calibration photos/ --inputs more_photos/ \\
    --backend onnxruntime --backend openvino""",
        "Write variants of an artifact written by `fxexport export` (.onnx, OpenVINO .xml, LiteRT .tflite) next "
        "to it (or into -o DIR), per --backend: onnxruntime (an .onnx source: onnxruntime-optimized always, "
        "float16, int8 dynamic or static QDQ, ORT format), openvino (the float32 IR and an NNCF int8 IR), "
        "litert (the float32 .tflite and an ai-edge-quantizer int8 one); static int8 is calibrated on a folder "
        "of images (preprocessed: flags > the manifest's record > the spec default), .npz or .npy inputs, or on N "
        "seeded random ones, the same for every backend. Each variant keeps the output "
        "names and the manifest, is verified against the eager extractor (rebuilt from the manifest, or --model) "
        "per output (cosine, max error relative to the output's range) and is timed in its runtime against its "
        "fp32 source, all in one table; an accurate variant slower than its fp32 source says 'slower'. Exit 0 "
        "when every variant is within its thresholds, 1 otherwise.",
    )
    p.add_argument("source", metavar="ARTIFACT",
                   help="an .onnx, .xml or .tflite file written by fxexport export")
    p.add_argument("--backend", metavar="BACKEND", action="append", default=None,
                   help=f"write variants for this runtime ({', '.join(_edge_backends())}); repeatable, all in one "
                        "table (default: the source's own runtime)")
    p.add_argument("--fp16", action="store_true", help="also write a float16 variant (float32 inputs/outputs kept)")
    p.add_argument("--int8", choices=("dynamic", "static"), default=None, help="also write an int8 variant")
    cal = p.add_mutually_exclusive_group()
    cal.add_argument("--calibration", metavar="DIR", default=None,
                     help="static int8, every backend: a folder of samples, one per file: .jpg/.jpeg/.png images "
                          "(for the image input, preprocessed as below), .npz (one array per input name) or .npy")
    cal.add_argument("--calibration-random", metavar="N", type=_positive_int, default=None,
                     help="static int8: calibrate on N seeded random inputs (default 16)")
    p.add_argument("--ort-format", action="store_true",
                   help="also write each onnxruntime variant in ORT format (.ort)")
    p.add_argument("-o", "--out-dir", metavar="DIR", default=None, help="where to write (default: beside the model)")
    _model_options(p, positional=False)
    p.add_argument("--node", metavar="NODE[=NAME]", type=_node, action="append", default=None,
                   help="with --model: the nodes the artifact returns; repeatable")
    _trust_option(p)
    t = p.add_argument_group("thresholds (fail only below them; default per precision: fp32 0.9999/1e-3, "
                             "fp16 0.999/0.02, int8 0.98/0.25)")
    t.add_argument("--min-cosine", type=_nonneg_float, default=None,
                   help="lowest per-output cosine similarity for the fp16/int8 variants")
    t.add_argument("--max-error", type=_nonneg_float, default=None,
                   help="largest per-output max|out-ref|/max|ref| for the fp16/int8 variants")
    p.add_argument("--n-inputs", type=_positive_int, default=3, help="random inputs to verify on (default 3)")
    p.add_argument("--inputs", metavar="DIR", default=None,
                   help="verify the variants on the files of DIR (as verify --inputs: images, .npz, .npy) instead of "
                        "random inputs; real images check an image-calibrated int8 variant on its own kind of data")
    p.add_argument("--threads", type=_positive_int, default=None, help="runtime threads for timing")
    p.add_argument("--no-timing", action="store_true", help="skip the latency measurement")
    p.add_argument("--report", metavar="FILE.json", default=None, help="also write the report as JSON here")
    p.add_argument("--html", metavar="FILE.html", default=None,
                   help="also write the report as a self-contained page (size vs latency chart, per output "
                        "max error and cosine vs thresholds)")
    _preprocess_options(p, "images of --calibration / --inputs become the image input (the record used is in the "
                           "int8 settings)")
    _common(p, json_help="print the report as JSON")


def _edge_backends() -> tuple[str, ...]:
    from fxexport.edge import BACKENDS

    return BACKENDS


def cmd_optimize(args) -> int:
    from fxexport.edge import optimize

    if (args.calibration or args.calibration_random) and args.int8 != "static":
        raise CliError("--calibration / --calibration-random need --int8 static")
    flags = _preprocess_flags(args)
    if (flags or args.image_input) and not (args.calibration or args.inputs):
        raise CliError("the image preprocessing flags apply to the images of --calibration DIR and --inputs DIR")
    thresholds = None
    if args.min_cosine is not None or args.max_error is not None:
        override = {k: v for k, v in (("min_cosine", args.min_cosine), ("max_error", args.max_error)) if v is not None}
        thresholds = {"fp16": override, "int8": override}
    extractor = _explicit_extractor(args)
    with _step(args, f"Writing and verifying variants of {args.source}..."):
        report = optimize(args.source, fp16=args.fp16, int8=args.int8, calibration=args.calibration,
                          calibration_random=args.calibration_random, ort_format=args.ort_format,
                          backends=args.backend,
                          out_dir=args.out_dir, thresholds=thresholds, extractor=extractor,
                          weights=args.weights if extractor is None else None,
                          n_inputs=args.n_inputs, threads=args.threads, measure=not args.no_timing,
                          trust_model_spec=args.trust_model_spec, preprocess=flags or None,
                          image_input=args.image_input, inputs=args.inputs)
    if args.report:
        report.to_json(args.report)
    if args.html:
        from fxexport.html_report import write_edge_report

        write_edge_report(report, args.html)
    if args.json:
        _print_json(report.to_dict())
    elif args.quiet:
        for v in report.variants[1:]:
            sys.stdout.write(f"{v.path}\n")
    return _report(args, report, _out(args))


# ----------------------------------------------------------------------------- main

#: One ``add_<name>_parser(sub)`` per command, in the order ``--help`` lists them.
COMMANDS: list[Callable] = [
    add_nodes_parser,
    add_export_parser,
    add_verify_parser,
    add_inspect_parser,
    add_optimize_parser,
    add_demo_parser,
    add_cpp_example_parser,
    add_zoo_parser,
]


def build_parser() -> argparse.ArgumentParser:
    from fxexport._version import __version__

    parser = _Parser(
        prog=PROG,
        description="Turn a PyTorch model into a multi-output feature extractor, export it with named "
                    "outputs, and verify the export.",
        epilog="example:\n  fxexport demo\n  fxexport nodes torchvision:resnet18 --shapes\n"
               "  fxexport export torchvision:resnet18 --node layer1=feat1 --node layer4=feat4 "
               "--onnx r18.onnx --verify\n\n"
               "`fxexport COMMAND --help` shows each command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", default=False, help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in COMMANDS:
        add(sub)
    return parser


def _quiet_warnings() -> None:
    """Warnings as one line ``fxexport: warning: ...``; torch's deprecation notices hidden (--debug shows all)."""
    import warnings

    from fxexport.errors import one_line

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch(\.|$)")
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(f"{PROG}: warning: {one_line(message, ERROR_LIMIT, typed=False)}\n")

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``fxexport`` and ``python -m fxexport``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        sys.stderr.write(f"{PROG}: error: no command given\n")
        return 2
    import warnings

    try:
        with warnings.catch_warnings():  # in-process callers get their warning settings back
            if not args.debug:
                _quiet_warnings()
            return int(args.handler(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C: files are written atomically, so nothing partial is left behind
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except SystemExit as exc:  # argparse exits while parsing, above: this one came from user code (a model builder)
        if args.debug:
            import traceback

            traceback.print_exc()
        code = " ".join(repr(exc.code).split())[:60]
        sys.stderr.write(f"{PROG}: error: the model code called sys.exit({code}) during '{args.command}'; "
                         "a model that exits is a failed build, not a success\n")
        return 2
    except BrokenPipeError:  # `fxexport nodes ... | head`
        return 0
    except Exception as err:  # noqa: BLE001 - every failure becomes one line (traceback with --debug)
        if args.debug:
            import traceback

            traceback.print_exc()
        from fxexport.errors import FxExportError, one_line

        known = isinstance(err, (FxExportError, CliError, ValueError, FileNotFoundError, ImportError))
        message = one_line(err, ERROR_LIMIT, typed=not known)
        if type(err).__name__ == "TraceError" and "leaf_modules=" in message:
            message += " (on the command line: --leaf-module CLASS)"
        hint = "" if args.debug or known else " (run with --debug for the traceback)"
        sys.stderr.write(f"{PROG}: error: {message}{hint}\n")
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
