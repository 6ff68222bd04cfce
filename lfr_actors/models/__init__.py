"""The model layer: default model conversion, the model cache, inference sessions, and the
face pipeline stages (detection, quality, alignment, embedding) built on them.

This floor imports nothing from the kernel, the actors or the API.
"""
