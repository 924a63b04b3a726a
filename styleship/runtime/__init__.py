"""The production runtime: OpenCV pre/post-processing and one Backend per engine.

Nothing below this package imports torch; production installs need only
numpy, OpenCV and an inference engine.
"""
