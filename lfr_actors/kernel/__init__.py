"""The kernel: reads a topology, starts and places every actor on Ray, wires them by their
topology IDs, supervises them, and drains them. It knows nothing about faces.
"""
