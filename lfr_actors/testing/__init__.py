"""Test doubles that ship with the package, for unit tests only.

A fake camera source, a deterministic fake embedder and an in-memory index with the real
one's interface.
"""
