"""ddrf runtime: torch-free DDRF fusion around ONNX Runtime, plus metrics and classical baselines."""
