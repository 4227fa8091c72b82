"""ONNX graphs made from the model: export, simplification, the fp16 graph and the shared Q/DQ int8 graph."""
