"""What users bring: reading a checkpoint, an ONNX or an MMDeploy SDK package, describing the model it holds
(`describe`) and loading its weights into the network (`weights`)."""
