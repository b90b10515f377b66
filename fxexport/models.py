"""Model specs and weights: turn a string such as ``torchvision:resnet18`` into a module.

A *spec* names a model builder:

- ``torchvision:NAME`` -- ``torchvision.models.get_model(NAME, weights=None, **kwargs)``
  (detection / segmentation builders also get ``weights_backbone=None``);
- ``timm:NAME`` -- ``timm.create_model(NAME, pretrained=False, **kwargs)`` (needs timm);
- ``path/to/file.py:callable`` -- a callable in a Python file (``path/to/file.py`` alone
  means ``path/to/file.py:build``);
- ``package.module:callable`` -- a callable in an importable module.

The callable must return an ``nn.Module``; when it has a ``seed`` parameter it is given
``load_model``'s seed (the example models in ``models/`` seed themselves that way).
Nothing is ever downloaded: with no weights the model gets a seeded random initialisation
(the same spec and seed give the same model);
with ``weights`` the state dict is read from a ``.safetensors`` file or a ``torch.save``
file (``weights_only=True``, never full unpickling) and matched strictly.

An artifact's manifest records the spec it was exported from. Rebuilding from that record
alone (``fxexport verify FILE`` with no ``--model``) is allowed only when
:func:`check_rebuildable` passes: a ``torchvision:`` / ``timm:`` registry name with plain
JSON kwargs. A file or module spec names code, and fxexport never imports code on an
artifact's word: :func:`model_from_info` refuses it unless ``trust_model_spec=True``.

Example:
    >>> model = load_model("torchvision:resnet18", kwargs={"num_classes": 10}, seed=0)
    >>> model.fc.out_features, model.training
    (10, False)
    >>> again = load_model("torchvision:resnet18", kwargs={"num_classes": 10}, seed=0)
    >>> bool((model.fc.weight == again.fc.weight).all())
    True
    >>> model_info("torchvision:resnet18", kwargs={"num_classes": 10})
    {'spec': 'torchvision:resnet18', 'kwargs': {'num_classes': 10}, 'weights_sha256': None, 'seed': 0}
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from fxexport.errors import InvalidInputError

__all__ = [
    "ModelSpec",
    "parse_spec",
    "load_model",
    "load_weights",
    "weights_sha256",
    "model_info",
    "model_from_info",
    "check_rebuildable",
    "REFUSED_KWARGS",
    "extractor_from_info",
    "default_input_shape",
    "parse_model_kwargs",
    "resolve_leaf_modules",
    "list_torchvision_models",
]

DEFAULT_BUILD = "build"
DEFAULT_INPUT_SHAPE = (1, 3, 224, 224)
_SAFETENSORS_SUFFIXES = (".safetensors",)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: ``kind`` is ``torchvision``, ``timm``, ``file`` or ``module``.

    ``target`` is the model name (torchvision / timm), the file path (file) or the
    dotted module path (module); ``attr`` is the callable's name for file / module.
    """

    kind: str
    target: str
    attr: str | None = None

    def __str__(self) -> str:
        if self.kind in ("torchvision", "timm"):
            return f"{self.kind}:{self.target}"
        return f"{self.target}:{self.attr}"


def _closest(word: str, choices: Iterable[str], n: int = 5) -> list[str]:
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=n, cutoff=0.5)
    if not close:  # fall back on substring matches ("resnet" -> "resnet18", ...)
        close = [c for c in choices if word.lower() in c.lower()][:n]
    return close


def _suggest(close: list[str], prefix: str = "") -> str:
    if not close:
        return ""
    return "; closest: " + ", ".join(f"'{prefix}{c}'" for c in close)


def list_torchvision_models() -> list[str]:
    """Every model name ``torchvision.models.get_model`` accepts.

    Example:
        >>> "resnet18" in list_torchvision_models()
        True
    """
    import torchvision

    return sorted(torchvision.models.list_models())


def parse_spec(spec: str) -> ModelSpec:
    """Parse a model spec string (no import, no model built).

    Raises:
        InvalidInputError: the spec has none of the accepted forms.

    Example:
        >>> parse_spec("torchvision:resnet18")
        ModelSpec(kind='torchvision', target='resnet18', attr=None)
        >>> parse_spec("models/multitask.py")
        ModelSpec(kind='file', target='models/multitask.py', attr='build')
        >>> parse_spec("mypkg.nets:make_net")
        ModelSpec(kind='module', target='mypkg.nets', attr='make_net')
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidInputError(f"empty model spec {spec!r}; expected e.g. 'torchvision:resnet18'")
    spec = spec.strip()
    for kind in ("torchvision", "timm"):
        if spec.startswith(kind + ":"):
            name = spec[len(kind) + 1 :]
            if not name:
                raise InvalidInputError(f"model spec '{spec}' names no model; expected e.g. '{kind}:resnet18'")
            return ModelSpec(kind, name)
    if spec.endswith(".py"):
        return ModelSpec("file", spec, DEFAULT_BUILD)
    if ":" in spec:
        target, attr = spec.rsplit(":", 1)
        if not target or not attr.isidentifier():
            raise InvalidInputError(
                f"malformed model spec '{spec}'; expected 'torchvision:NAME', 'timm:NAME', "
                "'path/to/file.py:callable' or 'package.module:callable'"
            )
        is_file = target.endswith(".py") or "/" in target or os.sep in target
        return ModelSpec("file" if is_file else "module", target, attr)
    # A bare name: say what it could have meant.
    hint = ""
    try:
        if spec in list_torchvision_models():
            hint = f"; did you mean 'torchvision:{spec}'?"
        else:
            close = _closest(spec, list_torchvision_models(), n=3)
            hint = _suggest(close, "torchvision:")
    except Exception:  # noqa: BLE001 - a hint must never hide the real error
        pass
    raise InvalidInputError(
        f"model spec '{spec}' has no source; expected 'torchvision:NAME', 'timm:NAME', "
        f"'path/to/file.py:callable' or 'package.module:callable'{hint}"
    )


def parse_model_kwargs(text: str | None) -> dict[str, Any]:
    """Parse ``--model-kwargs`` JSON (an object) into a dict.

    Example:
        >>> parse_model_kwargs('{"num_classes": 10}')
        {'num_classes': 10}
        >>> parse_model_kwargs(None)
        {}
    """
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidInputError(
            f"model kwargs {text!r} are not valid JSON ({err.msg}); expected e.g. '{{\"num_classes\": 10}}'"
        ) from None
    if not isinstance(value, dict):
        raise InvalidInputError(f"model kwargs {text!r} must be a JSON object, e.g. '{{\"num_classes\": 10}}'")
    return value


def _torchvision_builder(name: str) -> Callable[..., nn.Module]:
    import torchvision

    names = list_torchvision_models()
    if name not in names:
        raise InvalidInputError(
            f"unknown torchvision model '{name}'{_suggest(_closest(name, names), 'torchvision:')}"
        )
    return torchvision.models.get_model_builder(name)


def _build_torchvision(name: str, kwargs: dict[str, Any]) -> nn.Module:
    builder = _torchvision_builder(name)
    kwargs = dict(kwargs)
    for key in ("weights", "weights_backbone"):
        # No downloads ever: a pretrained-weights enum would fetch from the network.
        if kwargs.get(key) is not None:
            raise InvalidInputError(
                f"model kwarg '{key}' would download weights; fxexport never downloads. "
                "Save a state dict and pass it with --weights FILE instead"
            )
        if key in inspect.signature(builder).parameters:
            kwargs[key] = None
    return builder(**kwargs)


def _build_timm(name: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise InvalidInputError(
            f"model spec 'timm:{name}' needs timm, which is not installed; "
            "install it with `pip install timm` (or `pip install fxexport[timm]`)"
        ) from None
    names = timm.list_models()
    base = name.split(".", 1)[0]  # "resnet50.a1_in1k" -> "resnet50" (a pretrained tag)
    if name not in names and base not in names:
        raise InvalidInputError(f"unknown timm model '{name}'{_suggest(_closest(name, names), 'timm:')}")
    kwargs = dict(kwargs)
    if kwargs.pop("pretrained", False):
        raise InvalidInputError(
            "model kwarg 'pretrained' would download weights; fxexport never downloads. "
            "Save a state dict and pass it with --weights FILE instead"
        )
    return timm.create_model(name, pretrained=False, **kwargs)


def _load_file_module(path: str):
    file = Path(path)
    if not file.is_file():
        raise InvalidInputError(f"model file '{path}' does not exist")
    module_name = "fxexport_user_model_" + hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:12]
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise InvalidInputError(f"model file '{path}' cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses / pickling look the module up
    try:
        spec.loader.exec_module(module)
    except BaseException:  # SystemExit / KeyboardInterrupt too: no half-imported module stays cached
        del sys.modules[module_name]
        raise
    return module


def _import_module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and name.startswith(err.name):
            raise InvalidInputError(
                f"cannot import module '{name}' (no module named '{err.name}'); "
                "for a file use 'path/to/file.py:callable'"
            ) from None
        raise


def _get_callable(module, attr: str, where: str) -> Callable[..., Any]:
    fn = getattr(module, attr, None)
    if fn is None:
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise InvalidInputError(f"'{where}' has no callable '{attr}'{_suggest(_closest(attr, public))}")
    if not callable(fn):
        raise InvalidInputError(f"'{where}:{attr}' is not callable")
    return fn


def _build(parsed: ModelSpec, kwargs: dict[str, Any], seed: int = 0) -> nn.Module:
    try:
        return _build_unguarded(parsed, kwargs, seed)
    except SystemExit as exc:  # user code calling sys.exit() is a failed build, never a success
        raise InvalidInputError(
            f"building model {_q(str(parsed))} raised SystemExit({_q(exc.code, 60)}) (the model code called sys.exit) "
            "instead of returning a torch.nn.Module"
        ) from None


def _build_unguarded(parsed: ModelSpec, kwargs: dict[str, Any], seed: int) -> nn.Module:
    if parsed.kind == "torchvision":
        return _build_torchvision(parsed.target, kwargs)
    if parsed.kind == "timm":
        return _build_timm(parsed.target, kwargs)
    if parsed.kind == "file":
        module = _load_file_module(parsed.target)
    else:
        module = _import_module(parsed.target)
    fn = _get_callable(module, parsed.attr, parsed.target)
    try:
        takes_seed = "seed" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_seed = False
    if takes_seed and "seed" not in kwargs:
        kwargs = dict(kwargs, seed=seed)  # a builder that seeds itself gets load_model's seed
    try:
        model = fn(**kwargs)
    except TypeError as err:
        if kwargs and "unexpected keyword" in str(err):
            raise InvalidInputError(f"model '{parsed}' does not accept the kwargs given: {err}") from None
        raise
    return model


def load_model(
    spec: str,
    *,
    kwargs: dict[str, Any] | None = None,
    weights: str | os.PathLike | None = None,
    seed: int = 0,
) -> nn.Module:
    """Build the model a spec names, in eval mode.

    Args:
        spec: ``torchvision:NAME``, ``timm:NAME``, ``path/to/file.py[:callable]`` or
            ``package.module:callable``.
        kwargs: keyword arguments for the builder (e.g. ``{"num_classes": 10}``).
        weights: a ``.safetensors`` file or a ``torch.save``'d state dict; keys must match
            exactly. Without it the parameters are random, seeded by ``seed``.
        seed: seed of the random initialisation (the global RNG state is left untouched).

    Raises:
        InvalidInputError: unknown model (with the closest names), missing file or
            callable, bad kwargs, or weights that do not match the model.

    Example:
        >>> load_model("torchvision:resnet9000")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        fxexport.errors.InvalidInputError: unknown torchvision model 'resnet9000'; closest: ...
    """
    parsed = parse_spec(spec)
    kwargs = dict(kwargs or {})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build(parsed, kwargs, seed)
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"model spec '{spec}' returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix.lower() in _SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # noqa: BLE001 - any parse failure is "not a safetensors file"
            raise InvalidInputError(f"weights file '{path}' is not a readable .safetensors file: {err}") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        import pickle

        if isinstance(err, pickle.UnpicklingError):
            why = "it holds pickled Python objects (a whole model?), which fxexport never unpickles"
        else:
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
            why = text.splitlines()[0] if text else type(err).__name__
        raise InvalidInputError(
            f"weights file '{path}' cannot be read as a state dict with weights_only=True ({why}); "
            "save it with torch.save(model.state_dict(), path) or as .safetensors"
        ) from None
    # Common wrappers: {"state_dict": {...}} / {"model": {...}} as written by training loops.
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, dict) and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InvalidInputError(
            f"weights file '{path}' holds a {type(obj).__name__}, not a state dict of tensors; "
            "save it with torch.save(model.state_dict(), path)"
        )
    return obj


def _list(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(f"'{k}'" for k in keys[:n])
    return shown + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a state dict file into ``model`` with strict key and shape matching.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``. Returns ``model``.

    Raises:
        InvalidInputError: the file is missing or unreadable, or its keys / shapes differ
            from the model's (the message lists missing and unexpected keys).
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"weights file '{path}' does not exist")
    state = _read_state_dict(p)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys {_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_list(unexpected)}")
    if not problems:
        wrong = [
            f"'{k}' is {tuple(state[k].shape)} in the file but {tuple(v.shape)} in the model"
            for k, v in expected.items()
            if tuple(state[k].shape) != tuple(v.shape)
        ]
        if wrong:
            more = f" (+{len(wrong) - 3} more)" if len(wrong) > 3 else ""
            problems.append("shape mismatch: " + "; ".join(wrong[:3]) + more)
    if problems:
        raise InvalidInputError(f"weights file '{path}' does not match the model: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
    return model


def weights_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a weights file (recorded in manifests to tie an artifact to its weights)."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"weights file '{path}' does not exist")
    digest = hashlib.sha256()
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_info(
    spec: str,
    *,
    kwargs: dict[str, Any] | None = None,
    weights: str | os.PathLike | None = None,
    seed: int = 0,
    leaf_modules: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The manifest's ``model`` entry: enough to rebuild the reference model later.

    ``{"spec": ..., "kwargs": {...}, "weights_sha256": "..." or None, "seed": ...}``,
    plus ``"leaf_modules": ["Gate", ...]`` (class names, see :func:`resolve_leaf_modules`)
    when the model needs leaf modules to trace. Pass it as ``model_info=`` to
    ``export_onnx`` / ``export_torchscript``; rebuild with :func:`model_from_info`
    (and :func:`extractor_from_info` for the extractor).
    """
    info = {
        "spec": spec,
        "kwargs": dict(kwargs or {}),
        "weights_sha256": weights_sha256(weights) if weights is not None else None,
        "seed": seed,
    }
    if leaf_modules:
        info["leaf_modules"] = list(leaf_modules)
    return info


#: Builder arguments a manifest may never pass, whatever their value: each one makes a builder
#: read weights, a checkpoint or a cache from disk or the network. (fxexport itself passes
#: ``weights=None`` / ``pretrained=False``.)
REFUSED_KWARGS = frozenset({
    "pretrained", "weights", "weights_backbone", "checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay",
    "cache_dir",
})
_MAX_KWARGS_DEPTH = 4  # a list in a dict in the kwargs is depth 2
_MAX_KWARGS_VALUES = 256
_MAX_KWARGS_STRING = 64
_MAX_KWARGS_INT = 2**31
_MAX_LEAF_NAME = 200
_PLAIN_STRING = re.compile(r"[^/\\:\x00-\x1f\x7f]*")  # no path separator, no scheme / drive colon, no control char
_REGISTRY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")

_HOW_TO_PROCEED = (
    "name the model yourself (CLI: --model SPEC --node NODE=NAME; Python: extractor=), or, if you trust "
    "whoever wrote the artifact, pass --trust-model-spec (Python: trust_model_spec=True) to use the recorded "
    "spec as given"
)


def _q(value: Any, limit: int = 80) -> str:
    """An untrusted value for a one-line message: repr (control characters escaped), cut to ``limit``."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text) if isinstance(value, str) else text


def _model_entry(info: Any) -> tuple[str, dict[str, Any], int, list[str]]:
    """``(spec, kwargs, seed, leaf_modules)`` of a manifest's model entry, with their types checked."""
    if not isinstance(info, Mapping) or not info.get("spec"):
        raise InvalidInputError(
            "the artifact records no model spec; name the model yourself (CLI: --model SPEC --node NODE=NAME; "
            "Python: extractor=)"
        )
    spec = info["spec"]
    if not isinstance(spec, str):
        raise InvalidInputError(f"the artifact's model spec {_q(spec)} is not a string; {_HOW_TO_PROCEED}")
    kwargs = info.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise InvalidInputError(f"the artifact's model kwargs {_q(kwargs)} are not a JSON object; {_HOW_TO_PROCEED}")
    seed = info.get("seed", 0) or 0
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise InvalidInputError(f"the artifact's model seed {_q(seed)} is not an int in [0, 2**63)")
    leaves = info.get("leaf_modules") or []
    if not isinstance(leaves, list) or not all(isinstance(n, str) and len(n) <= _MAX_LEAF_NAME for n in leaves):
        raise InvalidInputError(f"the artifact's leaf_modules {_q(leaves)} is not a list of class names")
    return spec, dict(kwargs), seed, list(leaves)


def _check_value(spec: str, key: str, value: Any, depth: int, count: list[int]) -> None:
    count[0] += 1
    where = f"model kwarg '{key}' of the artifact's spec {_q(spec)}"
    if count[0] > _MAX_KWARGS_VALUES or depth > _MAX_KWARGS_DEPTH:
        raise InvalidInputError(
            f"{where} is too large to rebuild from a manifest (at most {_MAX_KWARGS_VALUES} values, "
            f"nested {_MAX_KWARGS_DEPTH} deep); {_HOW_TO_PROCEED}"
        )
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > _MAX_KWARGS_INT:
            raise InvalidInputError(f"{where} holds the int {_q(value)}, beyond +-2**31; {_HOW_TO_PROCEED}")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"{where} holds the float {value!r}; only finite numbers; {_HOW_TO_PROCEED}")
        return
    if isinstance(value, str):
        if len(value) > _MAX_KWARGS_STRING:
            raise InvalidInputError(
                f"{where} holds a string of {len(value)} characters (at most {_MAX_KWARGS_STRING}); {_HOW_TO_PROCEED}"
            )
        if not _PLAIN_STRING.fullmatch(value) or value.startswith("~"):
            raise InvalidInputError(
                f"{where} holds the string {_q(value)}, which could be a URL or a path (it has '/', '\\', ':', "
                f"'~' or a control character); {_HOW_TO_PROCEED}"
            )
        if value and os.path.lexists(value):
            raise InvalidInputError(
                f"{where} holds the string {_q(value)}, which is an existing path; {_HOW_TO_PROCEED}"
            )
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_value(spec, key, item, depth + 1, count)
        return
    if isinstance(value, Mapping):
        for k, item in value.items():
            if not isinstance(k, str):
                raise InvalidInputError(f"{where} has the non-string key {_q(k)}; {_HOW_TO_PROCEED}")
            _check_value(spec, key, k, depth + 1, count)
            _check_value(spec, key, item, depth + 1, count)
        return
    raise InvalidInputError(f"{where} is of type {type(value).__name__}, not a plain JSON value; {_HOW_TO_PROCEED}")


def check_rebuildable(info: Mapping[str, Any]) -> None:
    """Raise unless a manifest's ``model`` entry may be rebuilt on the artifact's word alone.

    A manifest is untrusted input (the artifact may come from anyone), so rebuilding the
    reference from it without the user naming the model is an allowlist:

    - ``spec`` is ``torchvision:NAME`` with NAME in ``torchvision.models.list_models()``, or
      ``timm:NAME`` with NAME (or the part before its first ``.``, a pretrained tag) in
      ``timm.list_models()``. A file (``path.py:callable``) or module (``pkg.mod:callable``)
      spec is code and is refused: fxexport never imports what an artifact names.
    - ``kwargs`` is a JSON object whose keys are Python identifiers other than
      :data:`REFUSED_KWARGS` (``pretrained``, ``weights``, ``weights_backbone``,
      ``checkpoint_path``, ``pretrained_cfg``, ``pretrained_cfg_overlay``, ``cache_dir``:
      refused whatever their value), and whose values are, recursively, only: ``null``,
      ``true`` / ``false``, an int within +-2**31, a finite float, a string of at most 64
      characters with no ``/``, ``\\``, ``:`` or control character, not starting with ``~``
      and not naming an existing path (so no URL and no file), or a list / object of those
      (object keys follow the string rule), nested at most 4 deep, 256 values in all.
    - ``seed`` is an int; ``leaf_modules`` is a list of class names (they are matched only
      against classes inside the built model, see :func:`resolve_leaf_modules`).

    Anything else needs the user's word: name the model (``--model SPEC --node NODE=NAME``,
    ``extractor=``) or opt in with ``--trust-model-spec`` / ``trust_model_spec=True``.

    Raises:
        InvalidInputError: the entry breaks the rule; the one-line message names the
            recorded spec or value and says how to proceed.

    Example:
        >>> check_rebuildable({"spec": "torchvision:resnet18", "kwargs": {"num_classes": 10}})
        >>> check_rebuildable({"spec": "subprocess:check_call", "kwargs": {"args": ["touch", "x"]}})
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        fxexport.errors.InvalidInputError: the artifact records the model spec 'subprocess:check_call', a Python \
module, and fxexport never imports code on an artifact's word; name the model yourself ...
        >>> check_rebuildable({"spec": "torchvision:resnet18", "kwargs": {"pretrained": True}})
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        fxexport.errors.InvalidInputError: model kwarg 'pretrained' of the artifact's spec 'torchvision:resnet18' ...
    """
    spec, kwargs, _, _ = _model_entry(info)
    try:
        parsed = parse_spec(spec)
    except InvalidInputError as err:
        raise InvalidInputError(f"the artifact records the model spec {_q(spec)}, which is not a spec: {err}") from None
    if parsed.kind in ("file", "module"):
        what = "Python file" if parsed.kind == "file" else "Python module"
        raise InvalidInputError(
            f"the artifact records the model spec {_q(spec)}, a {what}, and fxexport never imports code on an "
            "artifact's word; name the model yourself (CLI: --model SPEC --node NODE=NAME; Python: extractor=), or, "
            "if you trust whoever wrote the artifact, pass --trust-model-spec (Python: trust_model_spec=True), "
            "which imports and runs that code"
        )
    name = parsed.target
    if parsed.kind == "torchvision":
        names = list_torchvision_models()
        known = name in names
    else:
        try:
            import timm
        except ImportError:
            raise InvalidInputError(
                f"the artifact records the model spec {_q(spec)}, which needs timm, not installed here; "
                "install it with `pip install timm`"
            ) from None
        names = timm.list_models()
        known = bool(_REGISTRY_NAME.fullmatch(name)) and name.split(".", 1)[0] in names
    if not known:
        close = _closest(name, names) if len(name) <= _MAX_LEAF_NAME else []
        raise InvalidInputError(
            f"the artifact records the model spec {_q(spec)}, not a {parsed.kind} model name"
            f"{_suggest(close, parsed.kind + ':')}; {_HOW_TO_PROCEED}"
        )
    count = [0]
    for key, value in kwargs.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise InvalidInputError(f"the artifact's model kwargs have the key {_q(key)}, not an identifier; "
                                    f"{_HOW_TO_PROCEED}")
        if key in REFUSED_KWARGS:
            raise InvalidInputError(
                f"model kwarg '{key}' of the artifact's spec {_q(spec)} would make the builder read weights, a "
                "checkpoint or a cache, which a manifest may not choose (fxexport never downloads); name the model "
                "yourself (CLI: --model SPEC --weights FILE --node NODE=NAME; Python: extractor=)"
            )
        _check_value(spec, key, value, 1, count)


def model_from_info(
    info: dict[str, Any], *, weights: str | os.PathLike | None = None, trust_model_spec: bool = False
) -> nn.Module:
    """Rebuild the model a manifest's ``model`` entry describes (eval mode).

    The entry comes from an artifact, so it must pass :func:`check_rebuildable`
    (registry specs with plain kwargs) unless ``trust_model_spec=True``, which uses the
    recorded spec and kwargs as given: a file or module spec is then imported and run.
    When the artifact was exported with weights, ``weights`` must be given and its
    SHA-256 must equal the recorded one.

    Raises:
        InvalidInputError: no spec recorded, a spec the rule refuses (the message says how
            to proceed), weights missing or not the ones exported.

    Example:
        >>> model_from_info({"spec": "torchvision:resnet18", "kwargs": {"num_classes": 3}}).fc.out_features
        3
    """
    if not trust_model_spec:
        check_rebuildable(info)
    spec, kwargs, seed, _ = _model_entry(info)
    recorded = info.get("weights_sha256")
    if recorded is not None and not isinstance(recorded, str):
        raise InvalidInputError(f"the artifact's weights_sha256 {_q(recorded)} is not a hex string")
    if weights is None and recorded:
        raise InvalidInputError(
            f"the artifact was exported from {_q(spec)} with a weights file (sha256 {_q(recorded[:12])}...); "
            "pass the same file with --weights FILE"
        )
    if weights is not None and recorded:
        actual = weights_sha256(weights)
        if actual != recorded:
            raise InvalidInputError(
                f"weights file '{weights}' (sha256 {actual[:12]}...) is not the one the artifact was "
                f"exported with (sha256 {_q(recorded[:12])}...)"
            )
    return load_model(spec, kwargs=kwargs, weights=weights, seed=seed)


def extractor_from_info(
    info: dict[str, Any],
    nodes: dict[str, str],
    *,
    weights: str | os.PathLike | None = None,
    mode: str = "eval",
    trust_model_spec: bool = False,
):
    """Rebuild the eager extractor an artifact was exported from.

    ``info`` is the manifest's ``model`` entry, ``nodes`` its node -> output map; the
    leaf modules recorded in ``info`` are used for tracing (matched only against classes
    inside the built model). Returns the extractor in ``mode`` ("eval" or "train").
    ``trust_model_spec`` as in :func:`model_from_info`.
    """
    from fxexport.extractor import create_feature_extractor

    if not nodes:
        raise InvalidInputError("the artifact records no node map; pass the nodes explicitly (--node NODE=NAME)")
    model = model_from_info(info, weights=weights, trust_model_spec=trust_model_spec)
    leaves = resolve_leaf_modules(model, _model_entry(info)[3])
    extractor = create_feature_extractor(model, dict(nodes), leaf_modules=leaves or None)
    return extractor.train(mode == "train")


def default_input_shape(model: nn.Module) -> tuple[int, ...]:
    """A sensible example input shape for ``model`` (batch 1).

    Uses, in order: a ``example_input_shape`` attribute on the model (the example
    models in ``models/`` set one), timm's ``pretrained_cfg["input_size"]``, the
    input sizes of torchvision models that need one (inception_v3: 299), else
    ``(1, 3, 224, 224)``.

    Example:
        >>> default_input_shape(load_model("torchvision:inception_v3", kwargs={"init_weights": False}))
        (1, 3, 299, 299)
    """
    shape = getattr(model, "example_input_shape", None)
    if shape is not None:
        return tuple(int(d) for d in shape)
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(cfg, dict) and cfg.get("input_size"):
        return (1, *(int(d) for d in cfg["input_size"]))
    if type(model).__name__ == "Inception3":
        return (1, 3, 299, 299)
    return DEFAULT_INPUT_SHAPE


def resolve_leaf_modules(model: nn.Module, names: Iterable[str]) -> list[type]:
    """Map class names (``Gate``, ``mypkg.layers.Gate``) to classes used inside ``model``.

    For ``--leaf-module`` on the command line: tracing treats these classes as opaque
    calls instead of tracing through them.

    Raises:
        InvalidInputError: a name matches no module class in ``model`` (closest listed).

    Example:
        >>> import torchvision
        >>> resolve_leaf_modules(torchvision.models.resnet18(), ["BasicBlock"])
        [<class 'torchvision.models.resnet.BasicBlock'>]
    """
    classes: dict[str, type] = {}
    for module in model.modules():
        cls = type(module)
        classes.setdefault(cls.__name__, cls)
        classes.setdefault(f"{cls.__module__}.{cls.__qualname__}", cls)
    out: list[type] = []
    for name in names:
        cls = classes.get(name)
        if cls is None:
            short = sorted({c.__name__ for c in classes.values()})
            raise InvalidInputError(
                f"leaf module '{name}' is not a module class used in the model{_suggest(_closest(name, short))}"
            )
        if cls not in out:
            out.append(cls)
    return out
