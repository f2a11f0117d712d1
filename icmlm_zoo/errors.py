"""Exceptions the zoo raises; each message says what went wrong and what to do."""


class IcmlmZooError(RuntimeError):
    """Base class of the zoo's own errors."""


class WeightsNotAvailableError(IcmlmZooError):
    """Pretrained weights were asked for a tag that has none to load (it is a recipe only)."""


class WeightsUnreachableError(IcmlmZooError):
    """Weights are not in the cache and cannot be downloaded (offline, or the host cannot be reached); the message
    names every way out."""


class WeightsIntegrityError(IcmlmZooError):
    """A downloaded or cached file does not match the sha256 the manifest records (or the one pinned on first use)."""


class ManifestError(IcmlmZooError, ValueError):
    """The weights manifest is missing, unreadable or breaks the schema (the message names the file)."""


class PinError(WeightsIntegrityError):
    """The digest pinned on first use for a source with no published hash cannot be read, and cannot be restored."""


class ConversionError(IcmlmZooError):
    """An original checkpoint could not be read or does not fit the target architecture."""
