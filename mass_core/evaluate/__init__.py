"""Downstream evaluation of pretrained encoders and the paper's tables.

One module per job of the ``evaluate`` and ``aggregate`` stages:

- :mod:`~mass_core.evaluate.metrics`: Dice and HD95 (mm) per class and case (MONAI);
- :mod:`~mass_core.evaluate.subsets`: nested, deterministic label-fraction subsets;
- :mod:`~mass_core.evaluate.segmentation`: the finetuning network (shared encoder + U-Net decoder);
- :mod:`~mass_core.evaluate.windows`: crops, padding and sliding-window inference shared by the jobs;
- :mod:`~mass_core.evaluate.finetune`: supervised finetuning on a label fraction (``finetune_seg``);
- :mod:`~mass_core.evaluate.fewshot`: in-context few-shot segmentation (``incontext_fewshot``);
- :mod:`~mass_core.evaluate.probe`: frozen-encoder classification (``linear_probe``);
- :mod:`~mass_core.evaluate.aggregate`: tables (parquet, CSV, Markdown);
- :mod:`~mass_core.evaluate.plots`: label-efficiency, few-shot and example figures;
- :mod:`~mass_core.evaluate.infer`: in-context segmentation of raw scans (``mass-core infer``).

Submodules are imported on demand (``from mass_core.evaluate.metrics import ...``)
so that importing one job does not load the libraries of the others.
"""
