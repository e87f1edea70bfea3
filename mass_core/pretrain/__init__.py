"""Self-supervised pretraining: the MASS pretext task and the trainer shared with the baselines.

Entry point: :func:`mass_core.pretrain.run.run_pretraining` (or
``python -m mass_core.pretrain``). See ``docs/pretraining.md``.
"""
