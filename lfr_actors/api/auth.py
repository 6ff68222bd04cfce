"""Who may call which route: bearer-token authentication and the role matrix.

Every request names a token in ``Authorization: Bearer <token>``; :func:`auth_middleware`
looks its SHA-256 up in the store on each request (so a revocation takes effect at once)
and checks the token's role against :data:`ROLE_MATRIX`, the one table that says which
roles may call each route. ``admin`` may call every route. Refusals are problem bodies:

- 401 with ``WWW-Authenticate: Bearer …`` when the header is missing or malformed, or the
  token is unknown, revoked or expired;
- 403 naming the roles allowed when the token's role is not one of them.

Two rules depend on more than the route, and sit next to the matrix so that they are read
with it: the faces of alerts (:data:`ALERT_FACE_VIEWERS`) and the photos of entries not yet
approved (:data:`PENDING_IMAGE_VIEWERS`, checked by the image route with
:func:`require_role` once it knows the entry's state).

A token may also be scoped to some deployments (:attr:`Principal.deployments`). The
matrix says which roles may call a route; the scope, which objects the caller may see.
Handlers apply it with :func:`require_in_scope` (a deployment named in the path) and
:func:`require_alert_in_scope` (an alert): for a scoped caller, a deployment or alert
outside the scope is answered exactly as an unknown id, with the same 404 at the same
point, before the body is read, so the answer tells nothing about what exists outside
it. Lists are filtered (:func:`scope_of`). Store-wide actions (creating a deployment,
verifying the whole audit chain, the metrics, store-wide policy) are refused to scoped
tokens with 403 (:func:`require_unscoped`): a route refused by scope names no object.

A route without an entry in the matrix is a programming error caught when the application
is built (:func:`check_role_matrix`), not a route left open. Requests that match no route
(404, 405) need a valid token of any role, so strangers learn nothing about the routes.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from aiohttp import web

from lfr_actors import logs
from lfr_actors.api.keys import AUTH_ENABLED, STORE, TOKENS
from lfr_actors.api.problems import ProblemError
from lfr_actors.errors import LfrError
from lfr_actors.store.audit import Actor
from lfr_actors.store.tokens import Role

REALM = "lfr"

_BEARER = re.compile(r"Bearer +([A-Za-z0-9\-._~+/]+=*) *", re.IGNORECASE)
_log = logs.get_logger(__name__)


@dataclass(frozen=True)
class Rule:
    """Who may call one route: anyone (``public``), or a token with one of ``roles``."""

    roles: frozenset[Role]
    public: bool = False

    def allows(self, role: Role) -> bool:
        """Whether a token with ``role`` may call the route."""
        return self.public or role in self.roles


def public() -> Rule:
    """A route anyone may call without a token (liveness, readiness, the API document)."""
    return Rule(frozenset(), public=True)


def roles(*allowed: Role) -> Rule:
    """A route for tokens with one of ``allowed``; admin is always added."""
    return Rule(frozenset({*allowed, Role.ADMIN}))


VIEWERS = (Role.VIEWER, Role.ADJUDICATOR, Role.AUDITOR)
"""Who sees alerts and the deployment's status ("viewer and up"). Watchlist managers and
authorisers govern entries and deployments; they have no need to see alerts' faces."""

ALERT_FACE_VIEWERS = (Role.VIEWER, Role.ADJUDICATOR)
"""Who sees an alert's live face crop: the officers who watch and adjudicate. Auditors see
who did what (the alerts, the audit log), not the faces, as with watchlist images."""

WATCHLIST_IMAGE_VIEWERS = (
    Role.VIEWER,
    Role.ADJUDICATOR,
    Role.WATCHLIST_MANAGER,
    Role.AUTHORISER,
)
"""Who sees a watchlist image: the officers comparing it with a live face, and those who
enrol and approve entries. Auditors see who did what, not the faces."""

PENDING_IMAGE_VIEWERS = (Role.WATCHLIST_MANAGER, Role.AUTHORISER)
"""Who sees the photo of an entry not yet approved: those who enrol and approve it. It is
searched only once approved, so until then no officer compares a live face with it."""

ROLE_MATRIX: Mapping[tuple[str, str], Rule] = MappingProxyType(
    {
        ("GET", "healthz"): public(),
        ("GET", "readyz"): public(),
        ("GET", "openapi"): public(),
        ("GET", "metrics"): roles(*VIEWERS),
        ("GET", "status"): roles(*VIEWERS),
        ("GET", "alerts"): roles(*VIEWERS),
        ("GET", "alert_stream"): roles(*VIEWERS),
        ("GET", "alert"): roles(*VIEWERS),
        ("GET", "alert_crop"): roles(*ALERT_FACE_VIEWERS),
        ("POST", "alert_adjudication"): roles(Role.ADJUDICATOR),
        ("POST", "alert_hold"): roles(Role.AUTHORISER),
        ("DELETE", "alert_release"): roles(Role.AUTHORISER),
        ("GET", "audit"): roles(Role.AUDITOR),
        ("GET", "audit_verify"): roles(Role.AUDITOR),
        ("GET", "console"): public(),
        ("GET", "favicon"): public(),
        ("GET", "whoami"): roles(*Role),
        ("GET", "deployments"): roles(*Role),
        ("POST", "deployment_create"): roles(Role.AUTHORISER),
        ("GET", "deployment"): roles(*Role),
        ("POST", "deployment_close"): roles(Role.AUTHORISER),
        ("POST", "deployment_threshold"): roles(Role.AUTHORISER),
        ("PUT", "deployment_calibration"): roles(Role.AUTHORISER),
        ("DELETE", "deployment_calibration_remove"): roles(Role.AUTHORISER),
        ("GET", "deployment_report"): roles(*VIEWERS, Role.AUTHORISER),
        ("GET", "deployment_report_page"): roles(*VIEWERS, Role.AUTHORISER),
        ("GET", "entries"): roles(*Role),
        ("POST", "entry_create"): roles(Role.WATCHLIST_MANAGER),
        ("GET", "entry"): roles(*Role),
        ("DELETE", "entry_delete"): roles(Role.WATCHLIST_MANAGER, Role.AUTHORISER),
        ("GET", "entry_image"): roles(*WATCHLIST_IMAGE_VIEWERS),
        ("POST", "entry_approve"): roles(Role.AUTHORISER),
        ("GET", "monitoring_categories"): roles(Role.ADJUDICATOR, Role.AUDITOR, Role.AUTHORISER),
        ("PUT", "monitoring_categories_set"): roles(),
        ("GET", "policy"): roles(*Role),
        ("PUT", "policy_set"): roles(),
        # Test subjects' passes: recorded by the officers who see the volunteer walk by, or
        # the authoriser overseeing the test; read by whoever reads the report.
        ("GET", "test_passes"): roles(*VIEWERS, Role.AUTHORISER),
        ("POST", "test_pass_record"): roles(Role.ADJUDICATOR, Role.AUTHORISER),
    }
)
"""(HTTP method, route name) -> who may call it: every route of the API, in one place.

HEAD is checked as GET. Add a route's entry here when you add the route; the application
refuses to build while a route has none.
"""

UNMATCHED = roles(*Role)
"""Requests that match no route (404, 405): any valid token."""


class RoleMatrixError(LfrError):
    """A route has no entry in the role matrix, or an entry names no route."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's holder, role and scope (``token_id`` None when auth is off).

    ``deployments`` is the token's scope: the deployments it may see, or None for all.
    """

    name: str
    role: Role
    token_id: str | None
    deployments: frozenset[str] | None = None

    @property
    def actor(self) -> Actor:
        """The caller as the audit log records them."""
        return Actor(self.name, self.token_id)

    @property
    def scoped(self) -> bool:
        """Whether the caller sees only some deployments."""
        return self.deployments is not None

    def in_scope(self, deployment_id: str) -> bool:
        """Whether the caller may see this deployment and what belongs to it."""
        return self.deployments is None or deployment_id in self.deployments


ANONYMOUS = Principal("anonymous (auth off)", Role.ADMIN, None)
"""The caller of every route when the application is built with ``auth=False``."""

PRINCIPAL = web.RequestKey("principal", Principal)


def principal(request: web.Request) -> Principal:
    """The caller the auth middleware admitted."""
    return request[PRINCIPAL]


def route_key(method: str, name: str | None) -> tuple[str, str]:
    """The matrix key of a route (HEAD is checked as GET)."""
    return ("GET" if method == "HEAD" else method, name or "")


def check_role_matrix(
    routes: Iterable[web.AbstractRoute], matrix: Mapping[tuple[str, str], Rule] = ROLE_MATRIX
) -> None:
    """Check that routes and matrix agree: every route has an entry, every entry a route.

    Raises :class:`RoleMatrixError` listing all the mismatches, not only the first.
    """
    problems = []
    seen = set()
    for route in routes:
        key = route_key(route.method, route.name)
        seen.add(key)
        where = f"{route.method} {route.resource.canonical if route.resource else '?'}"
        if route.name is None:
            problems.append(f"route {where} has no name; name it and give it a matrix entry")
        elif key not in matrix:
            problems.append(
                f"route {where} (name {route.name!r}) has no entry in ROLE_MATRIX "
                f"(lfr_actors/api/auth.py); add {key!r} with the roles that may call it"
            )
    problems.extend(
        f"ROLE_MATRIX entry {key!r} matches no route; remove it or add the route"
        for key in sorted(set(matrix) - seen)
    )
    if problems:
        raise RoleMatrixError("the role matrix does not cover the routes:\n" + "\n".join(problems))


async def check_routes_on_startup(app: web.Application) -> None:
    """Check the matrix again when the app starts (catches routes added after building)."""
    check_role_matrix(app.router.routes())


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Admit the request if its token's role may call the route; refuse it otherwise."""
    match = request.match_info
    if match.http_exception is not None:
        rule: Rule | None = UNMATCHED
        name = "(no route)"
    else:
        name = match.route.name or "(unnamed)"
        rule = ROLE_MATRIX.get(route_key(request.method, match.route.name))
    if rule is None:
        _log.error("route_without_roles", route=name, method=request.method)
        raise ProblemError(500, "This route has no access rule; it has been logged.")
    if rule.public:
        return await handler(request)
    if not request.app[AUTH_ENABLED]:
        request[PRINCIPAL] = ANONYMOUS
        return await handler(request)
    caller = await _authenticate(request, name)
    if not rule.allows(caller.role):
        raise _forbidden(caller, rule, name, "This route needs")
    request[PRINCIPAL] = caller
    return await handler(request)


def require_role(request: web.Request, allowed: Iterable[Role], what: str) -> None:
    """Refuse (403, as the middleware does) a caller whose role is not in ``allowed``.

    For rules that depend on the object as well as the route; admin is always allowed.
    ``what`` completes "... needs a token with one of the roles ...", e.g. "The photo of
    an entry not yet approved".
    """
    caller = principal(request)
    rule = roles(*allowed)
    if not rule.allows(caller.role):
        name = request.match_info.route.name or "(unnamed)"
        raise _forbidden(caller, rule, name, f"{what} needs")


def scope_of(request: web.Request) -> frozenset[str] | None:
    """The deployments the caller may see, or None for every deployment (to filter lists)."""
    return principal(request).deployments


def in_scope(request: web.Request, deployment_id: str) -> bool:
    """Whether the caller may see this deployment (always, for an unscoped token)."""
    return principal(request).in_scope(deployment_id)


def require_in_scope(request: web.Request, deployment_id: str) -> None:
    """Answer a deployment outside the caller's scope exactly as an unknown one (404).

    Call it first in a handler whose path names a deployment, before reading the body or
    the query, so that a scoped caller meets the same answer at the same point for an id
    outside its scope as for one that names nothing. (A scope names only deployments the
    store knows, and deployments are never deleted, so every unknown id is outside it.)
    """
    if not in_scope(request, deployment_id):
        _log.info("scope_refused", route=_route(request), token=principal(request).token_id)
        raise unknown_deployment(deployment_id)


def unknown_deployment(deployment_id: str) -> ProblemError:
    """The 404 for a deployment id that names none (or none the caller may see)."""
    return ProblemError(404, f"No deployment with id {deployment_id[:80]!r}.")


def unknown_alert(alert_id: str) -> ProblemError:
    """The 404 for an alert id that names none (or none the caller may see)."""
    return ProblemError(404, f"No alert with id {alert_id[:80]!r}.")


async def require_alert_in_scope(request: web.Request, alert_id: str) -> None:
    """For a scoped caller, 404 (as for an unknown alert) unless the alert is in its scope.

    Call it first in a handler whose path names an alert. An unscoped caller passes
    without a read: the handler answers an unknown alert itself, as before. A scoped
    caller gets the same 404 for an unknown alert and for another deployment's.
    """
    if not principal(request).scoped:
        return
    deployment_id = await asyncio.to_thread(request.app[STORE].deployment_of, alert_id)
    if deployment_id is None or not in_scope(request, deployment_id):
        _log.info("scope_refused", route=_route(request), token=principal(request).token_id)
        raise unknown_alert(alert_id)


def require_unscoped(request: web.Request, what: str) -> None:
    """Refuse (403) a token scoped to deployments: ``what`` concerns the whole store.

    ``what`` completes "... concerns every deployment, ...", e.g. "The audit chain's
    verification". For store-wide settings and actions no scoped token may take.
    """
    caller = principal(request)
    if caller.deployments is None:
        return
    _log.info("scope_refused", status=403, route=_route(request), token=caller.token_id)
    raise ProblemError(
        403,
        f"{what} concerns every deployment, so it needs a token not limited to deployments; "
        f"the token {caller.name!r} is limited to {', '.join(sorted(caller.deployments))}.",
        headers={"WWW-Authenticate": _challenge("insufficient_scope")},
        scope=sorted(caller.deployments),
    )


def _route(request: web.Request) -> str:
    return request.match_info.route.name or "(unnamed)"


def _forbidden(caller: Principal, rule: Rule, route: str, needs: str) -> ProblemError:
    allowed = sorted(str(r) for r in rule.roles)
    _log.info("auth_refused", status=403, route=route, token=caller.token_id, role=caller.role)
    return ProblemError(
        403,
        f"{needs} a token with one of the roles {', '.join(allowed)}; "
        f"the token {caller.name!r} has the role {caller.role}.",
        headers={"WWW-Authenticate": _challenge("insufficient_scope")},
        allowed_roles=allowed,
        role=str(caller.role),
    )


async def _authenticate(request: web.Request, route: str) -> Principal:
    header = request.headers.get("Authorization")
    if header is None:
        raise _unauthorised(
            route,
            "missing",
            "This route needs a bearer token: send 'Authorization: Bearer <token>' "
            "(`lfr tokens create` makes one).",
            error=None,
        )
    found = _BEARER.fullmatch(header)
    if found is None:
        raise _unauthorised(
            route,
            "malformed",
            "The Authorization header must be 'Bearer <token>'.",
            error="invalid_request",
        )
    record = await asyncio.to_thread(request.app[TOKENS].lookup, found.group(1))
    if record is None:
        raise _unauthorised(route, "unknown", "The token is not known.", error="invalid_token")
    if record.revoked:
        raise _unauthorised(route, "revoked", "The token was revoked.", error="invalid_token")
    if record.expired():
        raise _unauthorised(route, "expired", "The token has expired.", error="invalid_token")
    scope = None if record.deployments is None else frozenset(record.deployments)
    return Principal(record.name, record.role, record.id, scope)


def _unauthorised(route: str, why: str, detail: str, *, error: str | None) -> ProblemError:
    _log.info("auth_refused", status=401, route=route, reason=why)
    return ProblemError(401, detail, headers={"WWW-Authenticate": _challenge(error)})


def _challenge(error: str | None) -> str:
    return f'Bearer realm="{REALM}"' + (f', error="{error}"' if error else "")
