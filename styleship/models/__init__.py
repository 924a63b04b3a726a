"""PyTorch models: the VGG-19 encoders, the ST-VAE, and the family registry.

Importing this package imports torch; the runtime never does.
"""
