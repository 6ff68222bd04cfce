"""Test doubles that ship with the package: a fake camera source, a deterministic fake
embedder and an in-memory index with the real one's interface. For unit tests only.
"""
