"""The dashboard page: three static files the API serves as they are, with no build step."""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response

from loa.errors import ApiError

router = APIRouter(tags=["dashboard"])

ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
# the page loads nothing from elsewhere and runs no inline code: data can never become script
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # a new loa version's page is fetched, not an old one
}
PAGE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}}, "description": "the dashboard page"}
}


def _read(name: str) -> bytes:
    return resources.files("loa.api").joinpath("static", name).read_bytes()


def _page() -> HTMLResponse:
    return HTMLResponse(_read("index.html"), headers=HEADERS)


@router.get(
    "/",
    name="dashboard.page",
    response_class=HTMLResponse,
    responses=PAGE,
    summary="The dashboard (it asks for a token; the page itself needs none)",
)
async def page() -> HTMLResponse:
    """Campaigns, live progress, rates, queue depth and pause / resume / cancel."""
    return _page()


@router.get(
    "/dashboard",
    name="dashboard.page_again",
    response_class=HTMLResponse,
    responses=PAGE,
    summary="The dashboard, at its own name",
)
async def page_again() -> HTMLResponse:
    """The same page as `/`."""
    return _page()


@router.get(
    "/dashboard/{asset}",
    name="dashboard.asset",
    response_class=Response,
    responses={200: {"content": {"text/javascript": {}, "text/css": {}}, "description": "a file"}},
    summary="The page's script and style",
)
async def asset(
    asset: Annotated[str, PathParam(max_length=64, description="dashboard.js or dashboard.css")],
) -> Response:
    """Only the page's own files: the name is looked up among them, never used as a path."""
    kind = ASSETS.get(asset)
    if kind is None:
        raise ApiError(f"no dashboard file {asset!r}", code="not_found", status=404)
    return Response(_read(asset), media_type=kind, headers=HEADERS)
