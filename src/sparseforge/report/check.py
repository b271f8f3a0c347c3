"""Check generated reports as a reader's browser would: markup, images, links.

:func:`check_html` parses one page (html5lib when installed, else the standard library's
parser), decodes every image (embedded ``data:`` PNGs and local files: PNG signature, chunk
CRCs, the zlib stream and its size against the header), and resolves every local link. It
returns a list of one-line problems (empty: the page is fine). :func:`check_tree` does it for
every ``.html`` file below a folder (a demo: the index and each report).
"""

from __future__ import annotations

import base64
import binascii
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel


def decode_png(data: bytes) -> tuple[int, int]:
    """Validate a PNG fully (chunks, CRCs, image data size) and return (width, height).

    Raises:
        ValueError: not a PNG, a bad chunk, or image data that does not match the header.
    """
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG (bad signature)")
    pos, header, idat, seen_end = len(PNG_SIGNATURE), None, [], False
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos: pos + 4])
        ctype = data[pos + 4: pos + 8]
        body = data[pos + 8: pos + 8 + length]
        crc = data[pos + 8 + length: pos + 12 + length]
        if len(body) != length or len(crc) != 4:
            raise ValueError(f"truncated {ctype!r} chunk")
        if struct.unpack(">I", crc)[0] != binascii.crc32(ctype + body) & 0xFFFFFFFF:
            raise ValueError(f"bad CRC in {ctype!r} chunk")
        if ctype == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            seen_end = True
            break
        pos += 12 + length
    if header is None or not idat or not seen_end:
        raise ValueError("missing IHDR, IDAT or IEND")
    w, h, depth, colour, _, _, interlace = header
    raw = zlib.decompress(b"".join(idat))
    if interlace == 0 and colour in _CHANNELS:
        row = (w * _CHANNELS[colour] * depth + 7) // 8
        if len(raw) != h * (row + 1):
            raise ValueError(f"image data is {len(raw)} bytes, the header needs {h * (row + 1)}")
    if w == 0 or h == 0:
        raise ValueError("empty image")
    return w, h


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.ids: set[str] = set()
        self.stack: list[str] = []
        self.problems: list[str] = []

    _VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        for attr in ("href", "src"):
            if a.get(attr) is not None:
                self.refs.append((tag, attr, str(a[attr])))
        if tag not in self._VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._VOID:
            return
        if tag in self.stack:
            while self.stack and self.stack[-1] != tag:
                self.problems.append(f"<{self.stack.pop()}> is not closed before </{tag}>")
            self.stack.pop()
        else:
            self.problems.append(f"</{tag}> closes nothing")


def _parse_errors(text: str) -> list[str]:
    try:
        import html5lib
    except ImportError:  # the stdlib check below still runs
        return []
    parser = html5lib.HTMLParser(tree=html5lib.getTreeBuilder("etree"), namespaceHTMLElements=False)
    parser.parse(text)
    out = []
    for (line, col), code, data in parser.errors:
        out.append(f"line {line}:{col}: html5lib {code} {data if data else ''}".rstrip())
    return out


def check_html(path: str | Path) -> list[str]:
    """One-line problems of the page at ``path`` (empty list: parses, images decode, links resolve)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return [f"{path}: cannot read ({e})"]
    problems = [f"{path.name}: {p}" for p in _parse_errors(text)]
    col = _Collect()
    col.feed(text)
    col.close()
    problems += [f"{path.name}: {p}" for p in col.problems]
    if not text.lstrip().lower().startswith("<!doctype html"):
        problems.append(f"{path.name}: no <!doctype html>")
    for tag, attr, value in col.refs:
        kind = f"<{tag} {attr}>"
        if value.startswith("data:"):
            head, _, payload = value.partition(",")
            if tag == "img":
                if "image/png" not in head or ";base64" not in head:
                    problems.append(f"{path.name}: {kind} embeds {head!r}, not a base64 PNG")
                    continue
                try:
                    decode_png(base64.b64decode(payload, validate=True))
                except (ValueError, binascii.Error, zlib.error) as e:
                    problems.append(f"{path.name}: {kind} embedded image does not decode ({e})")
            continue
        url = urlparse(value)
        if url.scheme in ("http", "https", "mailto"):
            continue  # not a local link
        if url.scheme and url.scheme != "file":
            problems.append(f"{path.name}: {kind}={value!r} has an unexpected scheme")
            continue
        if not url.path:  # a fragment-only link
            if url.fragment and url.fragment not in col.ids:
                problems.append(f"{path.name}: {kind}={value!r} points to no element")
            continue
        target = (path.parent / unquote(url.path)).resolve() if not url.path.startswith("/") else Path(unquote(url.path))
        if not target.exists():
            problems.append(f"{path.name}: {kind}={value!r} does not resolve ({target} is missing)")
            continue
        if tag == "img":
            try:
                decode_png(target.read_bytes())
            except (ValueError, zlib.error, OSError) as e:
                problems.append(f"{path.name}: {kind}={value!r} does not decode ({e})")
    return problems


def check_tree(root: str | Path) -> dict[str, Any]:
    """``{"pages": n, "images": n, "links": n, "problems": [...]}`` for every .html below ``root``."""
    root = Path(root)
    pages = sorted(root.rglob("*.html"))
    problems: list[str] = []
    n_img = n_links = 0
    for p in pages:
        problems += [f"{p.relative_to(root)}: {x.split(': ', 1)[1]}" for x in check_html(p)]
        col = _Collect()
        col.feed(p.read_text(encoding="utf-8", errors="replace"))
        n_img += sum(1 for t, _, _ in col.refs if t == "img")
        n_links += sum(1 for t, a, _ in col.refs if a == "href")
    return {"pages": len(pages), "images": n_img, "links": n_links, "problems": problems}


__all__ = ["check_html", "check_tree", "decode_png"]
