"""Exceptions the zoo raises; each message says what went wrong and what to do."""


class IcmlmZooError(RuntimeError):
    """Base class of the zoo's own errors."""


class WeightsNotAvailableError(IcmlmZooError):
    """Pretrained weights were asked for a tag that has none to load (it is a recipe only)."""


class WeightsIntegrityError(IcmlmZooError):
    """A downloaded or cached file does not match the sha256 the manifest records."""


class ConversionError(IcmlmZooError):
    """An original checkpoint could not be read or does not fit the target architecture."""
