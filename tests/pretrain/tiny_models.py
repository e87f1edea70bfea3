"""Model sizes small enough for one CPU thread, shared by the pretraining tests."""

# Shared by every pretraining test: a model of a few thousand parameters on 16^3 crops.
TINY_ENCODER = {"channels": [4, 8, 16], "blocks_per_stage": 1}
TINY_MASS = {"model": {"token_scales": 2, "learned_tokens": 2, "heads": 2}, "sampler": {"crop_size": 16, "num_masks": 3, "min_mask_voxels": 8}}
