"""Networks: the shared residual encoder and the models built on it."""
