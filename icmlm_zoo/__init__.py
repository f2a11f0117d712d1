"""icmlm-zoo: caption-pretrained (ICMLM) vision backbones for timm.

``import icmlm_zoo`` registers ``icmlm_resnet50``, ``icmlm_vgg16``, ``icmlm_resnet18`` and ``icmlm_resnet_tiny``
in timm, so that ``timm.create_model("icmlm_resnet50", pretrained=True)`` works. This import stays light: it
does not import transformers (the trainer's and the probes' tools come with the ``[train]`` and ``[eval]`` extras).
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("icmlm-zoo")  # the one source is pyproject.toml
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"

from . import models  # noqa: E402,F401  (registers the backbones in timm)
from .errors import ConversionError, IcmlmZooError, WeightsIntegrityError, WeightsNotAvailableError  # noqa: E402
from .manifest import load_manifest  # noqa: E402

__all__ = [
    "ConversionError",
    "IcmlmZooError",
    "WeightsIntegrityError",
    "WeightsNotAvailableError",
    "__version__",
    "load_manifest",
]
