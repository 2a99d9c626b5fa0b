"""The PyTorch reference biLM, weight loading, and the ONNX exporter."""
