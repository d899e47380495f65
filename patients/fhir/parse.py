"""Reading FHIR R4 input into import units (pure Python, no Django).

A *unit* is what is imported atomically: one Bundle (a ``.json`` file or an HTTP body), or one
NDJSON file of a bulk export. Problems found here are reported with their location
(``entry[3]``, ``line 12``) and a plain message.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .resources import R4_RESOURCE_TYPES, SUPPORTED_BUNDLE_TYPES

# Bulk-export files are imported in this order so that references point backwards.
NDJSON_ORDER = ("Organization", "Practitioner", "Location", "Patient", "Encounter")


@dataclass(frozen=True)
class Issue:
    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


@dataclass
class Entry:
    location: str
    resource: dict[str, Any]
    full_url: str = ""
    method: str = ""


@dataclass
class Unit:
    label: str
    entries: list[Entry] = field(default_factory=list)
    errors: list[Issue] = field(default_factory=list)
    kind: str = "bundle"


class InputError(ValueError):
    """A path that cannot be read as FHIR input at all."""


def unit_from_bytes(data: bytes, label: str) -> Unit:
    """Parse one JSON Bundle."""
    unit = Unit(label=label)
    if b"\\u0000" in data or b"\x00" in data:
        unit.errors.append(Issue("", "the bundle contains a NUL character, which cannot be stored"))
        return unit
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        unit.errors.append(Issue("", f"not valid JSON ({exc})"))
        return unit
    return unit_from_document(doc, label)


def unit_from_document(doc: Any, label: str) -> Unit:
    unit = Unit(label=label)
    if not isinstance(doc, dict):
        unit.errors.append(Issue("", "expected a JSON object with resourceType 'Bundle'"))
        return unit
    rtype = doc.get("resourceType")
    if rtype != "Bundle":
        unit.errors.append(Issue("", f"expected resourceType 'Bundle', got {rtype!r}"))
        return unit
    btype = doc.get("type")
    if btype not in SUPPORTED_BUNDLE_TYPES:
        unit.errors.append(
            Issue("Bundle.type", f"unsupported bundle type {btype!r} (expected one of: "
                  f"{', '.join(sorted(SUPPORTED_BUNDLE_TYPES))})")
        )
        return unit
    raw_entries = doc.get("entry", [])
    if not isinstance(raw_entries, list):
        unit.errors.append(Issue("Bundle.entry", "must be a list"))
        return unit
    for index, raw in enumerate(raw_entries):
        location = f"entry[{index}]"
        if not isinstance(raw, dict):
            unit.errors.append(Issue(location, "an entry must be a JSON object"))
            continue
        resource = raw.get("resource")
        if not isinstance(resource, dict):
            unit.errors.append(Issue(location, "entry has no 'resource' object"))
            continue
        request = raw.get("request")
        if not isinstance(request, dict):
            request = {}
        method = str(request.get("method", "")).upper()
        if method == "DELETE":
            unit.errors.append(Issue(location, "DELETE entries are not accepted: clinical facts are "
                                     "never deleted (mark them entered-in-error instead)"))
            continue
        problem = _check_resource_type(resource)
        if problem:
            unit.errors.append(Issue(location, problem))
            continue
        full_url = raw.get("fullUrl", "")
        unit.entries.append(
            Entry(location=location, resource=resource, full_url=full_url if isinstance(full_url, str) else "",
                  method=method)
        )
    return unit


def unit_from_ndjson(data: bytes, label: str) -> Unit:
    """Parse one NDJSON file of a FHIR Bulk Data export (one resource per line)."""
    unit = Unit(label=label, kind="ndjson")
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        location = f"line {number}"
        if b"\\u0000" in line or b"\x00" in line:
            unit.errors.append(Issue(location, "contains a NUL character, which cannot be stored"))
            continue
        try:
            resource = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            unit.errors.append(Issue(location, f"not valid JSON ({exc})"))
            continue
        if not isinstance(resource, dict):
            unit.errors.append(Issue(location, "expected a JSON object"))
            continue
        problem = _check_resource_type(resource)
        if problem:
            unit.errors.append(Issue(location, problem))
            continue
        unit.entries.append(Entry(location=location, resource=resource))
    return unit


def _check_resource_type(resource: dict[str, Any]) -> str | None:
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        return "resource has no resourceType"
    if rtype not in R4_RESOURCE_TYPES:
        return f"unknown resourceType {rtype!r} (not a FHIR R4 resource)"
    if rtype == "Bundle":
        return "nested Bundles are not supported"
    return None


def discover_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders into the ordered list of ``.json``/``.ndjson`` files to import."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in {".json", ".ndjson"}]
            found.extend(sorted(files, key=_file_order))
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return found


def _file_order(path: Path) -> tuple[int, str]:
    if path.suffix.lower() == ".ndjson":
        rtype = path.name.split(".", 1)[0]
        rank = NDJSON_ORDER.index(rtype) if rtype in NDJSON_ORDER else len(NDJSON_ORDER)
        return (1 + rank, str(path))
    return (0, str(path))


def units_from_files(files: Iterable[Path]) -> Iterator[Unit]:
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            yield Unit(label=str(path), errors=[Issue("", f"cannot read file ({exc.strerror})")])
            continue
        if path.suffix.lower() == ".ndjson":
            yield unit_from_ndjson(data, str(path))
        else:
            yield unit_from_bytes(data, str(path))
