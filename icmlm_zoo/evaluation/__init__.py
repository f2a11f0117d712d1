"""Backbone-only evaluation: what needs a backbone and no training run.

Submodules, one job each: :mod:`model_loading` (NAME|FILE|FOLDER -> backbone), :mod:`features` (pooled
features, cached), :mod:`voc07` (VOC07 linear SVMs), :mod:`linear_probe` (ImageFolder linear probe) and
:mod:`reporting` (results as JSON + markdown). The ``icmlm-eval`` command and everything that reads a training
run live in :mod:`icmlm_zoo.analysis`.
"""
