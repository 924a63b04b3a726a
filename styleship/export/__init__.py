"""PyTorch checkpoint -> model bundle (ONNX graphs + manifest)."""
