"""Which models the compatibility sweep runs: :class:`ZooModel` rows and the named sets of them.

Sets: ``all``, ``torchvision`` (= ``classification`` + ``segmentation`` + ``detection``),
``timm`` and ``smoke`` (five quick models, for tests). Each row names the model spec
:func:`fxexport.models.load_model` builds, its group in the matrix, its family, builder
kwargs and the input sizes to try. Nothing here builds a model.

Example:
    >>> [m.id for m in zoo_models("smoke")][:2]
    ['torchvision:resnet18', 'torchvision:squeezenet1_1']
    >>> [m.id for m in run_order(zoo_models("smoke"))][:2]
    ['timm:test_vit', 'torchvision:resnet18']
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from fxexport.errors import InvalidInputError

__all__ = [
    "ZooModel",
    "GROUPS",
    "MODEL_SETS",
    "TIMM_MODELS",
    "SMOKE",
    "HEAVY",
    "zoo_models",
    "select_models",
    "run_order",
    "torchvision_classification_models",
    "torchvision_segmentation_models",
    "torchvision_detection_backbones",
    "timm_models",
]

#: the matrix's groups, in the order it lists them
GROUPS = (
    "torchvision classification",
    "torchvision segmentation",
    "torchvision detection backbone",
    "timm",
)

#: the names :func:`zoo_models` accepts
MODEL_SETS = ("all", "torchvision", "classification", "segmentation", "detection", "timm", "smoke")


@dataclass(frozen=True)
class ZooModel:
    """One row of the sweep.

    ``sizes`` are the input sizes (square) to try, smallest first: the task uses the first
    one the eager model runs on, so a model with a fixed input size falls back to its own
    (``0`` = the model's own size). ``params_m`` is the parameter count in millions when it
    is known without building the model (torchvision's weight metadata): the sweep gives a
    big model more time. ``timeout`` overrides the sweep's time limit for this model.

    Example:
        >>> m = ZooModel("tiny", "models/tiny.py:build", "example", "tiny", sizes=(32,))
        >>> ZooModel.from_dict(m.to_dict()) == m
        True
    """

    id: str
    spec: str
    group: str
    family: str
    kwargs: dict = field(default_factory=dict, hash=False)
    sizes: tuple = (64,)
    note: str = ""
    #: this model's time limit in seconds (default: the sweep's ``--timeout``)
    timeout: float | None = None
    #: millions of parameters, when known before the model is built
    params_m: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The row as plain data (what a worker process receives)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ZooModel":
        """The row :meth:`to_dict` wrote."""
        data = dict(data)
        data["sizes"] = tuple(data.get("sizes") or (64,))
        return cls(**data)


_CONVNET_SIZE = 64

_TV_FAMILIES = ("efficientnet_v2", "efficientnet", "mobilenet_v2", "mobilenet_v3", "regnet_x", "regnet_y",
                "resnext", "wide_resnet", "resnet", "shufflenet", "squeezenet", "swin_v2", "swin", "vgg", "vit",
                "convnext", "densenet", "mnasnet", "maxvit", "inception", "googlenet", "alexnet")


def _tv_family(name: str) -> str:
    return next((prefix for prefix in _TV_FAMILIES if name.startswith(prefix)), name)


def _tv_params_m(name: str) -> float | None:
    """Millions of parameters from torchvision's weight metadata (nothing is downloaded or built)."""
    from torchvision.models import get_model_weights

    try:
        return round(get_model_weights(name).DEFAULT.meta["num_params"] / 1e6, 2)
    except (KeyError, ValueError, AttributeError):
        return None


def torchvision_classification_models() -> list[ZooModel]:
    """Every torchvision classification model, with the input size the sweep uses."""
    import torchvision

    rows = []
    for name in sorted(torchvision.models.list_models(module=torchvision.models)):
        kwargs: dict[str, Any] = {}
        sizes: tuple = (_CONVNET_SIZE,)
        note = ""
        if name.startswith("vit_"):
            patch = int(re.search(r"_(\d+)$", name).group(1))
            size = 112 if 112 % patch == 0 else 128
            kwargs = {"image_size": size}
            sizes = (size,)
            note = f"image_size={size} (builder kwarg; default 224)"
        elif name == "maxvit_t":
            sizes = (224,)
            note = "fixed 224 (window partitions)"
        elif name.startswith("swin"):
            sizes = (112,)
        elif name == "inception_v3":
            sizes = (96,)
            kwargs = {"init_weights": True}
        elif name == "googlenet":
            kwargs = {"init_weights": True}
        rows.append(ZooModel(f"torchvision:{name}", f"torchvision:{name}", GROUPS[0], _tv_family(name),
                             kwargs, sizes, note, params_m=_tv_params_m(name)))
    return rows


def torchvision_segmentation_models() -> list[ZooModel]:
    """Every torchvision segmentation model, at 128 px."""
    import torchvision

    return [ZooModel(f"torchvision:{name}", f"torchvision:{name}", GROUPS[1], name.split("_", 1)[0], {}, (128,),
                     params_m=_tv_params_m(name))
            for name in sorted(torchvision.models.list_models(module=torchvision.models.segmentation))]


_BACKBONE_UTILS = "torchvision.models.detection.backbone_utils"


def torchvision_detection_backbones() -> list[ZooModel]:
    """torchvision's FPN backbone builders (resnet18/50, MobileNetV3 small/large), at 128 px.

    ``params_m`` is the classification model's count (the backbone drops its head and adds
    an FPN): close enough for a time budget.
    """
    rows = []
    for backbone in ("resnet18", "resnet50"):
        rows.append(ZooModel(
            f"resnet_fpn_backbone({backbone})", f"{_BACKBONE_UTILS}:resnet_fpn_backbone", GROUPS[2],
            "resnet_fpn_backbone", {"backbone_name": backbone, "weights": None, "trainable_layers": 5}, (128,),
            params_m=_tv_params_m(backbone)))
    for backbone in ("mobilenet_v3_small", "mobilenet_v3_large"):
        rows.append(ZooModel(
            f"mobilenet_backbone({backbone}, fpn)", f"{_BACKBONE_UTILS}:mobilenet_backbone", GROUPS[2],
            "mobilenet_backbone", {"backbone_name": backbone, "weights": None, "fpn": True, "trainable_layers": 6},
            (128,), params_m=_tv_params_m(backbone)))
    return rows


#: timm backbones: the smallest variant of each family (name, family)
TIMM_MODELS: tuple[tuple[str, str], ...] = (
    ("resnet18", "resnet"),
    ("resnext26ts", "resnext"),
    ("res2net50_26w_4s", "res2net"),
    ("resnest14d", "resnest"),
    ("efficientnet_b0", "efficientnet"),
    ("efficientnetv2_rw_t", "efficientnetv2"),
    ("mobilenetv3_small_050", "mobilenetv3"),
    ("mobilenetv4_conv_small", "mobilenetv4"),
    ("convnext_atto", "convnext"),
    ("convnextv2_atto", "convnextv2"),
    ("regnetx_002", "regnet"),
    ("regnety_002", "regnet"),
    ("densenet121", "densenet"),
    ("repvgg_a0", "repvgg"),
    ("ghostnet_050", "ghostnet"),
    ("ghostnetv2_100", "ghostnet"),
    ("nf_regnet_b0", "nfnet"),
    ("eca_nfnet_l0", "nfnet"),
    ("mixnet_s", "mixnet"),
    ("lcnet_050", "lcnet"),
    ("hrnet_w18_small", "hrnet"),
    ("dla34", "dla"),
    ("cspresnet50", "cspnet"),
    ("ese_vovnet19b_slim", "vovnet"),
    ("rexnet_100", "rexnet"),
    ("inception_v3", "inception"),
    ("hgnetv2_b0", "hgnet"),
    ("fastvit_t8", "fastvit"),
    ("repvit_m0_9", "repvit"),
    ("mobileone_s0", "mobileone"),
    ("efficientvit_b0", "efficientvit"),
    ("edgenext_xx_small", "edgenext"),
    ("mobilevit_xxs", "mobilevit"),
    ("poolformerv2_s12", "metaformer"),
    ("botnet26t_256", "byoanet"),
    ("vit_tiny_patch16_224", "vit"),
    ("deit_tiny_patch16_224", "deit"),
    ("eva02_tiny_patch14_224", "eva"),
    ("swin_tiny_patch4_window7_224", "swin"),
    ("swinv2_cr_tiny_ns_224", "swinv2"),
    ("maxvit_rmlp_pico_rw_256", "maxvit"),
    ("coatnet_nano_rw_224", "coatnet"),
    ("levit_128s", "levit"),
    ("coat_lite_tiny", "coat"),
    ("pvt_v2_b0", "pvt_v2"),
    ("xcit_nano_12_p16_224", "xcit"),
    ("tiny_vit_5m_224", "tiny_vit"),
    ("efficientformerv2_s0", "efficientformer"),
    ("davit_tiny", "davit"),
    ("hiera_tiny_224", "hiera"),
    ("cait_xxs24_224", "cait"),
    ("crossvit_tiny_240", "crossvit"),
    ("mvitv2_tiny", "mvitv2"),
    ("mixer_s16_224", "mlp-mixer"),
    ("sequencer2d_s", "sequencer"),
)


def timm_models() -> list[ZooModel]:
    """The timm set: 64 px first, the model's own input size when it does not run at 64."""
    return [ZooModel(f"timm:{name}", f"timm:{name}", GROUPS[3], family, {}, (_CONVNET_SIZE, 0))
            for name, family in TIMM_MODELS]


#: five quick models for the smoke test (one per kind of task the sweep runs)
SMOKE = ("torchvision:resnet18", "torchvision:squeezenet1_1", "models/multitask.py:build",
         "timm:test_vit", "models/needs_leaf.py:build")


def zoo_models(which: str = "all") -> list[ZooModel]:
    """The sweep's models: one of :data:`MODEL_SETS` (``smoke``: five quick models, for tests).

    Example:
        >>> zoo_models("everything")
        Traceback (most recent call last):
        ...
        fxexport.errors.InvalidInputError: unknown model set 'everything'; expected all, torchvision, \
classification, segmentation, detection, timm or smoke
    """
    if which == "smoke":
        return [
            ZooModel(SMOKE[0], SMOKE[0], GROUPS[0], "resnet", {}, (32,)),
            ZooModel(SMOKE[1], SMOKE[1], GROUPS[0], "squeezenet", {}, (48,)),
            ZooModel(SMOKE[2], SMOKE[2], "example", "multitask", {}, (0,)),
            ZooModel(SMOKE[3], SMOKE[3], GROUPS[3], "vit", {}, (0,)),
            ZooModel(SMOKE[4], SMOKE[4], "example", "needs_leaf", {}, (0,)),
        ]
    parts = {
        "classification": torchvision_classification_models,
        "segmentation": torchvision_segmentation_models,
        "detection": torchvision_detection_backbones,
        "timm": timm_models,
    }
    if which == "all":
        keys = list(parts)
    elif which == "torchvision":
        keys = ["classification", "segmentation", "detection"]
    elif which in parts:
        keys = [which]
    else:
        raise InvalidInputError(f"unknown model set {which!r}; expected all, torchvision, classification, "
                                "segmentation, detection, timm or smoke")
    return [m for key in keys for m in parts[key]()]


def select_models(which: str = "all", only: str | None = None, limit: int | None = None) -> list[ZooModel]:
    """The models of a set whose id matches the regex ``only``, at most ``limit`` of them.

    Example:
        >>> [m.id for m in select_models("smoke", only="^torchvision:", limit=1)]
        ['torchvision:resnet18']
    """
    models = zoo_models(which)
    if only:
        try:
            pattern = re.compile(only)
        except re.error as err:
            raise InvalidInputError(f"--only {only!r} is not a regular expression ({err}); "
                                    "e.g. --only '^timm:'") from None
        models = [m for m in models if pattern.search(m.id)]
    if limit is not None:
        models = models[:limit]
    return models


#: torchvision models with ~80M+ parameters: run last (their weights are serialized, checked
#: and loaded many times per model), so an interrupted sweep has covered the most models
HEAVY = frozenset({
    "vit_h_14", "regnet_y_128gf", "vit_l_16", "vit_l_32", "regnet_y_32gf", "regnet_x_32gf", "convnext_large",
    "efficientnet_v2_l", "efficientnet_v2_m", "wide_resnet101_2", "wide_resnet50_2", "swin_v2_b", "swin_b",
    "convnext_base", "resnext101_64x4d", "resnext101_32x8d", "regnet_y_16gf", "regnet_x_16gf", "vgg11",
    "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "alexnet", "vit_b_16",
    "vit_b_32", "deeplabv3_resnet101", "fcn_resnet101"})


def run_order(models: Sequence[ZooModel]) -> list[ZooModel]:
    """The order models run in: timm, light torchvision, segmentation / detection, heavy last (stable)."""
    rank = {GROUPS[3]: 0, GROUPS[0]: 1, GROUPS[1]: 2, GROUPS[2]: 2}

    def key(m: ZooModel) -> int:
        return 3 if m.spec.split(":", 1)[-1] in HEAVY else rank.get(m.group, 1)

    return sorted(models, key=key)
