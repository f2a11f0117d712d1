"""Frozen-feature evaluation of ICMLM backbones (``icmlm-eval``).

Submodules, one job each: :mod:`model_loading` (NAME|FILE|RUN -> backbone), :mod:`features` (pooled
features, cached), :mod:`voc07` (VOC07 linear SVMs), :mod:`linear_probe` (ImageFolder linear probe),
:mod:`synthetic_probes` and :mod:`pointing_game` (held-out probes on generated scenes), :mod:`compare`
(side-by-side table), :mod:`attention_maps` (PNG heatmaps) and :mod:`cli`.
"""
