"""The OpenAPI 3.1 document served at ``/openapi.json``.

Request and response schemas are generated from the pydantic models in :mod:`bridge.schemas`,
so the document cannot drift from the validation; the routes, parameters and status codes are
written here, next to one another, and ``tests/integration/test_openapi_fuzz.py`` holds the
handlers to them with schemathesis.
"""

from __future__ import annotations

import functools
from typing import Any

import bridge
from bridge import schemas
from bridge.openapi.parts import MAX_ID, MAX_PAGE, components
from bridge.openapi.paths import hook_paths, service_paths, v1_paths

__all__ = ["MAX_ID", "MAX_PAGE", "document"]


@functools.cache
def document() -> dict[str, Any]:
    """The whole OpenAPI document (built once)."""
    ref, schemas_by_name = components()
    error = ref(schemas.Error)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "lance-bridge",
            "version": bridge.__version__,
            "description": 'Errors are JSON `{"error": {"code", "message", "details"}}`.'
            " A method a path does not have is answered 405 `method_not_allowed` with `Allow`.",
        },
        "paths": v1_paths(ref, error) | hook_paths(error) | service_paths(ref, error),
        "components": {
            "schemas": schemas_by_name,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
