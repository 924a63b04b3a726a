"""Training: folder datasets, losses on a VGG-19 loss network, one loop for both families."""
