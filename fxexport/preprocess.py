"""The preprocessing record: how an image file becomes a model's input tensor.

A :class:`Preprocess` says, as data, what a model expects of an image: resize (size,
interpolation, antialias), center crop (or timm's ``crop_pct``), value range, mean/std,
channel order, and how an alpha channel and an EXIF orientation tag are handled. The
manifest records one (:class:`PreprocessEntry`: the record, the image input it feeds and
where it came from: ``"flag"``, ``"manifest"`` or ``"spec default"``), so a C++ or edge
consumer knows exactly what to feed; ``verify(inputs=DIR)`` and ``optimize(calibration=DIR)``
use it to turn JPEG/PNG files into inputs.

The record is data only: every field is a number, a string from a fixed set, or a
bool; nothing in it is looked up by name as code, and :meth:`Preprocess.from_dict`
checks a record read from a file like any other untrusted manifest field.

Steps, in this order (torchvision's classification presets do the same):

1. decode with :func:`torchvision.io.decode_image` (``ImageReadMode.RGB``, or ``RGB_ALPHA`` when
   ``alpha="blend"``), applying the EXIF orientation when ``exif_orientation``;
2. ``alpha="blend"``: composite over ``background`` (``"drop"`` ignores the alpha channel);
3. resize (uint8): ``resize`` as an int matches the shorter side, as ``(h, w)`` is the exact
   size; with no ``resize``, ``crop`` and ``crop_pct`` give ``floor(crop / crop_pct)`` (timm's rule);
4. center crop to ``crop`` ``(h, w)``;
5. channel order (``"BGR"`` reverses the channels);
6. to float: ``value_range`` ``(lo, hi)`` maps 0..255 to lo..hi;
7. ``(x - mean) / std`` per channel, when given.

Defaults from the model spec (:func:`spec_default`) come from timm's ``pretrained_cfg`` and
torchvision's weights transforms metadata (the ``Weights`` enum's ``transforms`` keywords),
without downloading any weights.

Example:
    >>> import torch
    >>> p = Preprocess(resize=8, crop=6, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    >>> p.describe()
    'resize 8 (bilinear, antialias), center crop 6x6, range [0, 1], mean (0.5, 0.5, 0.5), std (0.25, 0.25, 0.25)'
    >>> image = torch.full((3, 10, 12), 255, dtype=torch.uint8)
    >>> x = p.apply(image)
    >>> tuple(x.shape), float(x.max())
    ((3, 6, 6), 2.0)
    >>> Preprocess.from_dict(p.to_dict()) == p
    True
"""

from __future__ import annotations

import functools
import inspect
import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from fxexport.errors import InvalidInputError, VerificationError

__all__ = ["Preprocess", "PreprocessEntry", "SOURCES", "INTERPOLATIONS", "IMAGE_SUFFIXES", "MAX_SIDE",
           "spec_default", "resolve", "export_entry", "image_input_index", "read_image", "load_image", "is_image"]

#: where a record came from: a flag (or the ``preprocess=`` argument), the artifact's manifest, the model spec
SOURCES = ("flag", "manifest", "spec default")
INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic")
CHANNEL_ORDERS = ("RGB", "BGR")
ALPHA_MODES = ("drop", "blend")
#: image files verify and optimize read (decoded by torchvision.io)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: the largest resize/crop side a record may ask for (a record is untrusted data)
MAX_SIDE = 16384
#: the largest image file read (bytes): a decoded image is allocated from it
MAX_IMAGE_BYTES = 256 << 20

_SIZE = "a positive integer up to 16384 or a list [height, width] of them"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _side(v: Any) -> bool:
    return _is_int(v) and 1 <= v <= MAX_SIDE


def _size(v: Any, pair_only: bool = False) -> int | tuple[int, int] | None:
    """An int side or an (h, w) pair, checked; None if malformed."""
    if _side(v):
        return (v, v) if pair_only else v
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(_side(d) for d in v):
        return (int(v[0]), int(v[1]))
    return None


def _triple(v: Any, positive: bool = False) -> tuple[float, float, float] | None:
    if not isinstance(v, (list, tuple)) or len(v) != 3 or not all(_is_num(x) for x in v):
        return None
    if positive and not all(x > 0 for x in v):
        return None
    return tuple(float(x) for x in v)


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a model input (see the module docstring for the steps).

    Attributes:
        resize: shorter side (int) or exact ``(height, width)``; None: no resize (unless
            ``crop_pct`` derives one).
        interpolation: ``"nearest"``, ``"nearest-exact"``, ``"bilinear"`` or ``"bicubic"``.
        antialias: antialiased down-scaling (torchvision's default).
        crop: center crop ``(height, width)`` (an int is a square); None: no crop.
        crop_pct: with ``crop`` and no ``resize``: resize to ``floor(crop / crop_pct)`` first.
        value_range: ``(lo, hi)`` that pixel values 0..255 map to.
        mean / std: per channel, applied after the value range; None: 0 / 1.
        channel_order: ``"RGB"`` or ``"BGR"``.
        alpha: ``"drop"`` (ignore an alpha channel) or ``"blend"`` (composite over ``background``).
        background: the ``(r, g, b)`` (0..255) that ``alpha="blend"`` composites over.
        exif_orientation: rotate/flip as the file's EXIF orientation tag says.

    Raises:
        InvalidInputError: a field out of range (the message names it and what works).

    Example:
        >>> Preprocess(crop=224, crop_pct=0.875).effective_resize
        256
        >>> Preprocess(interpolation="lanczos")
        Traceback (most recent call last):
        fxexport.errors.InvalidInputError: preprocess field 'interpolation' must be one of 'nearest', \
'nearest-exact', 'bilinear', 'bicubic', got 'lanczos'
    """

    resize: int | tuple[int, int] | None = None
    interpolation: str = "bilinear"
    antialias: bool = True
    crop: tuple[int, int] | None = None
    crop_pct: float | None = None
    value_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    channel_order: str = "RGB"
    alpha: str = "drop"
    background: tuple[int, int, int] = (255, 255, 255)
    exif_orientation: bool = True

    def __post_init__(self) -> None:
        for name, value in _checked(self.__dict__, lambda key, what, got: InvalidInputError(
                f"preprocess field '{key}' must be {what}, got {_show(got)}")).items():
            object.__setattr__(self, name, value)

    # -- data ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (pairs and triples as lists).

        Example:
            >>> Preprocess(crop=4).to_dict()["crop"]
            [4, 4]
        """
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "preprocess") -> "Preprocess":
        """A record from untrusted data: every field checked, unknown fields refused.

        Raises:
            VerificationError: the message names the field (``where.field``) and what would work.

        Example:
            >>> Preprocess.from_dict({"mean": [0.5, 0.5, "x"]}, "preprocess.record")
            Traceback (most recent call last):
            fxexport.errors.VerificationError: manifest field 'preprocess.record.mean' must be three finite \
numbers, got [0.5, 0.5, 'x']
            >>> Preprocess.from_dict({"eval": "print(1)"})
            Traceback (most recent call last):
            fxexport.errors.VerificationError: manifest field 'preprocess.eval' is not a preprocessing field; \
known: resize, interpolation, antialias, crop, crop_pct, value_range, mean, std, channel_order, alpha, background, \
exif_orientation
        """
        def bad(key: str, what: str, got: Any) -> VerificationError:
            return VerificationError(f"manifest field '{where}.{key}' must be {what}, got {_show(got)}")

        if not isinstance(data, dict):
            raise VerificationError(f"manifest field '{where}' must be an object, got {_show(data)}")
        known = [f.name for f in fields(cls)]
        for key in data:
            if key not in known:
                raise VerificationError(f"manifest field '{where}.{str(key)[:40]}' is not a preprocessing field; "
                                        f"known: {', '.join(known)}")
        defaults = {f.name: f.default for f in fields(cls)}
        values = _checked({**defaults, **data}, bad)
        record = cls.__new__(cls)
        for name, value in values.items():
            object.__setattr__(record, name, value)
        return record

    def override(self, values: Mapping[str, Any]) -> "Preprocess":
        """This record with some fields replaced (flags over a recorded record).

        A new ``resize`` drops a recorded ``crop_pct`` and a new ``crop_pct`` drops a recorded
        ``resize`` (the two say the same thing; the one given wins).

        Example:
            >>> Preprocess(crop=224, crop_pct=0.9).override({"resize": 300}).effective_resize
            300
        """
        values = dict(values)
        unknown = sorted(set(values) - {f.name for f in fields(self)})
        if unknown:
            raise InvalidInputError(f"unknown preprocess field(s) {unknown}; known: "
                                    f"{', '.join(f.name for f in fields(self))}")
        if "resize" in values and "crop_pct" not in values:
            values["crop_pct"] = None
        if "crop_pct" in values and "resize" not in values and values["crop_pct"] is not None:
            values["resize"] = None
        return replace(self, **values)

    # -- sizes -----------------------------------------------------------------------------

    @property
    def effective_resize(self) -> int | tuple[int, int] | None:
        """The resize step's size: ``resize``, else ``floor(crop / crop_pct)`` (an int when square), else None."""
        if self.resize is not None:
            return self.resize
        if self.crop is not None and self.crop_pct is not None:
            h, w = (math.floor(d / self.crop_pct) for d in self.crop)
            return h if h == w else (h, w)
        return None

    def fit(self, height: int, width: int) -> "Preprocess":
        """This record for a model whose image input is ``height x width``: the crop becomes that size and
        the resize keeps its ratio to the crop (as ``crop_pct``). Used for a spec's default when the model
        was exported at another size; a record without a crop is returned as it is.

        Example:
            >>> p = Preprocess(resize=256, crop=224).fit(160, 160)
            >>> p.crop, p.crop_pct, p.effective_resize
            ((160, 160), 0.875, 182)
        """
        if self.crop is None or self.crop == (height, width):
            return self
        if isinstance(self.resize, tuple):
            scale = (self.resize[0] / self.crop[0], self.resize[1] / self.crop[1])
            return replace(self, crop=(height, width),
                           resize=(max(1, round(height * scale[0])), max(1, round(width * scale[1]))))
        pct = self.crop_pct
        if self.resize is not None:
            pct = min(self.crop) / self.resize
        return replace(self, crop=(height, width), resize=None, crop_pct=pct)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) an image of ``height x width`` has after resize and crop.

        Example:
            >>> Preprocess(resize=8).output_size(10, 20), Preprocess(resize=8, crop=6).output_size(10, 20)
            ((8, 16), (6, 6))
        """
        size = self.effective_resize
        if isinstance(size, int):
            short, long = (height, width) if height <= width else (width, height)
            new_long = int(size * long / short)
            height, width = (size, new_long) if height <= width else (new_long, size)
        elif size is not None:
            height, width = size
        return self.crop if self.crop is not None else (height, width)

    # -- applying it -----------------------------------------------------------------------

    def apply(self, image: Any) -> Any:
        """Steps 2-7 on a decoded ``uint8`` image ``(C, H, W)`` (C = 3, or 4 with alpha); a float32 ``(3, h, w)``.

        Raises:
            InvalidInputError: not a uint8 image with 3 or 4 channels.
        """
        import torch
        import torchvision.transforms.functional as F

        if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.dim() != 3 \
                or image.shape[0] not in (3, 4):
            got = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
            raise InvalidInputError(f"an image to preprocess must be a uint8 tensor (3 or 4, H, W), got {got}")
        if image.shape[0] == 4:
            if self.alpha == "blend":
                rgb, a = image[:3].to(torch.int32), image[3:].to(torch.int32)
                bg = torch.tensor(self.background, dtype=torch.int32).view(3, 1, 1)
                image = ((rgb * a + bg * (255 - a) + 127) // 255).to(torch.uint8)
            else:
                image = image[:3]
        size = self.effective_resize
        if size is not None:
            mode = F.InterpolationMode(self.interpolation)
            image = F.resize(image, [size] if isinstance(size, int) else list(size), interpolation=mode,
                             antialias=self.antialias)
        if self.crop is not None:
            image = F.center_crop(image, list(self.crop))
        if self.channel_order == "BGR":
            image = image.flip(0)
        lo, hi = self.value_range
        x = image.to(torch.float32) / 255.0
        if (lo, hi) != (0.0, 1.0):
            x = x * (hi - lo) + lo
        if self.mean is not None or self.std is not None:
            mean = torch.tensor(self.mean or (0.0, 0.0, 0.0), dtype=torch.float32).view(3, 1, 1)
            std = torch.tensor(self.std or (1.0, 1.0, 1.0), dtype=torch.float32).view(3, 1, 1)
            x = (x - mean) / std
        return x.contiguous()

    def describe(self) -> str:
        """One line for people (``inspect``, verify's notes).

        Example:
            >>> Preprocess(channel_order="BGR", value_range=(0, 255), exif_orientation=False).describe()
            'range [0, 255], BGR, EXIF orientation ignored'
        """
        parts = []
        size = self.effective_resize
        if size is not None:
            shown = size if isinstance(size, int) else f"{size[0]}x{size[1]}"
            how = self.interpolation + (", antialias" if self.antialias and self.interpolation != "nearest" else "")
            pct = f" = crop / {self.crop_pct:g}" if self.resize is None else ""
            parts.append(f"resize {shown}{pct} ({how})")
        if self.crop is not None:
            parts.append(f"center crop {self.crop[0]}x{self.crop[1]}")
        parts.append(f"range [{self.value_range[0]:g}, {self.value_range[1]:g}]")
        if self.mean is not None:
            parts.append("mean (" + ", ".join(f"{v:g}" for v in self.mean) + ")")
        if self.std is not None:
            parts.append("std (" + ", ".join(f"{v:g}" for v in self.std) + ")")
        if self.channel_order != "RGB":
            parts.append(self.channel_order)
        if self.alpha == "blend":
            parts.append("alpha blended over (" + ", ".join(map(str, self.background)) + ")")
        if not self.exif_orientation:
            parts.append("EXIF orientation ignored")
        return ", ".join(parts)


def _checked(values: Mapping[str, Any], bad: Callable[[str, str, Any], Exception]) -> dict[str, Any]:
    """The fields of a record, normalized (ints to pairs, lists to tuples), or ``bad(field, expected, got)``."""
    out = dict(values)
    v = out.get("resize")
    if v is not None:
        out["resize"] = _size(v)
        if out["resize"] is None:
            raise bad("resize", _SIZE + " or null", v)
    v = out.get("crop")
    if v is not None:
        out["crop"] = _size(v, pair_only=True)
        if out["crop"] is None:
            raise bad("crop", _SIZE + " or null", v)
    v = out.get("crop_pct")
    if v is not None:
        if not (_is_num(v) and 0 < v <= 2):
            raise bad("crop_pct", "a number in (0, 2] or null", v)
        if out.get("crop") is None:
            raise bad("crop_pct", "null without a crop (crop_pct sizes the resize from the crop)", v)
        out["crop_pct"] = float(v)
    for key, choices in (("interpolation", INTERPOLATIONS), ("channel_order", CHANNEL_ORDERS),
                         ("alpha", ALPHA_MODES)):
        if out.get(key) not in choices:
            raise bad(key, "one of " + ", ".join(repr(c) for c in choices), out.get(key))
    for key in ("antialias", "exif_orientation"):
        if not isinstance(out.get(key), bool):
            raise bad(key, "true or false", out.get(key))
    v = out.get("value_range")
    if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_num(x) for x in v) and v[0] != v[1]):
        raise bad("value_range", "two different finite numbers [lo, hi]", v)
    out["value_range"] = (float(v[0]), float(v[1]))
    for key in ("mean", "std"):
        v = out.get(key)
        if v is not None:
            out[key] = _triple(v, positive=key == "std")
            if out[key] is None:
                raise bad(key, "three finite numbers" + (" > 0" if key == "std" else ""), v)
    v = out.get("background")
    if not (isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_int(x) and 0 <= x <= 255 for x in v)):
        raise bad("background", "three integers 0..255", v)
    out["background"] = tuple(v)
    return out


# ----------------------------------------------------------------------------- the manifest's entry


@dataclass(frozen=True)
class PreprocessEntry:
    """What a manifest records: the record, the input it feeds, and where it came from.

    Attributes:
        record: the :class:`Preprocess`.
        input: the name of the image input it feeds.
        source: ``"flag"`` (given explicitly), ``"manifest"`` (read from an artifact) or
            ``"spec default"`` (the model spec's: timm ``pretrained_cfg``, torchvision weights transforms).
        flags: with ``source="flag"``: the fields given explicitly (all of them when empty).
        base: with ``source="flag"``: where the other fields came from (``"manifest"``, ``"spec default"``),
            or None (fxexport's defaults).

    Example:
        >>> e = PreprocessEntry(Preprocess(crop=4), "x", "flag", flags=("crop",))
        >>> PreprocessEntry.from_dict(e.to_dict()) == e
        True
        >>> e.describe()
        "center crop 4x4, range [0, 1] (for input 'x'; from flags: crop)"
    """

    record: Preprocess
    input: str
    source: str
    flags: tuple[str, ...] = field(default_factory=tuple)
    base: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.record, Preprocess):
            raise InvalidInputError(f"record must be a Preprocess, got {type(self.record).__name__}")
        if self.source not in SOURCES:
            raise InvalidInputError(f"preprocess source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        object.__setattr__(self, "flags", tuple(self.flags))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"record": self.record.to_dict(), "input": self.input, "source": self.source}
        if self.flags:
            out["flags"] = list(self.flags)
        if self.base is not None:
            out["base"] = self.base
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "preprocess") -> "PreprocessEntry":
        """An entry from untrusted data (see :meth:`Preprocess.from_dict`).

        Example:
            >>> PreprocessEntry.from_dict({"record": {}, "input": "x", "source": "the internet"})
            Traceback (most recent call last):
            fxexport.errors.VerificationError: manifest field 'preprocess.source' must be one of 'flag', 'manifest', \
'spec default', got 'the internet'
        """
        if not isinstance(data, dict):
            raise VerificationError(f"manifest field '{where}' must be an object, got {_show(data)}")
        record = Preprocess.from_dict(data.get("record"), f"{where}.record")
        name = data.get("input")
        if not isinstance(name, str) or not name:
            raise VerificationError(f"manifest field '{where}.input' must be a non-empty string, got {_show(name)}")
        source = data.get("source")
        if source not in SOURCES:
            raise VerificationError(f"manifest field '{where}.source' must be one of "
                                    f"{', '.join(repr(s) for s in SOURCES)}, got {_show(source)}")
        known = {f.name for f in fields(Preprocess)}
        flags = data.get("flags", [])
        if not isinstance(flags, list) or not all(isinstance(f, str) and f in known for f in flags):
            raise VerificationError(f"manifest field '{where}.flags' must be a list of preprocessing field names, "
                                    f"got {_show(flags)}")
        base = data.get("base")
        if base is not None and base not in SOURCES[1:]:
            raise VerificationError(f"manifest field '{where}.base' must be 'manifest', 'spec default' or null, "
                                    f"got {_show(base)}")
        return cls(record, name, source, tuple(flags), base)

    def describe(self) -> str:
        """The record and its origin, one line."""
        origin = self.source
        if self.source == "flag":
            origin = "from flags" + (f": {', '.join(self.flags)}" if self.flags else "")
            if self.base:
                origin += f", the rest from the {self.base}"
        elif self.source == "manifest":
            origin = "from the artifact's manifest"
        return f"{self.record.describe()} (for input '{self.input}'; {origin})"

    def as_manifest(self) -> "PreprocessEntry":
        """This entry as read back from an artifact (``source="manifest"``)."""
        return replace(self, source="manifest", flags=(), base=None)


def resolve(flags: Preprocess | Mapping[str, Any] | None, recorded: PreprocessEntry | None,
            default: Preprocess | None, input_name: str) -> PreprocessEntry | None:
    """The record to use: explicit ``flags`` over the artifact's ``recorded`` entry over the spec's ``default``.

    ``flags`` is a whole :class:`Preprocess` (used as it is) or ``{field: value}`` for the fields given
    explicitly, which replace those fields of the recorded (else the default, else fxexport's plain)
    record. None when nothing applies.

    Example:
        >>> spec = Preprocess(resize=256, crop=224, mean=(0.4, 0.4, 0.4), std=(0.2, 0.2, 0.2))
        >>> resolve(None, None, spec, "x").source
        'spec default'
        >>> saved = PreprocessEntry(Preprocess(crop=200), "x", "spec default")
        >>> resolve(None, saved, spec, "x").record.crop, resolve(None, saved, spec, "x").source
        ((200, 200), 'manifest')
        >>> e = resolve({"crop": 100}, saved, spec, "x")
        >>> e.record.crop, e.source, e.flags, e.base
        ((100, 100), 'flag', ('crop',), 'manifest')
    """
    if isinstance(flags, Preprocess):
        return PreprocessEntry(flags, input_name, "flag")
    base = recorded.as_manifest() if recorded is not None else (
        PreprocessEntry(default, input_name, "spec default") if default is not None else None)
    if not flags:
        return base
    record = (base.record if base is not None else Preprocess()).override(flags)
    return PreprocessEntry(record, input_name, "flag", tuple(f.name for f in fields(Preprocess) if f.name in flags),
                           base.source if base is not None else None)


def export_entry(given: Any, inputs: Sequence[Any], *, spec: str | None = None,
                 image_input: str | None = None) -> PreprocessEntry | None:
    """The entry an export records for a model with these ``inputs`` (``.name``, ``.shape``).

    ``given`` is what the caller asked for: a :class:`PreprocessEntry` (recorded as it is), a
    :class:`Preprocess` (source ``"flag"``), ``{field: value}`` for fields given explicitly (over
    the spec's default), or None: the spec's default (:func:`spec_default`, its crop fitted to a
    static image size, :meth:`Preprocess.fit`), recorded only when the model has an image input.

    Raises:
        InvalidInputError: something was given but no input takes images (or ``image_input`` names none).

    Example:
        >>> from types import SimpleNamespace as S
        >>> e = export_entry(None, [S(name="x", shape=["batch", 3, 160, 160])], spec="torchvision:resnet18")
        >>> e.source, e.input, e.record.crop, e.record.effective_resize
        ('spec default', 'x', (160, 160), 182)
        >>> export_entry(None, [S(name="x", shape=[1, 10])], spec="torchvision:resnet18") is None
        True
    """
    if given is None and image_input is None:
        try:
            k = image_input_index(inputs)
        except InvalidInputError:
            return None
    else:
        k = image_input_index(inputs, image_input)
    name, shape = inputs[k].name, list(inputs[k].shape)
    if isinstance(given, PreprocessEntry):
        if given.input != name:
            given = replace(given, input=name)
        return given
    default = spec_default(spec)
    if default is not None and all(_is_int(d) for d in shape[2:]):
        default = default.fit(shape[2], shape[3])
    if given is not None and not isinstance(given, (Preprocess, Mapping)):
        raise InvalidInputError(f"preprocess must be a Preprocess, a PreprocessEntry or {{field: value}}, got "
                                f"{type(given).__name__}")
    return resolve(given, None, default, name)


# ----------------------------------------------------------------------------- defaults of a model spec


def spec_default(spec: str | None, model: Any = None) -> Preprocess | None:
    """The preprocessing a model spec's pretrained weights expect, read from metadata (nothing is downloaded).

    ``timm:NAME``: the model's ``pretrained_cfg`` (``model`` given) or timm's registry entry
    (``input_size``, ``interpolation``, ``crop_pct``, ``crop_mode``, ``mean``, ``std``).
    ``torchvision:NAME``: the default ``Weights`` enum member's ``transforms`` keywords over the
    preset's own defaults (``ImageClassification``, ``SemanticSegmentation``; ``ObjectDetection``
    models take images in [0, 1] and normalize inside). A file or module spec: the built model's
    ``pretrained_cfg`` when it has one. None when nothing says.

    Example:
        >>> spec_default("torchvision:resnet18").describe()
        'resize 256 (bilinear, antialias), center crop 224x224, range [0, 1], mean (0.485, 0.456, 0.406), \
std (0.229, 0.224, 0.225)'
        >>> spec_default("models/rgbd.py") is None
        True
    """
    if not isinstance(spec, str):
        return None
    cfg = getattr(model, "pretrained_cfg", None) if model is not None else None
    if isinstance(cfg, Mapping) and cfg:
        return _from_timm_cfg(cfg)
    if spec.startswith("timm:"):
        try:
            from timm.models import get_pretrained_cfg
        except ImportError:
            return None
        try:
            found = get_pretrained_cfg(spec[len("timm:"):])
        except Exception:  # noqa: BLE001 - an unknown name has no default
            return None
        return _from_timm_cfg(found.to_dict()) if found is not None else None
    if spec.startswith("torchvision:"):
        return _from_torchvision(spec[len("torchvision:"):])
    return None


def _from_timm_cfg(cfg: Mapping[str, Any]) -> Preprocess | None:
    size = cfg.get("input_size")
    if not (isinstance(size, (list, tuple)) and len(size) == 3 and size[0] == 3):
        return None
    interpolation = cfg.get("interpolation") if cfg.get("interpolation") in INTERPOLATIONS else "bilinear"
    mode = cfg.get("crop_mode") or "center"
    pct = cfg.get("crop_pct")
    crop = (int(size[1]), int(size[2]))
    try:
        if mode == "center":
            return Preprocess(crop=crop, crop_pct=float(pct) if pct else None, interpolation=interpolation,
                              mean=cfg.get("mean"), std=cfg.get("std"))
        if mode == "squash":
            resize = tuple(math.floor(d / float(pct or 1.0)) for d in crop)
            return Preprocess(resize=resize, crop=crop, interpolation=interpolation, mean=cfg.get("mean"),
                              std=cfg.get("std"))
    except InvalidInputError:
        return None
    return None  # "border" (letterboxing) is not a step of the record


def _from_torchvision(name: str) -> Preprocess | None:
    try:
        from torchvision.models import get_model_weights

        weights = get_model_weights(name)
    except Exception:  # noqa: BLE001 - a model without weights has no default
        return None
    member = getattr(weights, "DEFAULT", None)
    transforms = getattr(member, "transforms", None)
    if transforms is None:
        return None
    cls = transforms.func if isinstance(transforms, functools.partial) else transforms
    kwargs: dict[str, Any] = {}
    try:
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.default is not p.empty and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                kwargs[p.name] = p.default
    except (TypeError, ValueError):
        pass
    if isinstance(transforms, functools.partial):
        kwargs.update(transforms.keywords)
    kind = getattr(cls, "__name__", "")
    mode = getattr(kwargs.get("interpolation"), "value", "bilinear")
    common = {"interpolation": mode if mode in INTERPOLATIONS else "bilinear",
              "antialias": kwargs.get("antialias") is not False}
    try:
        if kind == "ImageClassification":
            return Preprocess(resize=int(kwargs["resize_size"]), crop=int(kwargs["crop_size"]), mean=kwargs.get("mean"),
                              std=kwargs.get("std"), **common)
        if kind == "SemanticSegmentation":
            resize = kwargs.get("resize_size")
            return Preprocess(resize=int(resize) if resize else None, mean=kwargs.get("mean"), std=kwargs.get("std"),
                              **common)
        if kind == "ObjectDetection":
            return Preprocess()
    except (KeyError, TypeError, ValueError, InvalidInputError):
        return None
    return None  # video, optical flow, ...: not one image per input


# ----------------------------------------------------------------------------- images and inputs


def image_input_index(inputs: Sequence[Any], name: str | None = None) -> int:
    """Which input images feed: the one named ``name``, else the only one of shape ``(N, 3, H, W)``.

    ``inputs`` have ``.name`` and ``.shape`` (manifest :class:`~fxexport.manifest.TensorSpec`).

    Raises:
        InvalidInputError: no such input, or no/several 3-channel inputs and no name.

    Example:
        >>> from types import SimpleNamespace as S
        >>> image_input_index([S(name="depth", shape=[1, 1, 8, 8]), S(name="rgb", shape=["batch", 3, 8, 8])])
        1
    """
    listing = ", ".join(f"{i.name} {list(i.shape)}" for i in inputs)
    if name is not None:
        for k, spec in enumerate(inputs):
            if spec.name == name:
                if len(spec.shape) != 4 or spec.shape[1] not in (3, "channels"):
                    raise InvalidInputError(f"input '{name}' has shape {list(spec.shape)}; images decode to "
                                            "(1, 3, H, W) (RGB): name an input of that shape")
                return k
        raise InvalidInputError(f"the image input '{name}' is not an input of the model; its inputs: {listing}")
    found = [k for k, spec in enumerate(inputs) if len(spec.shape) == 4 and spec.shape[1] == 3]
    if len(found) == 1:
        return found[0]
    if not found:
        raise InvalidInputError(f"no input takes images (an image input has shape (batch, 3, H, W)); the inputs: "
                                f"{listing}")
    raise InvalidInputError(f"inputs {', '.join(repr(inputs[k].name) for k in found)} all take 3 channels: name the "
                            "image input (image_input=NAME, on the command line --image-input NAME)")


def is_image(path: str | os.PathLike) -> bool:
    """Whether verify/optimize read ``path`` as an image (by suffix: .jpg, .jpeg, .png)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | os.PathLike, record: Preprocess | None = None) -> Any:
    """Decode a JPEG/PNG file (step 1): a uint8 ``(3, H, W)`` tensor, ``(4, H, W)`` when ``record.alpha`` is
    ``"blend"`` and the file has alpha. torchvision.io decodes it; the EXIF orientation is applied when the
    record says so.

    Raises:
        InvalidInputError: the file is missing, too large, or not an image torchvision.io decodes.
    """
    import torch
    from torchvision.io import ImageReadMode, decode_image

    record = record or Preprocess()
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise InvalidInputError(f"image '{p}' is {size} bytes; images are read up to {MAX_IMAGE_BYTES} bytes")
        data = torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8)
    except OSError as err:
        raise InvalidInputError(f"cannot read image '{p}': {err.strerror or err}") from None
    mode = ImageReadMode.RGB_ALPHA if record.alpha == "blend" else ImageReadMode.RGB
    try:
        image = decode_image(data, mode=mode, apply_exif_orientation=record.exif_orientation)
    except Exception as err:  # noqa: BLE001 - torchvision's message names the problem
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise InvalidInputError(f"image '{p}' cannot be decoded by torchvision.io ({first[:200]}); "
                                "give JPEG or PNG files") from None
    if image.dim() == 3 and image.shape[0] == 4 and bool((image[3] == 255).all()):
        image = image[:3]
    return image


def load_image(path: str | os.PathLike, record: Preprocess | None = None) -> Any:
    """A file as one model input: decoded, preprocessed, with a batch dim: float32 ``(1, 3, h, w)``.

    Example:
        >>> import tempfile, torch, pathlib
        >>> from torchvision.io import encode_png
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.png"
        >>> _ = path.write_bytes(encode_png(torch.zeros(3, 20, 30, dtype=torch.uint8)).numpy().tobytes())
        >>> tuple(load_image(path, Preprocess(resize=10, crop=8)).shape)
        (1, 3, 8, 8)
    """
    record = record or Preprocess()
    return record.apply(read_image(path, record)).unsqueeze(0)


def field_names() -> Iterable[str]:
    """The record's field names, in order."""
    return [f.name for f in fields(Preprocess)]
