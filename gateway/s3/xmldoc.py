"""S3's XML documents: responses written as text (a listing page is 1,000 entries of five
elements: ElementTree's tree and serializer cost a third of the gateway's time for one); request
bodies (DeleteObjects, CompleteMultipartUpload) parsed with ElementTree, with limits (size, no
DTD, so no entity expansion)."""
from __future__ import annotations

import functools
import time
import xml.etree.ElementTree as ET
from typing import Iterable

from gateway.s3.errors import S3Error

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_BODY = 1 << 20
Tree = dict | list | str | int | bool | None


class Raw(str):
    """An element's content rendered already (escaped, nested elements as text): written as
    it is — what a listing uses for its 1,000 entries."""


def document(root: str, children: Iterable[tuple[str, Tree]], text: str | None = None) -> bytes:
    """`<root xmlns=S3>` with `children`: (tag, value) where a value is text, a number, a bool,
    a list of (tag, value) pairs (nested elements), `Raw` (written as it is) or None (left
    out). Tags are the caller's constants; text is escaped."""
    out: list[str] = []
    if text:
        out.append(escape(text))
    _write(out, children)
    head = f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{NS}"'
    body = "".join(out)
    return (f"{head}>{body}</{root}>" if body else f"{head} />").encode("utf-8", "surrogatepass")


def escape(text: str) -> str:
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


def _write(out: list[str], children: Iterable[tuple[str, Tree]]) -> None:
    for tag, value in children:
        if value is None:
            continue
        if isinstance(value, list):
            inner: list[str] = []
            _write(inner, value)
            content = "".join(inner)
        elif type(value) is Raw:
            content = value
        elif isinstance(value, bool):
            content = "true" if value else "false"
        else:
            content = escape(str(value))
        out.append(f"<{tag}>{content}</{tag}>" if content else f"<{tag} />")


def error_document(code: str, message: str, request_id: str, resource: str,
                   extra: dict[str, str]) -> bytes:
    element = ET.Element("Error")
    for tag, text in [("Code", code), ("Message", message), *extra.items(),
                      ("Resource", resource), ("RequestId", request_id)]:
        ET.SubElement(element, tag).text = text
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(element)


def iso_time(ms: int) -> str:
    return _iso_seconds(ms // 1000) + f".{ms % 1000:03d}Z"


@functools.lru_cache(maxsize=1024)
def _iso_seconds(seconds: int) -> str:
    """(Objects written together share their seconds: a listing page formats few of them.)"""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def http_time(ms: int) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(ms / 1000))


def parse(body: bytes, root: str) -> ET.Element:
    """The request document `body`, whose root must be `root`; MalformedXML otherwise. DTDs
    (and so entity definitions: XML bombs) are refused before parsing."""
    if len(body) > MAX_BODY:
        raise S3Error("MalformedXML", f"the XML document is larger than {MAX_BODY} bytes", 400)
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise S3Error("MalformedXML", "XML documents with a DTD are not accepted", 400)
    try:
        element = ET.fromstring(body)
    except ET.ParseError as err:
        raise S3Error("MalformedXML", f"The XML you provided was not well-formed: {err}",
                      400) from None
    if local(element.tag) != root:
        raise S3Error("MalformedXML", f"the document's root must be {root}", 400)
    return element


def local(tag: str) -> str:
    """A tag without its namespace."""
    return tag.rsplit("}", 1)[-1]


def children(element: ET.Element, tag: str) -> list[ET.Element]:
    return [c for c in element if local(c.tag) == tag]


def text_of(element: ET.Element, tag: str) -> str | None:
    found = children(element, tag)
    return (found[0].text or "") if found else None
