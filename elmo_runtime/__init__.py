"""Torch-free ELMo embeddings from an exported ONNX model package."""
