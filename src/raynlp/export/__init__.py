"""Export a trained model with Optimum: ONNX, dynamic INT8, and a parity report."""
