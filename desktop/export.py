"""Export captions and tags: CSV (a row per file), JSON (an object per photo), and XMP
sidecars (`dc:description`, `dc:subject`) that darktable, digiKam, Lightroom and exiftool read.

Qt-free. XMP is written with xml.etree (a real XML library; python-xmp-toolkit needs the
exempi C library, which a plain `pip install` does not bring) and read back the same way.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from desktop.library import Library, LibraryError

log = logging.getLogger(__name__)

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "xmpMM": "http://ns.adobe.com/xap/1.0/mm/",
    "exif": "http://ns.adobe.com/exif/1.0/",
    "tiff": "http://ns.adobe.com/tiff/1.0/",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
    "lr": "http://ns.adobe.com/lightroom/1.0/",
    "darktable": "http://darktable.sf.net/",
    "digiKam": "http://www.digikam.org/ns/1.0/",
}
for _prefix, _uri in NS.items():
    ET.register_namespace(_prefix, _uri)
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def _q(name: str) -> str:
    prefix, _, local = name.partition(":")
    return f"{{{NS[prefix]}}}{local}"


def xmp_sidecar_path(photo: str | os.PathLike) -> Path:
    """`IMG_1.jpg` -> `IMG_1.jpg.xmp`: darktable's and digiKam's name, and unambiguous when
    IMG_1.jpg and IMG_1.cr2 sit side by side (`IMG_1.xmp` would be shared by both)."""
    return Path(os.fspath(photo) + ".xmp")


def write_xmp(
    path: str | os.PathLike, caption: str | None, tags: Sequence[str], replace_keywords: bool = False
) -> None:
    """Write dc:description and dc:subject into an XMP sidecar, keeping everything else an
    existing sidecar holds (darktable keeps its edit history there). Existing keywords are
    kept too unless `replace_keywords`: other programs' tags are not ours to delete."""
    path = Path(path)
    if path.exists():
        tree = ET.parse(path)
        root = tree.getroot()
        rdf = root if root.tag == _q("rdf:RDF") else root.find(_q("rdf:RDF"))
        if rdf is None:
            raise ValueError(f"{path}: not an XMP packet (no rdf:RDF)")
    else:
        root = ET.Element(_q("x:xmpmeta"), {_q("x:xmptk"): "Lumen"})
        rdf = ET.SubElement(root, _q("rdf:RDF"))
        tree = ET.ElementTree(root)
    descriptions = rdf.findall(_q("rdf:Description")) or [
        ET.SubElement(rdf, _q("rdf:Description"), {_q("rdf:about"): ""})
    ]
    keywords = [] if replace_keywords else read_xmp_tree(root)[1]
    for desc in descriptions:
        for el in desc.findall(_q("dc:subject")) + (desc.findall(_q("dc:description")) if caption else []):
            desc.remove(el)
    target = descriptions[0]
    if caption:
        alt = ET.SubElement(ET.SubElement(target, _q("dc:description")), _q("rdf:Alt"))
        ET.SubElement(alt, _q("rdf:li"), {XML_LANG: "x-default"}).text = caption
    merged = list(dict.fromkeys([*keywords, *tags]))
    if merged:
        bag = ET.SubElement(ET.SubElement(target, _q("dc:subject")), _q("rdf:Bag"))
        for tag in merged:
            ET.SubElement(bag, _q("rdf:li")).text = tag
    ET.indent(tree, space=" ")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tree.write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, path)  # a reader never sees half a sidecar


def read_xmp_tree(root: ET.Element) -> tuple[str | None, list[str]]:
    caption = None
    for desc in root.iter(_q("dc:description")):
        items = desc.findall(f"{_q('rdf:Alt')}/{_q('rdf:li')}")
        default = [li for li in items if li.get(XML_LANG) == "x-default"] or items
        caption = default[0].text if default else (desc.text or "").strip() or None
    subjects = [li.text or "" for s in root.iter(_q("dc:subject")) for li in s.iter(_q("rdf:li"))]
    return caption, [s for s in subjects if s]


def read_xmp(path: str | os.PathLike) -> tuple[str | None, list[str]]:
    """(dc:description x-default, dc:subject keywords) of a sidecar."""
    return read_xmp_tree(ET.parse(path).getroot())


@dataclass
class ExportReport:
    photos: int = 0
    written: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


CSV_FIELDS = ["path", "caption", "caption_source", "caption_edited", "tags", "tags_edited", "photo_id"]


def export(
    lib: Library,
    fmt: str,
    out: str | os.PathLike | io.TextIOBase | None = None,
    *,
    replace_keywords: bool = False,
    everything: bool = False,
) -> ExportReport:
    """Captions and tags of every photo (those with any, unless `everything`): `csv` (a row
    per file), `json` (an object per photo) to `out` (a path or a text stream), or `xmp`
    (a sidecar next to every file; `out` unused)."""
    if fmt not in ("csv", "json", "xmp"):
        raise LibraryError(f"unknown export format {fmt!r}: csv, json or xmp")
    report = ExportReport()
    texts = [t for t in lib.catalog.photo_texts() if everything or t.caption or t.tags]
    report.photos = len(texts)
    if fmt == "xmp":
        for t in texts:
            for p in t.paths:
                sidecar = xmp_sidecar_path(p)
                try:
                    write_xmp(sidecar, t.caption, t.tags, replace_keywords)
                    report.written.append(str(sidecar))
                except (OSError, ET.ParseError, ValueError) as exc:
                    log.warning("cannot write %s: %s", sidecar, exc)
                    report.failed.append((str(sidecar), str(exc)))
        return report
    owned = not hasattr(out, "write")
    stream: Any = open(out, "w", encoding="utf-8", newline="") if owned and out is not None else out
    try:
        if fmt == "csv":
            writer = csv.DictWriter(stream, CSV_FIELDS)
            writer.writeheader()
            for t in texts:
                for p in t.paths:
                    writer.writerow(
                        {
                            "path": p,
                            "caption": t.caption or "",
                            "caption_source": t.caption_source or "",
                            "caption_edited": int(t.caption_edited),
                            "tags": "; ".join(t.tags),
                            "tags_edited": int(t.tags_edited),
                            "photo_id": t.photo_id,
                        }
                    )
        else:
            json.dump([asdict(t) for t in texts], stream, indent=1, ensure_ascii=False)
            stream.write("\n")
    finally:
        if owned and out is not None:
            stream.close()
    if owned and out is not None:
        report.written.append(os.fspath(out))  # type: ignore[arg-type]
    return report


__all__ = ["ExportReport", "export", "read_xmp", "write_xmp", "xmp_sidecar_path"]
