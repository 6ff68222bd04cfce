"""The kernel: topology in, supervised Ray actors out. It knows nothing about faces.

It reads a topology, starts and places every actor on Ray, wires them by their topology
IDs, supervises them, and drains them.
"""
