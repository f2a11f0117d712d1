"""Batch collation: drops failed/skipped samples (counting them by reason) and pads token ids."""
from __future__ import annotations

from collections import Counter
from typing import Any

import torch

__all__ = ["Collator"]


class Collator:
    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        errors: Counter[str] = Counter(s["error"] for s in samples if "error" in s)
        skipped: Counter[str] = Counter(s["skip"] for s in samples if "skip" in s)
        ok = [s for s in samples if "error" not in s and "skip" not in s]
        batch: dict[str, Any] = {"errors": dict(errors), "skipped": dict(skipped), "n_seen": len(samples),
                                 "n": len(ok), "truncated": sum(bool(s.get("truncated")) for s in ok),
                                 "captions": [s["caption"] for s in ok],
                                 "error_details": [s.get("detail", "") for s in samples if "error" in s][:3]}
        if not ok:
            return batch
        batch["images"] = torch.stack([s["image"] for s in ok])
        if "input_ids" in ok[0]:
            L = max(len(s["input_ids"]) for s in ok)
            ids = torch.full((len(ok), L), self.pad_id, dtype=torch.long)
            labels = torch.full((len(ok), L), -100, dtype=torch.long)
            att = torch.zeros((len(ok), L), dtype=torch.long)
            for r, s in enumerate(ok):
                n = len(s["input_ids"])
                ids[r, :n] = torch.tensor(s["input_ids"])
                labels[r, :n] = torch.tensor(s["labels"])
                att[r, :n] = 1
            batch.update(input_ids=ids, labels=labels, attention_mask=att)
        if "tp" in ok[0]:
            batch["tp"] = torch.stack([s["tp"] for s in ok])
        return batch
