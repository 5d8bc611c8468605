"""The browser page: ``GET /`` and its assets under ``/web/`` (``service/emostt/web/``), when
``Settings.web_ui`` is on. The page is static (no build step): ``emostt.js``, the JavaScript client
(also at ``clients/web/emostt.js``), captures the microphone and speaks docs/protocol.md to the
same server. A strict Content-Security-Policy goes with every file: scripts only from this origin,
no inline code, connections to this origin and WebSockets only."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

from emostt.config import Settings

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

# The page's files and their types, spelled out: nothing else under web/ is served, and a module
# script needs a JavaScript type whatever the host's mimetypes table says.
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "emostt.js": "text/javascript; charset=utf-8",
    "capture-worklet.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",  # the page's modules and the AudioWorklet; no inline code
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self' ws: wss:",  # the WebSocket (any host: the page may be pointed elsewhere)
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load (ETag / Last-Modified): an upgraded server's page is seen at once.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/web/")
async def web_index() -> RedirectResponse:
    return RedirectResponse("/")


@router.get("/web/{name}")
async def asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status_code=404)
    return FileResponse(WEB_DIR / name, media_type=media_type, headers=HEADERS)


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the page at ``/`` when ``settings.web_ui`` is on (otherwise ``/`` is a 404)."""
    if settings.web_ui:
        app.include_router(router)
