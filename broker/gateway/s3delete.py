"""The keys of a DeleteObjects body (``POST /BUCKET?delete``), read strictly. Pure.

The body is a plain ``<Delete>`` of ``<Object><Key>..</Key></Object>`` elements and an
optional ``<Quiet>``, at most ``MAX_DELETE_KEYS`` keys in at most ``MAX_DELETE_BODY``
bytes. No DTD, entity, comment, CDATA or processing instruction is read (the stdlib parser
would expand internal entities), no ``<VersionId>`` (versions are not served) and no other
element: anything else is refused, so the gateway checks exactly the keys S3 will delete.
"""

from __future__ import annotations

import re
from typing import Final
from xml.etree.ElementTree import Element, ParseError, XMLParser

from broker.gateway.s3xml import denied, invalid

#: S3's own limit on one DeleteObjects request
MAX_DELETE_KEYS: Final = 1000
#: 1000 keys of 1024 bytes with their tags, and room for indentation
MAX_DELETE_BODY: Final = 2 * 1024 * 1024

_NS: Final = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_DECLARATION = re.compile(rb"\A<\?xml[^<>?]*\?>")


def _name(element: Element) -> str:
    tag = element.tag
    if tag.startswith(_NS):
        return tag[len(_NS) :]
    if tag.startswith("{"):
        raise invalid("DeleteObjects body in another XML namespace", "MalformedXML")
    return tag


def _parse(body: bytes) -> Element:
    if len(body) > MAX_DELETE_BODY:
        raise invalid(f"DeleteObjects body over {MAX_DELETE_BODY} bytes", "MalformedXML")
    if b"<!" in body:  # DOCTYPE, ENTITY, comments, CDATA: never given to a parser
        raise denied("DTD, entity, comment or CDATA in a DeleteObjects body")
    if b"<?" in _DECLARATION.sub(b"", body, count=1):
        raise invalid("processing instruction in a DeleteObjects body", "MalformedXML")
    parser = XMLParser()  # noqa: S314 - "<!" was refused above: no DTD, so no entity is ever declared
    try:
        parser.feed(body)
        root: Element = parser.close()
    except ParseError:
        raise invalid("DeleteObjects body is not well-formed XML", "MalformedXML") from None
    return root


def _only_whitespace(element: Element) -> bool:
    return not (element.text or "").strip() and not (element.tail or "").strip() and not element.attrib


def _only_whitespace_around(element: Element) -> bool:
    return not (element.tail or "").strip() and not element.attrib


def delete_keys(body: bytes) -> tuple[str, ...]:
    """The keys a DeleteObjects body names, in order, as S3 will read them (not decoded)."""
    root = _parse(body)
    if _name(root) != "Delete" or not _only_whitespace(root):
        raise invalid("DeleteObjects body is not a <Delete>", "MalformedXML")
    keys: list[str] = []
    quiet = 0
    for child in root:
        name = _name(child)
        if name == "Quiet" and len(child) == 0 and (child.text or "").strip() in ("true", "false"):
            quiet += 1
            continue
        if name != "Object" or not _only_whitespace(child):
            raise invalid("DeleteObjects body holds an element other than Object and Quiet", "MalformedXML")
        keys.append(_object_key(child))
        if len(keys) > MAX_DELETE_KEYS:
            raise invalid(f"more than {MAX_DELETE_KEYS} keys in one DeleteObjects", "MalformedXML")
    if quiet > 1 or not keys:
        raise invalid("DeleteObjects body has no key or two <Quiet>", "MalformedXML")
    return tuple(keys)


def _object_key(obj: Element) -> str:
    parts = [(_name(e), e) for e in obj]
    if any(name == "VersionId" for name, _ in parts):
        raise denied("object versions (VersionId) are not served")
    if len(parts) != 1 or parts[0][0] != "Key" or len(parts[0][1]) or not _only_whitespace_around(parts[0][1]):
        raise invalid("an <Object> holds exactly one <Key>", "MalformedXML")
    return parts[0][1].text or ""
