"""The web page at `/`: plain HTML, CSS and JavaScript from app/static, no build step, no CDN.

The page talks to the same /v1 API as any client. It follows a job's Server-Sent Events with fetch()
rather than EventSource, because EventSource cannot send the Authorization header and an API key in
a URL would end up in logs.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from app.deps import ServicesDep
from models.params import KEYFRAME_MULTIPLE, STAGES

STATIC = Path(__file__).resolve().parent / "static"

page = APIRouter(include_in_schema=False)


class PageConfig(BaseModel):
    auth_required: bool
    demo_defaults: bool
    stages: list[str]
    keyframe_multiple: int
    max_keyframes: int


@page.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@page.get("/ui/config")
def config(services: ServicesDep) -> PageConfig:
    """What the page needs to know before the user has a key: whether to ask for one."""
    settings = services.settings
    return PageConfig(
        auth_required=settings.auth_enabled,
        demo_defaults=settings.demo_defaults,
        stages=list(STAGES),
        keyframe_multiple=KEYFRAME_MULTIPLE,
        max_keyframes=settings.max_keyframes,
    )


def install(app: FastAPI) -> None:
    app.include_router(page)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
