"""Serving: bundles behind NVIDIA Triton (PyTriton), a client, and a load generator.

Torch-free, like `styleship.runtime`: a serving install needs numpy, OpenCV,
one inference engine and PyTriton.
"""
