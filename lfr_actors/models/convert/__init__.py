"""Readers for the source model formats and converters from them to ONNX.

Pure functions over bytes: no network, no cache, no torch and no dlib.
"""
