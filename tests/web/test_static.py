"""The page's files as the server sends them (no browser; tests/web/test_browser.py runs the page)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from emostt.config import Settings
from emostt.server.app import create_app
from emostt.transport import web
from tests.integration.server import service_settings

ROOT = Path(__file__).resolve().parents[2]
CLIENT_FILES = ["emostt.js", "capture-worklet.js"]


def client(**overrides: object) -> TestClient:
    # Not entered as a context manager: the lifespan (the model) is not needed for static files.
    return TestClient(create_app(service_settings(**overrides)))


@pytest.mark.parametrize("name", CLIENT_FILES)
def test_the_repository_client_is_the_packaged_one(name: str) -> None:
    # clients/web/<name> is a symlink to the package's copy (the only one): same bytes, whether
    # git checked it out as a link or (core.symlinks=false) someone replaced it with a copy.
    assert (ROOT / "clients" / "web" / name).read_bytes() == (web.WEB_DIR / name).read_bytes()


@pytest.mark.parametrize("name", CLIENT_FILES)
def test_the_served_client_is_the_repository_client(name: str) -> None:
    response = client().get(f"/web/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.content == (ROOT / "clients" / "web" / name).read_bytes()


def test_index_has_a_strict_policy_and_no_inline_code() -> None:
    response = client().get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self';" in policy
    assert "connect-src 'self' ws: wss:" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    html = response.text
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts and all("src=" in tag for tag in scripts), "inline scripts are blocked by the policy"
    assert not re.search(r"\son[a-z]+=", html), "inline event handlers are blocked by the policy"
    assert not re.search(r"\sstyle=", html), "inline styles are blocked by the policy"


def test_every_file_the_page_references_is_served() -> None:
    http = client()
    html = http.get("/").text
    referenced = set(re.findall(r'(?:src|href)="(/web/[^"]+)"', html))
    assert {"/web/app.js", "/web/style.css", "/web/favicon.svg"} <= referenced
    for path in referenced:
        response = http.get(path)
        assert response.status_code == 200, path
        assert "content-security-policy" in response.headers
    served = set(web.ASSETS) | {"index.html"}
    assert {p.name for p in web.WEB_DIR.iterdir()} == served, "a file in web/ is not served, or missing"


@pytest.mark.parametrize("path", ["/web/index.html", "/web/nothing.js", "/web/..%2Fconfig.py", "/web/%2e%2e"])
def test_only_the_page_files_are_served(path: str) -> None:
    assert client().get(path).status_code == 404


def test_web_ui_off_serves_nothing() -> None:
    http = client(web_ui=False)
    for path in ["/", "/web/app.js", "/web/emostt.js"]:
        assert http.get(path).status_code == 404, path


def test_web_ui_is_on_by_default_and_off_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(model="unused").web_ui is True
    monkeypatch.setenv("EMOSTT_WEB_UI", "false")
    assert Settings(model="unused").web_ui is False
