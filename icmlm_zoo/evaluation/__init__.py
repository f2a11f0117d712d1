"""Backbone-only evaluation: what needs a backbone and no training run.

Submodules, one job each: :mod:`features` (pooled features of one stage, cached), :mod:`voc07` (VOC07 linear
SVMs), :mod:`linear_probe` (ImageFolder linear probe) and :mod:`reporting` (results as JSON + markdown, the one
markdown-table writer). Backbones come from :func:`icmlm_zoo.backbone_factory.load_backbone`. The ``icmlm-eval``
command and everything that reads a training run live in :mod:`icmlm_zoo.analysis`.
"""
