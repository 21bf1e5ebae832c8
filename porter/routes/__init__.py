"""Routes: direct (zoo + mapping rules) and onnx (graph conversion)."""
