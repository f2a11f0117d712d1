"""icmlm-zoo: caption-pretrained (ICMLM) vision backbones for timm.

``import icmlm_zoo`` registers ``icmlm_resnet50``, ``icmlm_vgg16``, ``icmlm_resnet18`` and ``icmlm_resnet_tiny``
in timm, so that ``timm.create_model("icmlm_resnet50", pretrained=True)`` works. This import stays light: it
does not import transformers (the trainer's and the probes' tools come with the ``[train]`` and ``[eval]`` extras).
A broken weights manifest (``$ICMLM_ZOO_MANIFEST``) makes this import raise :class:`ManifestError`, whose one-line
message names the file.

The console scripts (``icmlm-zoo``, ``icmlm-train``, ``icmlm-eval``) import this package without torch, so that
``-h`` and ``--version`` answer at once; there the backbones are registered when timm is first imported
(see :mod:`icmlm_zoo.registration`).
"""
from . import registration
from .errors import (
    ConversionError,
    IcmlmZooError,
    PinError,
    WeightsIntegrityError,
    WeightsNotAvailableError,
    WeightsUnreachableError,
)
from .manifest import ManifestError, load_manifest

__version__ = registration.installed_version()  # the one source is pyproject.toml
registration.register_backbones()

__all__ = [
    "ConversionError",
    "IcmlmZooError",
    "ManifestError",
    "PinError",
    "WeightsIntegrityError",
    "WeightsNotAvailableError",
    "WeightsUnreachableError",
    "__version__",
    "load_manifest",
]
