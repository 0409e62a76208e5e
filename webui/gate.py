"""The app's login in front of every route, Gradio's and ours alike, when ``--auth`` is set.

Why a gate of our own: Gradio checks its login route by route, and several of its routes answer without it
(measured on 6.17.3: ``/monitoring/summary`` counts every visitor's calls, ``/gradio_api/heartbeat/…``,
``/gradio_api/cancel`` and ``/gradio_api/deep_link`` act on a session by its hash, ``/gradio_api/reset``,
``/gradio_api/upload_progress``, ``/gradio_api/stream/…``, FastAPI's ``/openapi.json``); our own routes
would each need the same check, and a route a later Gradio adds would be open until someone noticed. So
the gate refuses everything without the login except what the login page itself needs (its HTML, scripts,
styles and icons, and ``/login``) and the bare health answer. The login is Gradio's: its cookie, looked up
in its table of tokens, as ``gradio.routes.App.get_current_user`` does. Without ``--auth`` it lets
everything through: there is no login to ask for.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

# What a visitor who has not logged in may fetch: the login page and what it loads, logging in and out,
# ``/onlooker/health`` (which then says only "ok") and ``/gradio_api/startup-events``, which Gradio's launch()
# calls itself, without a cookie, before it returns (it runs the start-up events once; later calls do nothing).
OPEN_PATHS = frozenset(
    {
        "/",
        "/login",
        "/login/",
        "/logout",
        "/favicon.ico",
        "/manifest.json",
        "/robots.txt",
        "/theme.css",
        "/gradio_api/theme.css",
        "/onlooker/health",
        "/gradio_api/startup-events",
    }
)
OPEN_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon")


def login_required(app: Any) -> bool:
    """Whether the app was launched with a login (``--auth``)."""
    return getattr(app, "auth", None) is not None


def login_of(app: Any, connection: HTTPConnection) -> str | None:
    """The user a request or WebSocket comes from, by Gradio's login cookie (secure or not), or None."""
    suffix = getattr(app, "cookie_id", "")
    cookies = connection.cookies
    token = cookies.get(f"access-token-{suffix}") or cookies.get(f"access-token-unsecure-{suffix}")
    return app.tokens.get(token) if token else None


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class LoginGate:
    """ASGI middleware: without the login, a request gets Gradio's own 401 answer and a WebSocket is
    refused before it is accepted (the client sees HTTP 403)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = scope.get("app")  # Starlette puts the application here before its middleware runs
        if scope["type"] not in ("http", "websocket") or not login_required(app):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        if is_open(path) or login_of(app, HTTPConnection(scope)) is not None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        blocks = app.get_blocks()
        detail = {"error": "Not authenticated", "auth_message": blocks.auth_message}
        await JSONResponse({"detail": detail}, status_code=401)(scope, receive, send)
