"""/openapi.json and /docs (Swagger UI): served behind authentication like the API they
describe, so create_app turns FastAPI's own public ones off."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

router = APIRouter(include_in_schema=False)


@router.get("/openapi.json")
def openapi_schema(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
def docs_page() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="Trainyard API")
