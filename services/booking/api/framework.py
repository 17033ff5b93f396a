"""A thin layer over aiohttp routes: each endpoint declares its pydantic models, roles and errors
once, and the same declaration validates requests and generates the OpenAPI document, so the two
cannot drift apart.

Handlers receive a `Ctx` and return a pydantic model (sent as JSON), a list of models, or an
aiohttp response. Domain failures are raised as `ApiError` and leave as problem+json; a
validation error names each bad field by its path in the request (`patient.screening.pregnant`,
`sessions.1.start`), never by pydantic's names for its validators. A create (201) may declare
`location`, the path its answer can be read back at, sent as `Location` (on an idempotent
replay too). Field types are in `fields`, lists page as `pagination` says.

Least privilege on reads: an endpoint may declare `views`, a narrower response model per role
(front desk: no clinical fields). The handler builds the full answer; the framework re-validates
it as the caller's view before it is sent, so a field the view does not declare never leaves,
and the OpenAPI document lists each role's shape (`x-response-by-role`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from services.booking.api.field_paths import field_path
from shared.clock import Clock
from shared.domain.errors import DomainError
from shared.logging import request_id_var
from shared.store import staff_tokens
from shared.store.audit import Actor
from shared.store.staff_tokens import Role, StaffToken, TokenExpired
from shared.web import CLOCK, POOL, SETTINGS, problem

PROBLEM_BASE = "https://regimen.dev/problems/"


class ApiError(Exception):
    """A failure the client should see as problem+json."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        type_: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type_ = PROBLEM_BASE + type_ if type_ else "about:blank"
        self.errors = errors
        self.headers = headers
        self.extra = extra

    def response(self) -> web.Response:
        return problem(
            self.status,
            self.title,
            detail=self.detail,
            type_=self.type_,
            errors=self.errors,
            headers=self.headers,
            **self.extra,
        )


def not_found(what: str, ident: object) -> ApiError:
    return ApiError(404, "Not Found", f"no {what} with id {ident}", type_="not-found")


def invalid(path: str, message: str, *, where: str = "body") -> ApiError:
    """A 422 naming one bad field, for rules pydantic cannot check alone."""
    return ApiError(
        422,
        "Unprocessable Content",
        f"{path}: {message}",
        type_="validation",
        errors=[{"in": where, "path": path, "message": message}],
    )


@dataclass
class Ctx:
    request: web.Request
    pool: asyncpg.Pool
    clock: Clock
    now: datetime
    staff: StaffToken | None
    body: Any = None
    query: Any = None
    header: Any = None
    path: dict[str, int] = field(default_factory=dict)

    @property
    def actor(self) -> Actor:
        if self.staff is None:
            return Actor("patient", None, "public booking")
        return Actor("staff", self.staff.id, f"{self.staff.name} ({self.staff.role})")

    @property
    def request_id(self) -> str | None:
        return request_id_var.get()

    def if_match(self) -> int:
        """The version the client last saw, from If-Match; required for every update."""
        header = self.request.headers.get("If-Match")
        if header is None:
            raise ApiError(
                428,
                "Precondition Required",
                "send If-Match with the ETag you last read, so that you do not overwrite "
                "someone else's change",
                type_="if-match-required",
            )
        # Versions are bigints: more than 18 digits cannot be one we issued.
        match = re.fullmatch(r'(?:W/)?"(\d{1,18})"', header.strip())
        if match is None:
            raise ApiError(412, "Precondition Failed", "If-Match is not an ETag we issued")
        return int(match[1])


Handler = Callable[[Ctx], Awaitable[Any]]
RateLimiter = Callable[[web.Request, Ctx], Awaitable[None]]
# Where a created resource can be read: a path template filled from the answer's fields (e.g.
# "/api/v1/patients/{id}"), or a function of the answer's JSON.
Location = str | Callable[[Mapping[str, Any]], str]


@dataclass
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    roles: tuple[Role, ...] | None  # None: public, no token
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    # Request headers read into a model (fields named by their alias, e.g. "Hold-Token"): for
    # secrets that must not travel in a URL, where proxies and browsers keep them.
    header: type[BaseModel] | None
    response: Any  # a model, list[model], or None for no content
    status: int
    errors: tuple[int, ...]
    rate_limit: RateLimiter | None
    idempotent: bool = False  # honours Idempotency-Key (the handler must use idempotency.run)
    # role -> the narrower model that role gets instead of `response` (see the module doc)
    views: Mapping[Role, type[BaseModel]] = field(default_factory=dict)
    # A 201's `Location`: the new resource's path, from the answer's JSON (see `Location`).
    location: Location | None = None
    # The body may be left out altogether (the handler then gets the model's defaults).
    body_optional: bool = False
    # A ready-made answer of another media type (e.g. "text/csv") with no response model.
    produces: str | None = None

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


def _path_text(path: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in path) or "(root)"


def validation_problem(
    error: ValidationError, where: str, model: type[BaseModel] | None = None
) -> ApiError:
    """The 422 for a model's validation errors, each naming its field path in the request."""
    errors = [
        {
            "in": where,
            "path": _path_text(field_path(model, item["loc"])),
            "message": item["msg"],
            "code": item["type"],
        }
        for item in error.errors(include_url=False, include_input=False)
    ]
    summary = "; ".join(f"{e['path']}: {e['message']}" for e in errors[:3])
    return ApiError(422, "Unprocessable Content", summary, type_="validation", errors=errors)


async def authenticate(request: web.Request, roles: tuple[Role, ...], now: datetime) -> StaffToken:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "Unauthorized",
            "send an admin API token as 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": 'Bearer realm="regimen"'},
        )
    token = token.strip()
    # Our tokens are URL-safe text; other bytes (aiohttp hands them over as lone surrogates,
    # which cannot even be hashed) are simply not one of them.
    issued = token.isascii() and token.isprintable()
    max_age_days = request.app[SETTINGS].staff_token_max_age_days
    try:
        staff = (
            await staff_tokens.authenticate(
                request.app[POOL], token, now=now, age_limit=staff_tokens.max_age(max_age_days)
            )
            if issued
            else None
        )
    except TokenExpired as expired:
        ended = expired.expired_at.astimezone(UTC)
        # Said plainly, so that whoever holds it asks for a new one instead of suspecting a typo.
        raise ApiError(
            401,
            "Unauthorized",
            f"the token expired on {ended:%Y-%m-%d %H:%M} UTC: tokens work for "
            f"{max_age_days} days after they are created; ask an admin for a new one",
            type_="token-expired",
            headers={
                "WWW-Authenticate": 'Bearer realm="regimen", error="invalid_token", '
                'error_description="the token expired"'
            },
            expired_at=f"{ended:%Y-%m-%dT%H:%M:%SZ}",
        ) from None
    if staff is None:
        raise ApiError(
            401,
            "Unauthorized",
            "the token is unknown or revoked",
            headers={"WWW-Authenticate": 'Bearer realm="regimen", error="invalid_token"'},
        )
    if staff.role not in roles:
        raise ApiError(403, "Forbidden", f"the {staff.role} role may not do this")
    return staff


def narrow(result: Any, view: type[BaseModel]) -> Any:
    """The full answer as `view` shows it: fields the view does not declare are dropped (at
    every depth, since a view's nested models are views too)."""
    if isinstance(result, list):
        return [narrow(item, view) for item in result]
    if not isinstance(result, BaseModel):
        # A ready-made response cannot be narrowed; sending it would show every field.
        raise TypeError(f"cannot narrow {type(result).__name__} to {view.__name__}")
    return view.model_validate(result.model_dump())


def _json_bytes(body: Any) -> bytes:
    """The answer's JSON. orjson rather than the standard library: four weeks of free times
    can be a quarter of a megabyte, which json.dumps takes about 2 ms to write and orjson 0.1.
    Non-string keys become strings, as json.dumps makes them."""
    return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)


def _serialise(result: Any) -> Any:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    if isinstance(result, list):
        return [_serialise(item) for item in result]
    return result


class ErrorMapper(Protocol):
    def __call__(self, error: DomainError, role: Role | None, *, where: str) -> ApiError: ...


class Api:
    """The endpoints, and how a domain refusal becomes a problem document (one mapper for every
    endpoint: services/booking/api/errors.py)."""

    def __init__(self, map_domain_error: ErrorMapper) -> None:
        self.endpoints: list[Endpoint] = []
        self.map_domain_error = map_domain_error

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        tag: str,
        roles: Sequence[Role] | None,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        header: type[BaseModel] | None = None,
        response: Any = None,
        status: int = 200,
        errors: Sequence[int] = (),
        rate_limit: RateLimiter | None = None,
        idempotent: bool = False,
        views: Mapping[Role, type[BaseModel]] | None = None,
        location: Location | None = None,
        body_optional: bool = False,
        produces: str | None = None,
    ) -> Callable[[Handler], Handler]:
        views = dict(views or {})
        if views and (roles is None or idempotent or not set(views) <= set(roles)):
            # A stored idempotent answer is replayed as sent, so it could not be narrowed; a
            # view for a role that may not call the endpoint is a typo.
            raise ValueError(f"{path}: views need roles that may call it and no idempotency")
        if location is not None and status != 201:
            raise ValueError(f"{path}: Location is for what a 201 created")

        def register(handler: Handler) -> Handler:
            self.endpoints.append(
                Endpoint(
                    method=method.upper(),
                    path=path,
                    handler=handler,
                    summary=summary,
                    tag=tag,
                    roles=tuple(roles) if roles is not None else None,
                    body=body,
                    query=query,
                    header=header,
                    response=response,
                    status=status,
                    errors=tuple(errors),
                    rate_limit=rate_limit,
                    idempotent=idempotent,
                    views=views,
                    location=location,
                    body_optional=body_optional,
                    produces=produces,
                )
            )
            return handler

        return register

    def install(self, app: web.Application) -> None:
        for endpoint in self.endpoints:
            app.router.add_route(
                endpoint.method, endpoint.path, _wrap(endpoint, self.map_domain_error)
            )


def _wrap(
    endpoint: Endpoint, map_domain_error: ErrorMapper
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        clock = request.app[CLOCK]
        now = clock.now()
        ctx = Ctx(request, request.app[POOL], clock, now, staff=None)
        try:
            if endpoint.roles is not None:
                ctx.staff = await authenticate(request, endpoint.roles, now)
            if endpoint.rate_limit is not None:
                await endpoint.rate_limit(request, ctx)
            ctx.path = _path_ids(request)
            if endpoint.query is not None:
                ctx.query = _parse_query(request, endpoint.query)
            if endpoint.header is not None:
                ctx.header = _parse_headers(request, endpoint.header)
            if endpoint.body is not None and endpoint.body_optional and not request.body_exists:
                ctx.body = _defaults(endpoint.body)
            elif endpoint.body is not None:
                ctx.body = await _parse_body(request, endpoint.body)
            result = await endpoint.handler(ctx)
        except ApiError as error:
            return error.response()
        except DomainError as refusal:
            role = ctx.staff.role if ctx.staff is not None else None
            where = _where(endpoint, refusal.path)
            return map_domain_error(refusal, role, where=where).response()
        if ctx.staff is not None and ctx.staff.role in endpoint.views:
            result = narrow(result, endpoint.views[ctx.staff.role])
        if isinstance(result, web.StreamResponse):
            # A ready-made answer: e.g. an idempotent request's replay, which is located too.
            if endpoint.location is not None and isinstance(result, web.Response):
                _locate(result, endpoint.location, _json_of(result))
            return result
        if result is None:
            return web.Response(status=204)
        body = _serialise(result)
        response = web.Response(
            body=_json_bytes(body), status=endpoint.status, content_type="application/json"
        )
        version = getattr(result, "version", None)
        if isinstance(version, int):
            response.headers["ETag"] = f'"{version}"'
        if endpoint.location is not None:
            _locate(response, endpoint.location, body)
        return response

    handle.__name__ = endpoint.operation_id
    return handle


def _where(endpoint: Endpoint, path: str | None) -> str:
    """The part of the request a refusal's field path points into."""
    field_name = (path or "").split(".")[0]
    for where, model in (("query", endpoint.query), ("header", endpoint.header)):
        if model is not None and field_name in model.model_fields:
            return where
    return "body"


def _json_of(response: web.Response) -> Any:
    if response.content_type != "application/json" or not isinstance(response.body, bytes):
        return None
    return json.loads(response.body)


def _locate(response: web.Response, location: Location, body: Any) -> None:
    """`Location: <path of the new resource>` on a 201 (not on a replayed refusal)."""
    if response.status != 201 or not isinstance(body, Mapping):
        return
    path = location.format_map(body) if isinstance(location, str) else location(body)
    response.headers["Location"] = path


def _bigint_digits(value: str) -> bool:
    """Plain digits that fit a bigint (18 digits always do)."""
    return value.isascii() and value.isdigit() and len(value) <= 18


def _path_ids(request: web.Request) -> dict[str, int]:
    ids = {}
    for name, value in request.match_info.items():
        # Ids are positive integers; anything else cannot name a resource. (isascii: "²" is a
        # digit to isdigit(), not to int().)
        if not _bigint_digits(value) or int(value) == 0:
            raise ApiError(404, "Not Found", f"{name} {value!r} does not exist", type_="not-found")
        ids[name] = int(value)
    return ids


def _parse_query(request: web.Request, model: type[BaseModel]) -> BaseModel:
    raw: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        field_info = model.model_fields.get(key)
        is_list = field_info is not None and "list" in str(field_info.annotation)
        raw[key] = values if is_list else values[-1]
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise validation_problem(error, "query", model) from None


def _header_name(name: str, info: Any) -> str:
    return info.alias or name


def _parse_headers(request: web.Request, model: type[BaseModel]) -> BaseModel:
    raw = {
        _header_name(name, info): request.headers[_header_name(name, info)]
        for name, info in model.model_fields.items()
        if _header_name(name, info) in request.headers
    }
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise validation_problem(error, "header", model) from None


async def _parse_body(request: web.Request, model: type[BaseModel]) -> BaseModel:
    if request.content_type != "application/json":
        raise ApiError(
            415,
            "Unsupported Media Type",
            "send the request body as application/json",
            type_="unsupported-media-type",
        )
    try:
        raw = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "Bad Request", "the body is not valid JSON", type_="bad-json") from None
    except RecursionError:
        # The decoder recurses per nesting level; no body of ours nests more than a few deep.
        raise _too_deep() from None
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise validation_problem(error, "body", model) from None
    except RecursionError:
        raise _too_deep() from None


def _defaults(model: type[BaseModel]) -> BaseModel:
    """An optional body left out: the model with its defaults (a 422 if it has required
    fields, which would make the body not optional after all)."""
    try:
        return model.model_validate({})
    except ValidationError as error:
        raise validation_problem(error, "body", model) from None


def _too_deep() -> ApiError:
    return ApiError(400, "Bad Request", "the body's JSON is nested too deeply", type_="bad-json")
