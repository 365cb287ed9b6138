"""GET /: the dashboard. One HTML file with its script inline, so there is no build step
and nothing is fetched from anywhere but this API."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter(tags=["dashboard"])
PAGE = Path(__file__).parent / "static" / "index.html"
# The page may run only its own inline script and talk only to this origin: a key typed
# into it can then go nowhere else.
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")


@router.get("/", summary="The web dashboard (HTML): jobs, live curves, trying models",
            response_class=FileResponse, responses={200: {"content": {"text/html": {}}}})
def dashboard() -> FileResponse:
    return FileResponse(PAGE, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache",
                                 "X-Content-Type-Options": "nosniff"})
