"""The OpenAPI 3.1 document, built from the same endpoint declarations (pydantic models, roles,
errors, per-role views) that validate requests and shape answers (services/booking/api/
framework.py), so the document and the API cannot drift apart."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from services.booking.api.framework import Api, Endpoint

_STATUS_TITLES = {
    400: "Bad request",
    401: "No token, or an unknown, revoked or expired one",
    403: "The token's role may not do this",
    404: "Not found",
    409: "Conflict with the current state",
    412: "The resource changed since you read it",
    415: "Body is not JSON",
    422: "Invalid fields (each named by its path)",
    428: "If-Match is required",
    429: "Too many requests",
}


def _model_of(response: Any) -> tuple[type[BaseModel] | None, bool]:
    origin = getattr(response, "__origin__", None)
    if origin is list:
        return response.__args__[0], True
    return response, False


def _by_role(
    endpoint: Endpoint,
    full: type[BaseModel],
    refs: Mapping[tuple[type[BaseModel], str], Any],
    operation: dict[str, Any],
) -> tuple[dict[str, Any], str]:
    """The response schema of an endpoint with per-role views: anyOf the shapes (not oneOf: an
    empty page fits every shape), each role's own shape in `x-response-by-role`, and the same in
    words in the description."""
    assert endpoint.roles is not None  # route() refuses views without roles
    model_of = {role: endpoint.views.get(role, full) for role in endpoint.roles}
    operation["x-response-by-role"] = {
        role: refs[(model, "serialization")] for role, model in model_of.items()
    }
    shapes = list(dict.fromkeys(model_of.values()))
    words = "; ".join(
        ", ".join(role for role, model in model_of.items() if model is shape)
        + f": {shape.__name__}"
        for shape in shapes
    )
    schema = {"anyOf": [refs[(shape, "serialization")] for shape in shapes]}
    return schema, f"success; the shape depends on the caller's role ({words})"


class _SchemaNames(GenerateJsonSchema):
    """Component names as a reader would write them: a generic model's parametrisation such as
    `Page[PatientSummary]` is `PatientSummaryPage` (pydantic's own is `Page_PatientSummary_`)."""

    def normalize_name(self, name: str) -> str:
        generic = re.fullmatch(r"(\w+)\[(\w+)\]", name)
        if generic is not None:
            return generic[2] + generic[1]
        return super().normalize_name(name)


def build_openapi(api: Api, *, title: str, version: str, description: str) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], str]] = []
    for endpoint in api.endpoints:
        if endpoint.body is not None:
            models.append((endpoint.body, "validation"))
        response_model, _ = _model_of(endpoint.response)
        if response_model is not None:
            models.append((response_model, "serialization"))
        models += [(view, "serialization") for view in endpoint.views.values()]
    unique = list(dict.fromkeys(models))
    refs, schema = models_json_schema(
        unique, ref_template="#/components/schemas/{model}", schema_generator=_SchemaNames
    )
    components: dict[str, Any] = dict(schema.get("$defs", {}))
    components["Problem"] = {
        "type": "object",
        "description": "RFC 9457 problem details",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["path", "message"],
                    "properties": {
                        "in": {"type": "string"},
                        "path": {"type": "string"},
                        "message": {"type": "string"},
                        "code": {"type": "string"},
                    },
                },
            },
        },
        "additionalProperties": True,
    }
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in api.endpoints:
        operation: dict[str, Any] = {
            "operationId": endpoint.operation_id,
            "summary": endpoint.summary,
            "tags": [endpoint.tag],
            "responses": {},
        }
        if endpoint.handler.__doc__:
            operation["description"] = " ".join(endpoint.handler.__doc__.split())
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
            for name in re.findall(r"{(\w+)}", endpoint.path)
        ]
        if endpoint.query is not None:
            query_schema = endpoint.query.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            for defs_name, defs in query_schema.pop("$defs", {}).items():
                components.setdefault(defs_name, defs)
            required = set(query_schema.get("required", []))
            for name, prop in query_schema.get("properties", {}).items():
                parameters.append(
                    {
                        "name": name,
                        "in": "query",
                        "required": name in required,
                        "schema": prop,
                        **({"description": prop["description"]} if "description" in prop else {}),
                    }
                )
        if endpoint.header is not None:
            header_schema = endpoint.header.model_json_schema(by_alias=True)
            required = set(header_schema.get("required", []))
            for name, prop in header_schema.get("properties", {}).items():
                parameters.append(
                    {
                        "name": name,
                        "in": "header",
                        "required": name in required,
                        "schema": prop,
                        **({"description": prop["description"]} if "description" in prop else {}),
                    }
                )
        if 428 in endpoint.errors:
            # Documented as optional so that clients see the 428 that explains what to send.
            parameters.append(
                {
                    "name": "If-Match",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "pattern": '^(W/)?"[0-9]+"$'},
                    "description": "the ETag last read; required (428 without it)",
                }
            )
        if endpoint.idempotent:
            parameters.append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "maxLength": 200},
                    "description": (
                        "retry safely: the same key and body give the same answer; a request "
                        "refused as invalid or not allowed (400, 403, 422) or a 429/503 does "
                        "not use up its key"
                    ),
                }
            )
        if parameters:
            operation["parameters"] = parameters
        if endpoint.body is not None:
            operation["requestBody"] = {
                "required": not endpoint.body_optional,
                "content": {"application/json": {"schema": refs[(endpoint.body, "validation")]}},
            }
        if endpoint.roles is not None:
            operation["x-roles"] = list(endpoint.roles)
        response_model, is_list = _model_of(endpoint.response)
        if response_model is None and endpoint.produces is not None:
            operation["responses"][str(endpoint.status)] = {
                "description": "success",
                "content": {endpoint.produces: {"schema": {"type": "string"}}},
            }
        elif response_model is None:
            operation["responses"][str(endpoint.status)] = {"description": "done"}
        else:
            ref = refs[(response_model, "serialization")]
            description = "success"
            if endpoint.views:
                ref, description = _by_role(endpoint, response_model, refs, operation)
            body_schema = {"type": "array", "items": ref} if is_list else ref
            operation["responses"][str(endpoint.status)] = {
                "description": description,
                "content": {"application/json": {"schema": body_schema}},
            }
        if endpoint.location is not None:
            operation["responses"][str(endpoint.status)]["headers"] = {
                "Location": {
                    "description": "the path of the new resource (GET it to read it)",
                    "schema": {"type": "string"},
                }
            }
        error_codes = set(endpoint.errors)
        if endpoint.body is not None or endpoint.query is not None or endpoint.header is not None:
            error_codes |= {422}
        if endpoint.body is not None:
            error_codes |= {400, 415}
        if endpoint.roles is not None:
            error_codes |= {401, 403}
            operation["security"] = [{"bearer": []}]
        else:
            operation["security"] = []
        if endpoint.rate_limit is not None:
            error_codes |= {429}
        if re.search(r"{\w+}", endpoint.path):
            error_codes |= {404}
        # Any request may be one the HTTP server itself refuses before Regimen reads it (a
        # request line or header over 8 KiB, broken framing): a plain-text 400.
        error_codes |= {400}
        for code in sorted(error_codes):
            operation["responses"][str(code)] = {
                "description": _STATUS_TITLES.get(code, "error"),
                "content": {
                    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                },
            }
        operation["responses"]["400"]["content"]["text/plain"] = {"schema": {"type": "string"}}
        if endpoint.body is None and 400 not in endpoint.errors:
            operation["responses"]["400"]["description"] = (
                "Malformed HTTP request (refused by the HTTP server, as plain text)"
            )
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token from `regimen token create` or `POST /api/v1/tokens`",
                }
            },
        },
    }
