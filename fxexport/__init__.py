"""fxexport: turn any PyTorch model into a multi-output feature model and ship it.

Pick intermediate nodes of a model's FX graph by name, get an extractor that
returns them as an ordered dict, export it with named outputs to ONNX,
TorchScript, AOTInductor, ExecuTorch, OpenVINO or LiteRT (one module each in
:mod:`fxexport.formats`), and verify the export against the eager extractor.

Example:
    >>> import torch, torchvision
    >>> from fxexport import create_feature_extractor
    >>> model = torchvision.models.resnet18()
    >>> extractor = create_feature_extractor(model, {"layer1": "feat1", "layer3": "feat3"})
    >>> {k: tuple(v.shape) for k, v in extractor(torch.rand(1, 3, 64, 64)).items()}
    {'feat1': (1, 64, 16, 16), 'feat3': (1, 256, 4, 4)}
"""

from fxexport._version import __version__
from fxexport.errors import (
    ExportError,
    FxExportError,
    InvalidInputError,
    NodeNotFoundError,
    OutputSpecError,
    TraceError,
    VerificationError,
)
from fxexport.manifest import Manifest, TensorSpec
from fxexport.tracing import LeafModuleAwareTracer, NodePathTracer
from fxexport.extractor import create_feature_extractor, get_graph_node_names
from fxexport.flatten import OutputSpec, flatten, unflatten
from fxexport.formats import read_manifest
from fxexport.formats.onnx import export_onnx
from fxexport.formats.torchscript import export_torchscript
from fxexport.formats.aoti import export_aoti
from fxexport.verification import OutputCheck, VerifyReport, verify

__all__ = [
    "__version__",
    "ExportError",
    "FxExportError",
    "InvalidInputError",
    "NodeNotFoundError",
    "OutputSpecError",
    "TraceError",
    "VerificationError",
    "Manifest",
    "TensorSpec",
    "read_manifest",
    "LeafModuleAwareTracer",
    "NodePathTracer",
    "create_feature_extractor",
    "get_graph_node_names",
    "OutputSpec",
    "flatten",
    "unflatten",
    "export_onnx",
    "export_torchscript",
    "export_aoti",
    "verify",
    "VerifyReport",
    "OutputCheck",
]
