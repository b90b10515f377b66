"""fxexport: turn any PyTorch model into a multi-output feature model and ship it.

Pick intermediate nodes of a model's FX graph by name, get an extractor that
returns them as an ordered dict, export it to ONNX / TorchScript / AOTInductor
with named outputs, and verify the export against the eager extractor.

Example:
    >>> import torch, torchvision
    >>> from fxexport import create_feature_extractor
    >>> model = torchvision.models.resnet18()
    >>> extractor = create_feature_extractor(model, {"layer1": "feat1", "layer3": "feat3"})
    >>> {k: tuple(v.shape) for k, v in extractor(torch.rand(1, 3, 64, 64)).items()}
    {'feat1': (1, 64, 16, 16), 'feat3': (1, 256, 4, 4)}
"""

__version__ = "0.1.0"

from fxexport.errors import (  # noqa: E402
    ExportError,
    FxExportError,
    InvalidInputError,
    NodeNotFoundError,
    OutputSpecError,
    TraceError,
    VerificationError,
)
from fxexport.manifest import Manifest, TensorSpec, read_manifest  # noqa: E402
from fxexport.tracing import LeafModuleAwareTracer, NodePathTracer  # noqa: E402
from fxexport.extractor import create_feature_extractor, get_graph_node_names  # noqa: E402
from fxexport.flatten import OutputSpec, flatten, unflatten  # noqa: E402
from fxexport.export import export_aoti, export_onnx, export_torchscript  # noqa: E402
from fxexport.verify import OutputCheck, VerifyReport, verify  # noqa: E402

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
