"""S3's XML documents: responses built with ElementTree; request bodies (DeleteObjects,
CompleteMultipartUpload) parsed with limits (size, no DTD, so no entity expansion)."""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from typing import Iterable

from gateway.s3.errors import S3Error

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_BODY = 1 << 20
Tree = dict | list | str | int | bool | None


def document(root: str, children: Iterable[tuple[str, Tree]], text: str | None = None) -> bytes:
    """`<root xmlns=S3>` with `children`: (tag, value) where a value is text, a number, a bool,
    a list of (tag, value) pairs (nested elements) or None (left out)."""
    element = ET.Element(root, xmlns=NS)
    element.text = text
    _fill(element, children)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(element)


def _fill(parent: ET.Element, children: Iterable[tuple[str, Tree]]) -> None:
    for tag, value in children:
        if value is None:
            continue
        child = ET.SubElement(parent, tag)
        if isinstance(value, list):
            _fill(child, value)
        elif isinstance(value, bool):
            child.text = "true" if value else "false"
        else:
            child.text = str(value)


def error_document(code: str, message: str, request_id: str, resource: str,
                   extra: dict[str, str]) -> bytes:
    element = ET.Element("Error")
    for tag, text in [("Code", code), ("Message", message), *extra.items(),
                      ("Resource", resource), ("RequestId", request_id)]:
        ET.SubElement(element, tag).text = text
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(element)


def iso_time(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


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
