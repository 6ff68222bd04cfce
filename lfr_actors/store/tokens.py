"""API bearer tokens: random secrets shown once, stored only as SHA-256 digests.

A token is ``lfr_`` followed by 32 random bytes in URL-safe base64. The store keeps its
SHA-256 digest, never the secret: a copy of the database lets no one call the API. A
plain (unkeyed) digest is enough because the secrets are random and 256 bits long, so
there is nothing to guess from the digest.

Each token has a name (the holder, recorded as the actor in the audit log and as the
officer of an adjudication) and one :class:`Role`. Tokens are created and revoked with
``lfr tokens``; creating and revoking are audited. A revoked token stays in the table so
its name still explains old audit entries.

A token may carry an expiry (``expires_at``); past it the token is refused like a
revoked one. Operators' tokens have none. The deployment issues itself an ``internal``
token for the local ``lfr`` command (:func:`issue_local_token`) that expires
:data:`LOCAL_TOKEN_TTL_S` after it was issued or last renewed; the running driver renews
it every :data:`LOCAL_TOKEN_RENEW_S`, so a driver that dies without revoking it (kill -9,
a power cut) leaves a token in its run file that stops working within minutes. The next
start revokes every internal token of earlier runs outright
(:func:`revoke_local_tokens`). Renewals are not audited: they change no one's access.

A token may be scoped to one or more deployments (``deployments``, stored as a JSON list
of ids; none means every deployment): the API then shows its holder only those
deployments, their entries, alerts, reports and audit entries, and answers any other as
if it did not exist. The ids must name deployments the store knows (open or closed), so
a typo is refused rather than making a token that can see nothing. The deployment's own
internal token stays unscoped: it serves the local ``lfr`` command, whose user can read
the whole store file anyway, and store-wide commands need it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import sqlite3
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from lfr_actors.store.audit import SYSTEM, Action, Actor, append_entry
from lfr_actors.store.db import Database, StoreError

TOKEN_PREFIX = "lfr_"
SECRET_BYTES = 32
MAX_NAME_CHARS = 80
LOCAL_TOKEN_NAME = "local-cli"
"""The name of the token a running deployment issues for the ``lfr`` command on its host."""
LOCAL_TOKEN_TTL_S = 300.0
"""How long the local token lives past its last renewal: a crashed driver's dies by then."""
LOCAL_TOKEN_RENEW_S = 60.0
"""How often the running driver renews its local token (well inside the TTL, so a busy
store or a slow round does not let it lapse)."""

_COLUMNS = (
    "id, name, role, internal, created_at, created_by, revoked_at, revoked_by, expires_at, "
    "deployments"
)
MAX_SCOPE = 100
"""The most deployments one token may be scoped to (a longer list is a mistake)."""


class Role(StrEnum):
    """What a token's holder may do; the API's role matrix maps routes to roles."""

    VIEWER = "viewer"
    ADJUDICATOR = "adjudicator"
    WATCHLIST_MANAGER = "watchlist-manager"
    AUTHORISER = "authoriser"
    AUDITOR = "auditor"
    ADMIN = "admin"


class UnknownTokenError(StoreError):
    """No token has the id given."""


class TokenScopeError(StoreError):
    """A token's list of deployments is empty, repeats an id or names unknown deployments."""


@dataclass(frozen=True)
class TokenRecord:
    """A token as stored (without its secret or digest)."""

    id: str
    name: str
    role: Role
    internal: bool
    created_at: float
    created_by: str
    revoked_at: float | None = None
    revoked_by: str | None = None
    expires_at: float | None = None
    deployments: tuple[str, ...] | None = None
    """The deployments the token may see, or None for every deployment."""

    @property
    def scoped(self) -> bool:
        """Whether the token is limited to some deployments."""
        return self.deployments is not None

    def in_scope(self, deployment_id: str) -> bool:
        """Whether the token may see this deployment (and what belongs to it)."""
        return self.deployments is None or deployment_id in self.deployments

    @property
    def revoked(self) -> bool:
        """Whether someone (or a deployment's start or stop) revoked the token."""
        return self.revoked_at is not None

    def expired(self, now: float | None = None) -> bool:
        """Whether the token's expiry (if it has one) has passed at ``now`` (default: now)."""
        if self.expires_at is None:
            return False
        return (time.time() if now is None else now) >= self.expires_at

    @property
    def active(self) -> bool:
        """Whether the token is accepted now: neither revoked nor expired."""
        return not self.revoked and not self.expired()

    @property
    def actor(self) -> Actor:
        """The token's holder as the audit log records them."""
        return Actor(self.name, self.id)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready map (Unix seconds)."""
        return {
            "id": self.id,
            "name": self.name,
            "role": str(self.role),
            "internal": self.internal,
            "active": self.active,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "revoked_at": self.revoked_at,
            "revoked_by": self.revoked_by,
            "expires_at": self.expires_at,
            "deployments": None if self.deployments is None else list(self.deployments),
        }


@dataclass(frozen=True)
class IssuedToken:
    """A new token: its record and the secret, which exists nowhere else."""

    record: TokenRecord
    secret: str = field(repr=False)


def new_secret() -> str:
    """A fresh token secret: ``lfr_`` + 32 random bytes, URL-safe base64."""
    return TOKEN_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def secret_digest(secret: str) -> str:
    """The SHA-256 (hex) under which a secret is stored and looked up."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_scope(ids: Iterable[str]) -> tuple[str, ...]:
    """A token's scope as given, or :class:`TokenScopeError` saying what is wrong with it.

    The list must name at least one deployment (no list at all means every deployment)
    and no id twice. Whether the ids are known is checked against the store
    (:meth:`TokenStore.create`).
    """
    scope = tuple(ids)
    if not scope:
        raise TokenScopeError(
            "a token's scope must name at least one deployment; give none for every deployment"
        )
    if len(scope) > MAX_SCOPE:
        raise TokenScopeError(
            f"a token may be scoped to at most {MAX_SCOPE} deployments (got {len(scope)})"
        )
    bad = [i for i in scope if not isinstance(i, str) or not i.strip()]
    if bad:
        raise TokenScopeError("a deployment id in a token's scope must not be empty")
    repeated = sorted({i for i in scope if scope.count(i) > 1})
    if repeated:
        raise TokenScopeError(
            "a token's scope names each deployment once; repeated: " + ", ".join(repeated)
        )
    return scope


def check_token_name(name: str) -> str:
    """``name`` stripped, or ValueError saying what is wrong with it."""
    cleaned = name.strip()
    if not cleaned:
        raise ValueError("a token name must not be empty; use the holder's name or role")
    if len(cleaned) > MAX_NAME_CHARS:
        raise ValueError(
            f"a token name has at most {MAX_NAME_CHARS} characters (got {len(cleaned)})"
        )
    if any(unicodedata.category(ch).startswith("C") for ch in cleaned):
        raise ValueError("a token name must not contain control or invisible characters")
    if cleaned.casefold() == SYSTEM.name:
        raise ValueError(f"{SYSTEM.name!r} is reserved for the deployment's own actions")
    return cleaned


class TokenStore:
    """The tokens of one store file: create, list, revoke, look up by secret.

    Creating and revoking need a writer :class:`Database` and are audited in the same
    transaction; :meth:`lookup` (every API request) only reads.
    """

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def create(
        self,
        name: str,
        role: Role | str,
        *,
        by: Actor,
        internal: bool = False,
        ttl_s: float | None = None,
        deployments: Iterable[str] | None = None,
    ) -> IssuedToken:
        """Create a token and return it with its secret (shown once, never stored).

        With ``ttl_s`` the token expires that many seconds from now unless renewed
        (:meth:`renew`); without, it lasts until revoked. With ``deployments`` the token
        sees only those deployments (:class:`TokenScopeError`, and nothing stored or
        audited, if the list is empty, repeats an id or names a deployment the store does
        not know); without, it sees every deployment.
        """
        if ttl_s is not None and not ttl_s > 0:
            raise ValueError(f"a token's ttl_s must be positive (got {ttl_s})")
        scope = None if deployments is None else check_scope(deployments)
        now = self.clock()
        record = TokenRecord(
            id=secrets.token_hex(8),
            name=check_token_name(name),
            role=Role(role),
            internal=internal,
            created_at=now,
            created_by=str(by),
            expires_at=None if ttl_s is None else now + ttl_s,
            deployments=scope,
        )
        secret = new_secret()
        details: dict[str, Any] = {
            "name": record.name,
            "role": str(record.role),
            "internal": internal,
        }
        if ttl_s is not None:
            details["ttl_s"] = ttl_s
        if scope is not None:
            details["deployments"] = list(scope)
        with self.db.transaction() as conn:
            if scope is not None:
                _check_known(conn, scope)
            conn.execute(
                "INSERT INTO api_tokens (id, secret_sha256, name, role, internal, created_at, "
                "created_by, expires_at, deployments) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    secret_digest(secret),
                    record.name,
                    str(record.role),
                    int(internal),
                    record.created_at,
                    record.created_by,
                    record.expires_at,
                    None if scope is None else json.dumps(list(scope)),
                ),
            )
            append_entry(conn, by, Action.TOKEN_CREATE, record.id, details, at=record.created_at)
        return IssuedToken(record, secret)

    def renew(self, token_id: str, ttl_s: float) -> TokenRecord:
        """Push an expiring token's expiry to ``ttl_s`` seconds from now.

        Only a token that is still active is renewed: a revoked or already expired one
        stays dead (:class:`UnknownTokenError` for an unknown id, the record unchanged
        otherwise, so the caller can see it is no longer active).
        """
        with self.db.transaction() as conn:
            record = _by_id(conn, token_id)
            if record is None:
                raise UnknownTokenError(f"no token with id {token_id!r}")
            now = self.clock()
            if record.revoked or record.expires_at is None or record.expired(now):
                return record
            expires_at = now + ttl_s
            conn.execute(
                "UPDATE api_tokens SET expires_at = ? WHERE id = ?", (expires_at, token_id)
            )
        return dataclasses.replace(record, expires_at=expires_at)

    def get(self, token_id: str) -> TokenRecord | None:
        """The token with this id (active or revoked), or None."""
        with self.db.lock:
            return _by_id(self.db.conn, token_id)

    def records(self) -> list[TokenRecord]:
        """Every token, oldest first."""
        with self.db.lock:
            rows = self.db.conn.execute(
                f"SELECT {_COLUMNS} FROM api_tokens ORDER BY created_at, id"
            ).fetchall()
        return [_record(row) for row in rows]

    def revoke(self, token_id: str, *, by: Actor) -> TokenRecord:
        """Revoke a token at once, an expired one too; revoking a revoked one changes nothing."""
        with self.db.transaction() as conn:
            record = self._revoke(conn, token_id, by)
        return record

    def revoke_internal(self, *, by: Actor = SYSTEM) -> list[TokenRecord]:
        """Revoke every active internal token (those of earlier runs)."""
        with self.db.transaction() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM api_tokens WHERE internal = 1 AND revoked_at IS NULL"
                )
            ]
            return [self._revoke(conn, token_id, by) for token_id in ids]

    def lookup(self, secret: str) -> TokenRecord | None:
        """The token whose secret this is (active or revoked), or None."""
        with self.db.lock:
            row = self.db.conn.execute(
                f"SELECT {_COLUMNS} FROM api_tokens WHERE secret_sha256 = ?",
                (secret_digest(secret),),
            ).fetchone()
        return None if row is None else _record(row)

    def _revoke(self, conn: sqlite3.Connection, token_id: str, by: Actor) -> TokenRecord:
        record = _by_id(conn, token_id)
        if record is None:
            raise UnknownTokenError(f"no token with id {token_id!r}; `lfr tokens list` shows them")
        if record.revoked:
            return record
        now = self.clock()
        conn.execute(
            "UPDATE api_tokens SET revoked_at = ?, revoked_by = ? WHERE id = ?",
            (now, str(by), token_id),
        )
        append_entry(
            conn,
            by,
            Action.TOKEN_REVOKE,
            token_id,
            {"name": record.name, "role": str(record.role)},
            at=now,
        )
        return dataclasses.replace(record, revoked_at=now, revoked_by=str(by))


def issue_local_token(db_path: Path, *, ttl_s: float = LOCAL_TOKEN_TTL_S) -> IssuedToken:
    """Issue the running deployment's admin token for the local ``lfr`` command.

    Revokes the internal tokens of earlier runs, creates a new one named
    :data:`LOCAL_TOKEN_NAME` (stored hashed and audited like any other) that expires
    ``ttl_s`` from now unless renewed (:func:`renew_local_token`), and returns it; the
    deployment writes its secret into its run file (readable by its user only).
    """
    with Database(db_path) as db:
        tokens = TokenStore(db)
        tokens.revoke_internal(by=SYSTEM)
        return tokens.create(LOCAL_TOKEN_NAME, Role.ADMIN, by=SYSTEM, internal=True, ttl_s=ttl_s)


def renew_local_token(
    db: Database, token_id: str, *, ttl_s: float = LOCAL_TOKEN_TTL_S
) -> TokenRecord:
    """Renew the running deployment's local token (see :meth:`TokenStore.renew`)."""
    return TokenStore(db).renew(token_id, ttl_s)


def revoke_local_tokens(db_path: Path) -> int:
    """Revoke every internal token (at start, those of earlier runs; at shutdown, this run's).

    Returns how many were revoked.
    """
    with Database(db_path) as db:
        return len(TokenStore(db).revoke_internal(by=SYSTEM))


def _check_known(conn: sqlite3.Connection, scope: tuple[str, ...]) -> None:
    """Refuse a scope naming a deployment the store does not know (open or closed)."""
    marks = ", ".join("?" * len(scope))
    known = {
        row[0] for row in conn.execute(f"SELECT id FROM deployments WHERE id IN ({marks})", scope)
    }
    unknown = [i for i in scope if i not in known]
    if unknown:
        raise TokenScopeError(
            "no deployment with id " + ", ".join(repr(i[:80]) for i in unknown) + " in this "
            "store; `lfr deployments list` shows them (a scope names existing deployments)"
        )


def _scope(raw: str | None) -> tuple[str, ...] | None:
    return None if raw is None else tuple(json.loads(raw))


def _record(row: sqlite3.Row) -> TokenRecord:
    return TokenRecord(
        id=row["id"],
        name=row["name"],
        role=Role(row["role"]),
        internal=bool(row["internal"]),
        created_at=float(row["created_at"]),
        created_by=row["created_by"],
        revoked_at=None if row["revoked_at"] is None else float(row["revoked_at"]),
        revoked_by=row["revoked_by"],
        expires_at=None if row["expires_at"] is None else float(row["expires_at"]),
        deployments=_scope(row["deployments"]),
    )


def _by_id(conn: sqlite3.Connection, token_id: str) -> TokenRecord | None:
    """The token with this id (active or revoked), or None."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM api_tokens WHERE id = ?", (token_id,)).fetchone()
    return None if row is None else _record(row)
