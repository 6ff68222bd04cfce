"""One module per actor role.

Each actor is a plain class; the kernel turns it into a Ray actor with
``ray.remote(cls).options(...)``, so unit tests can use it without Ray.
"""
