"""Serving: a Ray-free predictor over an exported ONNX model, and the Ray Serve app around it."""
