"""Fault tests from outside: a running deployment (``lfr up`` in its own process) is
broken the way a real site breaks it (kill -9, SIGTERM, a full disk, corrupt files, a
stream that stops or freezes, request floods), and each test asserts the figures that
matter: recovery time, sightings lost, alerts duplicated."""
