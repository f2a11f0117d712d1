"""ICMLM pretraining (``icmlm-train``), installed as ``icmlm_zoo.training``.

The repository keeps this package in ``training/`` at the top level; the wheel and editable installs map it to
``icmlm_zoo.training`` (``pyproject.toml``, ``package-dir``). It is importable under that one name only, so that
no distribution installs a top-level ``training`` package and the same code never loads twice under two names.
"""
if __name__ != "icmlm_zoo.training":
    raise ImportError(f"the ICMLM trainer is the package 'icmlm_zoo.training', not '{__name__}': "
                      "install icmlm-zoo (pip install -e '.[train]') and import icmlm_zoo.training")
