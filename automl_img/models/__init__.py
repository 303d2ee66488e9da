"""Models: architecture families, the training recipe and what it needs (augmentation, precision, metrics)."""
