"""The model layer: conversion, the model cache, inference sessions and the face stages.

Face stages: detection, quality, alignment and embedding, each on a declared model.

This floor imports nothing from the kernel, the actors or the API.
"""
