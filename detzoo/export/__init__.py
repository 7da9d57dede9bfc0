"""Export of detectors for deployment: ONNX (``detzoo.export.onnx``), run by onnxruntime."""
