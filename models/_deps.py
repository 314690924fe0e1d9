"""Optional dependencies imported on first use, with an error saying how to install them."""
from __future__ import annotations

from types import ModuleType

from tradeloop.models.errors import ModelError


def require_torch(what: str) -> ModuleType:
    """The torch module, or a ModelError naming ``what`` needed it and the extra that provides it."""
    try:
        import torch
    except ImportError:
        raise ModelError(f"{what} needs torch, which is not installed: pip install -e '.[models]' "
                         "(torch==2.13.0, onnx, onnxruntime, onnxscript)") from None
    return torch
