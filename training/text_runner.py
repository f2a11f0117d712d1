"""The frozen text encoder at speed: inference mode, a reduced-precision copy, an output cache.

:class:`FrozenTextRunner` runs the frozen encoder in ``torch.inference_mode`` and, if asked, in reduced precision
through a bf16/fp16 *copy* of the encoder (weights cast once, not at every step as autocast would for frozen
weights), with an optional LRU cache of the encoder outputs keyed on the content of ``(input_ids,
attention_mask)`` of each caption row. Config: ``text.precision`` (auto | fp32 | bf16 | fp16), ``text.cache_size``
(0 = off). What each lever buys: docs/performance.md.
"""
from __future__ import annotations

import copy
import functools
from collections import OrderedDict
from typing import Any, Callable

import torch
import torch.nn as nn

from .choices import TEXT_PRECISIONS

__all__ = ["FrozenCopy", "FrozenTextRunner", "TextFeatureCache", "resolve_text_dtype", "fast_bf16_cpu", "fast_bf16",
           "eager_attention_on_cpu", "TEXT_PRECISIONS"]

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@functools.lru_cache(maxsize=None)
def fast_bf16_cpu() -> bool:
    """True when this CPU has native bf16 matrix units (AMX or AVX512-BF16), as oneDNN reports them."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # pragma: no cover - older/odd builds
        return False


def fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 matrix products natively (CUDA with bf16 support; CPU with AMX/AVX512-BF16)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and fast_bf16_cpu()


def resolve_text_dtype(precision: str, amp: str, device: torch.device) -> torch.dtype:
    """The dtype the frozen encoder runs in. ``auto``: the AMP dtype under ``train.amp`` bf16/fp16 (fp16 only on
    CUDA); without AMP, bf16 where the device computes it natively (the encoder is frozen: its features only
    lose bits below bf16's precision, and the trunk and heads stay fp32), else fp32."""
    if precision == "auto":
        if amp == "auto":
            amp = "bf16" if fast_bf16(device) else "none"
        if amp == "none":
            precision = "bf16" if fast_bf16(device) else "fp32"
        else:
            precision = "fp16" if (amp == "fp16" and device.type == "cuda") else "bf16"
    if precision == "fp16" and device.type != "cuda":
        precision = "bf16"
    return _DTYPES[precision]


class TextFeatureCache:
    """LRU cache of frozen-encoder outputs per caption row, keyed on the bytes of its token ids and attention
    mask (up to the last attended position). Values are (n, width) tensors in the encoder's dtype."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = int(max_entries)
        self._d: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key: bytes) -> torch.Tensor | None:
        v = self._d.get(key)
        if v is None:
            self.misses += 1
            return None
        self._d.move_to_end(key)
        self.hits += 1
        return v

    def put(self, key: bytes, value: torch.Tensor) -> None:
        if self.max_entries <= 0:
            return
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self.max_entries:
            self._d.popitem(last=False)

    def clear(self) -> None:
        self._d.clear()
        self.hits = self.misses = 0

    def stats(self) -> dict[str, Any]:
        n = self.hits + self.misses
        return {"entries": len(self._d), "hits": self.hits, "misses": self.misses,
                "hit_rate": self.hits / n if n else 0.0}


def _row_keys(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[list[bytes], list[int]]:
    ids = input_ids.detach().to("cpu", torch.int64).numpy()
    att = attention_mask.detach().to("cpu", torch.int64).numpy()
    keys, lengths = [], []
    for r in range(ids.shape[0]):
        nz = att[r].nonzero()[0]
        n = int(nz[-1]) + 1 if len(nz) else 0
        keys.append(ids[r, :n].tobytes() + b"|" + att[r, :n].astype("int8").tobytes())
        lengths.append(n)
    return keys, lengths


class FrozenCopy:
    """A frozen module's copy in another dtype (on a given device), made once and remade only when the
    original's weights moved or changed; the original itself when the dtype is already its own. ``prepare(copy,
    device)``, if given, is applied to each new copy."""

    def __init__(self, module: nn.Module,
                 prepare: Callable[[nn.Module, torch.device], None] | None = None) -> None:
        self.module = module
        self.prepare = prepare
        self._copy: nn.Module | None = None
        self._key: tuple | None = None

    def get(self, dtype: torch.dtype, device: torch.device) -> nn.Module:
        ref = next(self.module.parameters())
        if dtype == ref.dtype:
            return self.module
        key = (dtype, str(device), ref.data_ptr(), ref._version)
        if self._copy is None or self._key != key:
            self._copy = copy.deepcopy(self.module).to(device=device, dtype=dtype).eval()
            for p in self._copy.parameters():
                p.requires_grad_(False)
            if self.prepare is not None:
                self.prepare(self._copy, device)
            self._key = key
        return self._copy


def eager_attention_on_cpu(encoder_copy: nn.Module, device: torch.device) -> None:
    """torch's CPU SDPA kernel is slower than plain matmul + softmax for caption-length sequences in bf16 (MiniLM:
    0.113 -> 0.093 CPU-s per 32 demo captions; bert-base: equal): the encoder's reduced-precision CPU copy (or
    the encoder kept in bf16 on the CPU, :func:`~icmlm_zoo.training.text.load_text_side`) uses eager attention;
    the fp32 original and GPU copies keep SDPA."""
    if device.type == "cpu" and hasattr(encoder_copy, "set_attn_implementation"):
        encoder_copy.set_attn_implementation("eager")


class FrozenTextRunner:
    """Runs a frozen encoder: inference mode, optional reduced-precision copy, optional output cache.

    Not an ``nn.Module`` on purpose: the low-precision copy and the cache stay out of ``state_dict``,
    ``parameters()`` and DDP. The copy is made lazily on the device of the first input (and remade if the
    encoder moved).
    """

    def __init__(self, encoder: nn.Module, precision: str = "auto", amp: str = "none", cache_size: int = 0) -> None:
        self.encoder = encoder
        self.precision, self.amp = precision, amp
        self.cache = TextFeatureCache(cache_size) if cache_size else None
        self._frozen_copy = FrozenCopy(encoder, prepare=eager_attention_on_cpu)

    def _encode(self, module: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(input_ids.device.type, enabled=False):
            return module(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ids and mask → (B, L, width) states, a normal (non-inference) tensor in the run dtype."""
        dtype = resolve_text_dtype(self.precision, self.amp, input_ids.device)
        module = self._frozen_copy.get(dtype, input_ids.device)
        if self.cache is None:
            return self._encode(module, input_ids, attention_mask).clone()
        keys, lengths = _row_keys(input_ids, attention_mask)
        B, L = input_ids.shape
        found = [self.cache.get(k) for k in keys]
        miss = [r for r, v in enumerate(found) if v is None]
        if miss:
            n = max(1, max(lengths[r] for r in miss))
            idx = torch.tensor(miss, device=input_ids.device)
            states = self._encode(module, input_ids[idx, :n], attention_mask[idx, :n])
            for j, r in enumerate(miss):
                v = states[j, :lengths[r]].clone()
                found[r] = v
                self.cache.put(keys[r], v)
        width = found[0].shape[-1]
        out = torch.zeros(B, L, width, dtype=found[0].dtype, device=input_ids.device)
        for r, v in enumerate(found):
            out[r, :lengths[r]] = v
        return out
