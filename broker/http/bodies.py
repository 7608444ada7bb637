"""Request bodies, read strictly: content type, size, UTF-8, JSON with no duplicate keys.

Form bodies (introspection, RFC 7662) are parsed strictly too: no repeated field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from litestar import Request
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

from broker.errors import InvalidRequest, PayloadTooLarge, excerpt
from broker.token.strictjson import StrictJsonError, loads_object

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def media_type(request: Request[Any, Any, Any]) -> str | None:
    return media_type_of(request.headers.get("content-type"))


def media_type_of(raw: str | None) -> str | None:
    """The media type if it is one we read (charset may only be utf-8), else None."""
    if raw is None:
        return None
    kind, _, params = raw.partition(";")
    kind = kind.strip().lower()
    for param in filter(None, (p.strip() for p in params.split(";"))):
        name, _, value = param.partition("=")
        if name.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            return None
    return kind


async def _raw(request: Request[Any, Any, Any]) -> bytes:
    """The body, or ``PayloadTooLarge`` (a domain error, so the use case audits it)."""
    try:
        return await request.body()
    except RequestEntityTooLarge:
        raise PayloadTooLarge("request body over the size limit") from None


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        return loads_object(raw)
    except StrictJsonError as e:
        raise InvalidRequest(f"body: {e} (send a JSON object)") from None


def parse_form(raw: bytes) -> dict[str, Any]:
    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, strict_parsing=True, max_num_fields=16)
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidRequest("body: not a form") from e
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidRequest(f"body: repeated field {excerpt(key)}")
        out[key] = value
    return out


Parser = Callable[[bytes], dict[str, Any]]


def json_parser(kind: str | None) -> Parser:
    """The parser for a body of media type ``kind``, or ``InvalidRequest`` if it is not read."""
    if kind != JSON:
        raise InvalidRequest("Content-Type must be application/json")
    return parse_json


def json_or_form_parser(kind: str | None) -> Parser:
    if kind == JSON:
        return parse_json
    if kind == FORM:
        return parse_form
    raise InvalidRequest("Content-Type must be application/json or application/x-www-form-urlencoded")


async def json_body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    parse = json_parser(media_type(request))
    return parse(await _raw(request))


async def json_or_form_body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    parse = json_or_form_parser(media_type(request))
    return parse(await _raw(request))


async def empty_body(request: Request[Any, Any, Any]) -> None:
    """Action endpoints take no fields: an empty body, or ``{}`` as JSON."""
    raw = await _raw(request)
    if not raw.strip():
        return
    if media_type(request) != JSON:
        raise InvalidRequest("send no body, or {} as application/json")
    if parse_json(raw):
        raise InvalidRequest("this endpoint takes no fields")


async def optional_json_body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Action endpoints with optional fields: an empty body is ``{}``."""
    raw = await _raw(request)
    if not raw.strip():
        return {}
    return json_parser(media_type(request))(raw)
