"""Exceptions the zoo raises; each message says what went wrong and what to do."""


class IcmlmZooError(RuntimeError):
    """Base class of the zoo's own errors."""


class WeightsNotAvailableError(IcmlmZooError):
    """Pretrained weights were asked for a tag that has none to load (it is a recipe only)."""


class WeightsIntegrityError(IcmlmZooError):
    """A downloaded or cached file does not match the sha256 the manifest records (or the one pinned on first use)."""


class ConversionError(IcmlmZooError):
    """An original checkpoint could not be read or does not fit the target architecture."""


def not_cached_error(name: str, where: str, why: str = "offline, or no network") -> IcmlmZooError:
    """The one error for weights that are not in the cache and may not (or cannot) be downloaded."""
    return IcmlmZooError(
        f"{name}: {where} is neither in the cache nor reachable ({why}). Prefetch it while online with "
        f"`icmlm-zoo download {name}`, or load a local copy with pretrained_cfg_overlay=dict(file=...).")
