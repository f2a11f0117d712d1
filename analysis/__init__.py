"""Analysis of training runs (``icmlm-eval``), installed as ``icmlm_zoo.analysis``.

The layer above the trainer: what needs a training run, the trainer's scenes or its heads (grounding, pointing
game, attention maps of a run, binding diagnosis, fresh heads, the fidelity experiment, side-by-side comparison)
and the ``icmlm-eval`` command, which also dispatches the core's backbone-only probes (``icmlm_zoo.evaluation``).
The repository keeps it in ``analysis/``; ``pyproject.toml`` maps it to ``icmlm_zoo.analysis``.
"""
if __name__ != "icmlm_zoo.analysis":
    raise ImportError(f"the run analysis is the package 'icmlm_zoo.analysis', not '{__name__}': "
                      "install icmlm-zoo (pip install -e '.[train,eval]') and import icmlm_zoo.analysis")
