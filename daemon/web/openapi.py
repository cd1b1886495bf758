"""The OpenAPI 3.1 document of the API, made from the same `Endpoint` table as the
routes (rather than from docstrings, as Starlette's SchemaGenerator does): a route
cannot exist undocumented, and the bodies' schemas come from their pydantic models."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from daemon.web.api_json import Endpoint, Param, path_template

_KINDS = {
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "boolean": {"type": "boolean"},
    "duration": {"type": "string", "pattern": r"^\d+(\.\d+)?[smhd]?$"},
}
_REASONS = {
    400: "Malformed request",
    401: "No API token, or an unknown or revoked one",
    404: "Not found",
    409: "The ticket's state forbids it",
    413: "The attachments are too large",
    422: "Refused: an unknown name, or a value the desk does not take",
    503: "The database is unavailable; try again",
}


def document(endpoints: Iterable[Endpoint], prefix: str, version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for e in endpoints:
        paths.setdefault(prefix + path_template(e.path), {})[e.method.lower()] = _operation(e)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "buzón API",
            "version": version,
            "description": "Every request acts as the agent its token belongs to "
            "(`buzon agents token create AGENT`); the ticket's history shows that agent.",
        },
        "security": [{"token": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                }
            },
        },
    }


def _operation(e: Endpoint) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": e.summary,
        "operationId": e.handler.__name__,
        "tags": [e.tag],
        "parameters": [*_path_params(e.path), *(_query(p) for p in e.params)],
        "responses": {str(e.status): _success(e), **_errors(e.errors)},
    }
    if e.body is not None:
        schema = e.body.model_json_schema()
        content = {"application/json": {"schema": schema}}
        if e.multipart:
            files = {"type": "array", "items": {"type": "string", "contentMediaType": "*/*"}}
            form = {**schema, "properties": {**schema["properties"], "attachment": files}}
            content["multipart/form-data"] = {"schema": form}
        op["requestBody"] = {"required": True, "content": content}
    return op


def _path_params(path: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": _convertor(kind)}}
        for name, kind in re.findall(r"\{(\w+):(\w+)\}", path)
    ]


def _convertor(kind: str) -> str:
    return "integer" if kind == "int" else "string"


def _query(p: Param) -> dict[str, Any]:
    schema: dict[str, Any] = dict(_KINDS[p.kind])
    if p.default is not None:
        schema["default"] = p.default
    if p.minimum is not None:
        schema["minimum"] = p.minimum
    if p.maximum is not None:
        schema["maximum"] = p.maximum
    return {"name": p.name, "in": "query", "description": p.description, "schema": schema}


def _success(e: Endpoint) -> dict[str, Any]:
    if e.produces != "application/json":
        return {"description": "The file", "content": {"*/*": {}}}
    return {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}


def _errors(statuses: tuple[int, ...]) -> dict[str, Any]:
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {
        str(code): {"description": _REASONS[code], "content": error}
        for code in sorted({401, 503, *statuses})
    }
