"""The webhooks' shared secrets: read from the environment or a private file, checked.

A secret is refused in one line, naming the variable or file and never the value: a
variable that is not set or is empty, a file that is missing, empty, not a regular file,
or readable or writable by anyone but its owner (any of the mode bits 0o077 set: 0600 and
0400 are accepted), and a secret shorter than :data:`MIN_SECRET_LENGTH` characters.
Whitespace around the value (a file's final newline) is not part of the secret.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from lfr_actors.topology.schema import Webhook

MIN_SECRET_LENGTH = 16
"""The shortest secret accepted, in characters (after surrounding whitespace is removed)."""


class SecretError(ValueError):
    """A webhook's secret cannot be used; the message says why in one line."""


def read_secret(webhook: Webhook, environ: Mapping[str, str] | None = None) -> bytes:
    """The webhook's secret as bytes (UTF-8), or :class:`SecretError` saying why not."""
    env = os.environ if environ is None else environ
    if webhook.secret_env is not None:
        name = webhook.secret_env
        if name not in env:
            raise SecretError(f"the environment variable {name} (secret_env) is not set")
        value = env[name].strip()
        where = f"the environment variable {name}"
    else:
        assert webhook.secret_file is not None
        path = webhook.secret_file
        try:
            info = path.stat()
        except FileNotFoundError:
            raise SecretError(f"the secret file {path} does not exist") from None
        except OSError as exc:
            raise SecretError(f"the secret file {path} cannot be read: {exc.strerror}") from None
        if not stat.S_ISREG(info.st_mode):
            raise SecretError(f"the secret file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise SecretError(
                f"the secret file {path} has mode {stat.S_IMODE(info.st_mode):04o}; it must be "
                f"readable by its owner only (chmod 600 {path})"
            )
        try:
            value = path.read_text("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretError(
                f"the secret file {path} cannot be read as UTF-8 text: {exc}"
            ) from None
        where = f"the secret file {path}"
    if not value:
        raise SecretError(f"{where} is empty")
    if len(value) < MIN_SECRET_LENGTH:
        raise SecretError(
            f"{where} holds a secret of {len(value)} characters; use at least "
            f"{MIN_SECRET_LENGTH} (e.g. python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    return value.encode("utf-8")
