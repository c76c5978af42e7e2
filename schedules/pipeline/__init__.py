"""Compiling with schedules: ONNX import -> layout -> CPU rewrites -> apply schedules -> build."""
