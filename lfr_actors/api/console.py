"""``GET /console``: the adjudicating officer's web page, served by the API itself.

The page is one self-contained HTML file in the package (``static/console.html``): its
style and script are inline and it loads nothing from any other host, so it works in a
van with no network. It holds no data: everything it shows comes from the API with the
officer's bearer token, which the officer pastes in once and the page keeps in the tab's
``sessionStorage`` (gone when the tab closes). The live queue reads the alert stream with
``fetch`` (not ``EventSource``, which cannot send an ``Authorization`` header), so the
token never appears in a URL or a server log.

The Content-Security-Policy allows only the page's own inline style and script (by their
SHA-256) and requests to this origin. It also allows the report page's style: the console
opens the report (fetched with the token) as a ``blob:`` page, which runs under the
console's policy.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources

from aiohttp import web

from lfr_actors.api.auth import principal
from lfr_actors.api.bodies import model_response
from lfr_actors.api.deployments import REPORT_STYLE
from lfr_actors.api.openapi import media, no_content, ok, operation
from lfr_actors.api.schemas import Principal

_BLOCK = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


@cache
def _page() -> tuple[bytes, str]:
    text = resources.files("lfr_actors.api").joinpath("static/console.html").read_text("utf-8")
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for kind, body in [*_BLOCK.findall(text), ("style", REPORT_STYLE)]:
        hashes[kind].append(_sha256(body))
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src " + " ".join(hashes["script"] or ["'none'"]),
            "style-src " + " ".join(hashes["style"] or ["'none'"]),
            "img-src 'self' blob:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return text.encode("utf-8"), policy


def _sha256(block: str) -> str:
    """The CSP source that allows an inline block by its content."""
    digest = base64.b64encode(hashlib.sha256(block.encode("utf-8")).digest()).decode()
    return f"'sha256-{digest}'"


@operation(
    "The adjudicating officer's web page (it asks for a token).",
    responses={200: media("text/html", "The page.")},
)
async def console_page(request: web.Request) -> web.Response:
    """The console page (public: it holds no data; the API calls it makes need a token)."""
    body, policy = _page()
    return web.Response(
        body=body,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": policy,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


@operation(
    "No icon (204), so browsers asking for one get no error.",
    responses={204: no_content("No content.")},
)
async def favicon(request: web.Request) -> web.Response:
    """No icon: browsers ask for one with every page; an empty answer keeps logs quiet."""
    return web.Response(status=204, headers={"Cache-Control": "max-age=86400"})


@operation(
    "Who the token belongs to: its holder's name, role and the deployments it is limited to.",
    responses={200: ok(Principal, "The caller.")},
)
async def whoami(request: web.Request) -> web.Response:
    """The caller's name, role and scope (the console shows them and what the role may do)."""
    caller = principal(request)
    scope = None if caller.deployments is None else sorted(caller.deployments)
    return model_response(Principal(name=caller.name, role=caller.role, deployments=scope))
