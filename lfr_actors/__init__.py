"""lfr_actors: live facial recognition for authorised deployments, on an actor microkernel."""

__version__ = "0.1.0"
