"""Model cards of weight folders: huggingface_hub's ``ModelCard`` with ``ModelCardData`` metadata.

The metadata block (library_name ``timm``, tags, license, datasets, metrics and their results, the paper's arXiv
id) is what the Hub renders and indexes. Cards never call a file "verified": the zoo checks a weight against the
sha256 its manifest records, and a card written next to the weights cannot check anything.
"""
from __future__ import annotations

import json
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

ARXIV_ID = "2008.01392"
REPO_PLACEHOLDER = "ORG/REPO"
TAGS = ("image-feature-extraction", "timm", "icmlm", f"arxiv:{ARXIV_ID}")
PIPELINE_TAG = "image-feature-extraction"


def _datasets(meta: dict[str, Any]) -> list[str]:
    pre = meta.get("pretraining") or {}
    data = meta.get("data") or {}
    names = [pre.get("dataset"), data.get("kind")] + [m.get("dataset") for m in meta.get("metrics") or []]
    return list(dict.fromkeys(str(n) for n in names if n))


def _eval_results(meta: dict[str, Any]) -> list[EvalResult]:
    results = []
    for m in meta.get("metrics") or []:
        if not isinstance(m.get("value"), (int, float)) or not m.get("name"):
            continue
        dataset = str(m.get("dataset") or "unknown")
        results.append(EvalResult(task_type=PIPELINE_TAG, task_name=m.get("protocol") or None,
                                  dataset_type=dataset, dataset_name=dataset,
                                  metric_type=str(m["name"]), metric_value=m["value"]))
    return results


def card_data(name: str, config: dict[str, Any]) -> ModelCardData:
    """The Hub metadata of the weight folder whose timm ``config.json`` is ``config`` (its ``icmlm`` section
    carries the description, pretraining, data and metrics)."""
    meta = config.get("icmlm") or {}
    results = _eval_results(meta)
    return ModelCardData(
        library_name="timm",
        pipeline_tag=PIPELINE_TAG,
        license=config["pretrained_cfg"].get("license") or "unknown",
        tags=list(TAGS),
        datasets=_datasets(meta) or None,
        metrics=sorted({r.metric_type for r in results}) or None,
        model_name=name if results else None,
        eval_results=results or None,
    )


def build_card(model_name: str, tag: str | None, config: dict[str, Any]) -> ModelCard:
    """The model card of a weight folder, from its timm ``config.json`` content."""
    pre = config["pretrained_cfg"]
    meta = config.get("icmlm") or {}
    name = f"{model_name}.{tag}" if tag else model_name
    metric_lines = "\n".join(
        f"| {m.get('name')} | {m.get('value')} | {m.get('protocol', '')} | {m.get('dataset', '')} | "
        f"{m.get('provenance', '')} |" for m in meta.get("metrics") or []) or "| – | – | – | – | none yet |"
    recipe = meta.get("recipe") or meta.get("pretraining") or {}
    source = meta.get("converted_from")
    source_line = (f"\nConverted from `{source.get('file') or source.get('url')}` (sha256 `{source.get('sha256')}`)."
                   if isinstance(source, dict) else "")
    what = meta.get("description") or "a CNN trunk pretrained from captions"
    body = f"""# {name}

An ICMLM backbone ("Learning Visual Representations with Caption Annotations", Sariyildiz, Perez, Larlus,
ECCV 2020, [arXiv {ARXIV_ID}](https://arxiv.org/abs/{ARXIV_ID})): {what}.
Head-less (`num_classes=0`): add a head with `num_classes=N`.

## Usage
```python
import icmlm_zoo, timm
model = timm.create_model("{name}", pretrained=True)
cfg = timm.data.resolve_model_data_config(model)
transform = timm.data.create_transform(**cfg)
```
A ResNet folder also loads in plain timm: `timm.create_model("hf-hub:{REPO_PLACEHOLDER}", pretrained=True)`.

## Preprocessing
input size {list(pre['input_size'])}, mean {list(pre['mean'])}, std {list(pre['std'])}, crop_pct {pre['crop_pct']},
interpolation {pre['interpolation']}.

## Pretraining
```json
{json.dumps(recipe, indent=2, default=str)}
```

## Metrics
| metric | value | protocol | dataset | provenance |
|---|---|---|---|---|
{metric_lines}

## Files
`model.safetensors`: sha256 `{meta.get('sha256')}`, {meta.get('bytes')} bytes, computed when this folder was
written. `icmlm-zoo` checks a download against the sha256 its manifest records (`icmlm-zoo publish` records
this one); this card by itself checks nothing.{source_line}

## Citation
```bibtex
@inproceedings{{sariyildiz2020icmlm,
  title={{Learning Visual Representations with Caption Annotations}},
  author={{Sariyildiz, Mert Bulent and Perez, Julien and Larlus, Diane}},
  booktitle={{ECCV}},
  year={{2020}}
}}
```
"""
    return ModelCard(f"---\n{card_data(name, config).to_yaml()}\n---\n{body}")


def card_for_upload(text: str, config: dict[str, Any], repo_id: str) -> ModelCard:
    """The card ``publish`` uploads: the folder's own card (its text kept as written) with the metadata fields it
    lacks filled from ``config`` and the ``hf-hub:ORG/REPO`` placeholder replaced by ``repo_id``."""
    card = ModelCard(text, ignore_metadata_errors=True)
    meta = config.get("icmlm") or {}
    name = f"{meta.get('model')}.{meta.get('tag')}" if meta.get("tag") else str(meta.get("model"))
    filled = card_data(name, config)
    for key in ("library_name", "pipeline_tag", "license", "datasets", "metrics"):
        if getattr(card.data, key, None) in (None, [], ""):
            setattr(card.data, key, getattr(filled, key))
    if not getattr(card.data, "eval_results", None) and filled.eval_results:
        card.data.eval_results, card.data.model_name = filled.eval_results, filled.model_name
    tags = list(card.data.tags or [])
    card.data.tags = tags + [t for t in TAGS if t not in tags]
    card.text = card.text.replace(f"hf-hub:{REPO_PLACEHOLDER}", f"hf-hub:{repo_id}")
    return card
