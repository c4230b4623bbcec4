"""Stage 2 of train -> export -> bench: quantized TFLite and ONNX files, each checked against its Keras model."""
