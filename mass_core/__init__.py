"""MASS: mask-guided self-supervised pretraining of 3D medical-image encoders.

Every pipeline stage lives in a module named after it; ``python -m mass_core``
(or the ``mass-core`` command) runs any stage without Snakemake.
"""

__version__ = "0.1.0"
