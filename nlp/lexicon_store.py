"""The concept lexicon kept in the database: checks of its entries, loading it from (and writing
it to) the JSON form of ``nlp/lexicon.json``, and the copy each process keeps.

The JSON form is the one ``nlp.extract.extract(text, lexicon=...)`` takes::

    {"id", "kind", "preferred", "synonyms": [...], "abbreviations": [...],
     "codes": [{"system", "code", "display"}]}

Concepts, terms and codes are listed in the order they were created, so a database seeded from
``nlp/lexicon.json`` gives the file's content exactly, and the same pipeline version.

A process keeps the lexicon it last read. ``lexicon_current()`` asks the database one small
question each time (how many rows, and when the last changed, in the three tables); only when
the answer differs does it read the lexicon again (three queries) and build its version, so a
lexicon edited in the admin is used by every worker from its next job on. The version also names
the assertion head in use (``nlp.assertion_registry.assertion_head_current``: the model registry's
active version, else the shipped artefact), so activating another head is noticed the same way.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import connection, transaction

from nlp.assertion.model import AssertionHead

from .models import LexiconCode, LexiconConcept, LexiconTerm

if TYPE_CHECKING:  # spaCy is imported with the extractor, when it is first needed
    from nlp.extract import PreparedLexicon

System = LexiconCode.System

# The shape of a code in each system, and the words an error uses for it.
# SNOMED CT: an SCTID is 6 to 18 digits whose last three are a partition identifier and a check
# digit (SNOMED CT Technical Implementation Guide, 6.6 "SCTID"); "00" is the partition of a
# concept. ICD-10-CM: a letter, two characters, then up to four after a dot (CDC/NCHS ICD-10-CM
# tabular list; "U" codes are for emergency use). RxNorm: an RXCUI, a positive integer.
CODE_FORMATS: dict[str, tuple[re.Pattern[str], str]] = {
    System.SNOMED_CT: (re.compile(r"[1-9]\d{2,14}[01]0\d"),
                       "a SNOMED CT concept id is 6 to 18 digits, not starting with 0, ending in 0 or 1, 0 and a check digit"),
    System.ICD10CM: (re.compile(r"[A-Z]\d[0-9A-Z](?:\.[0-9A-Z]{1,4})?"),
                     "an ICD-10-CM code is a letter, a digit, a digit or letter, then an optional dot and 1 to 4 "
                     "digits or letters (e.g. E11.9)"),
    System.RXNORM: (re.compile(r"[1-9]\d{0,8}"), "an RxNorm RXCUI is a whole number (e.g. 6809)"),
}
SYSTEM_NAMES = {value: str(label) for value, label in System.choices}


class LexiconDataError(ValueError):
    """The lexicon given to ``lexicon_load`` is not well formed (the message says where)."""


def code_problem(system: str, code: str) -> str | None:
    """Why ``code`` is not a well-formed code of ``system``, or None when it is."""
    if system not in CODE_FORMATS:
        return f"unknown code system {system!r} (one of {', '.join(SYSTEM_NAMES.values())})"
    pattern, rule = CODE_FORMATS[system]
    if not code or not pattern.fullmatch(code):
        return f"{code!r} is not a valid {SYSTEM_NAMES[system]} code: {rule}"
    return None


def term_problem(text: str) -> str | None:
    """Why ``text`` cannot be a synonym or abbreviation, or None."""
    if not text or not text.strip():
        return "a synonym or abbreviation cannot be empty"
    if text != text.strip():
        return f"{text!r} starts or ends with spaces"
    if not re.search(r"\w", text):
        return f"{text!r} has no letter or digit"
    return None


def term_key(text: str) -> str:
    """Terms that match the same words (case and runs of spaces do not count) share a key."""
    return " ".join(text.split()).casefold()


def term_owners(keys: Iterable[str], *, exclude_concept: int | None = None) -> dict[str, str]:
    """For each key, the concept (other than ``exclude_concept``) that already has a term with
    it, as "preferred (id)". Keys fold case and spaces, which no portable index lookup does, so
    the comparison is in Python over the terms (a few thousand rows at most)."""
    wanted = set(keys)
    if not wanted:
        return {}
    rows = LexiconTerm.objects.all()
    if exclude_concept is not None:
        rows = rows.exclude(concept_id=exclude_concept)
    owners: dict[str, str] = {}
    for text, concept_id, preferred in rows.values_list("text", "concept__concept_id", "concept__preferred"):
        key = term_key(text)
        if key in wanted:
            owners.setdefault(key, f"{preferred} ({concept_id})")
    return owners


# --- reading ------------------------------------------------------------------------------


def lexicon_from_database() -> list[dict[str, Any]]:
    """The active concepts in the JSON form, in order (three queries)."""
    concepts = list(LexiconConcept.objects.filter(active=True).order_by("pk").values("pk", "concept_id", "kind",
                                                                                          "preferred"))
    terms: dict[int, dict[str, list[str]]] = {}
    for concept_pk, term_type, text in (LexiconTerm.objects.filter(concept__active=True).order_by("pk")
                                         .values_list("concept_id", "term_type", "text")):
        terms.setdefault(concept_pk, {"synonym": [], "abbreviation": []})[term_type].append(text)
    codes: dict[int, list[dict[str, str]]] = {}
    for concept_pk, system, code, display in (LexiconCode.objects.filter(concept__active=True).order_by("pk")
                                              .values_list("concept_id", "system", "code", "display")):
        codes.setdefault(concept_pk, []).append({"system": system, "code": code, "display": display})
    out = []
    for row in concepts:
        words = terms.get(row["pk"], {"synonym": [], "abbreviation": []})
        out.append({
            "id": row["concept_id"],
            "kind": row["kind"],
            "preferred": row["preferred"],
            "synonyms": words["synonym"],
            "abbreviations": words["abbreviation"],
            "codes": codes.get(row["pk"], []),
        })
    return out


def lexicon_fingerprint() -> tuple[Any, ...]:
    """Row counts and latest change of the three lexicon tables, and the id and file hash of the
    model registry's active assertion head (if any), in one query."""
    from cdss.models import ModelVersion

    from .assertion_registry import MODEL_NAME

    parts = []
    for model in (LexiconConcept, LexiconTerm, LexiconCode):
        table = connection.ops.quote_name(model._meta.db_table)
        parts.append(f"(SELECT COUNT(*) FROM {table}), (SELECT MAX(updated_at) FROM {table})")  # noqa: S608
    registry = connection.ops.quote_name(ModelVersion._meta.db_table)
    for column in ("id", "file_sha256"):
        parts.append(f"(SELECT {column} FROM {registry} WHERE name = %s AND active)")  # noqa: S608
    with connection.cursor() as cursor:
        # table and column names from the models, the name as a parameter
        cursor.execute("SELECT " + ", ".join(parts), [MODEL_NAME, MODEL_NAME])
        row = cursor.fetchone()
    return tuple(str(value) for value in row)


@dataclass(frozen=True)
class Lexicon:
    concepts: list[dict[str, Any]]
    version: str  # the pipeline version extractions with this lexicon (and head) carry
    source: str  # "database", or "file" while the database holds no concept (before the seed)
    head: AssertionHead  # the assertion head extraction uses with it
    prepared: PreparedLexicon | None = None  # the database's concepts checked and hashed once; None: the file's


_lock = threading.Lock()
_cache: dict[str, Any] = {}


def lexicon_current() -> Lexicon:
    """The lexicon extraction uses now: the active concepts of the database, or
    ``nlp/lexicon.json`` while the database holds no concept at all. One query when nothing
    changed since this process last read it; the same query notices another active assertion head
    in the model registry, whose files are checked when it changes (``ModelFileTampered`` if they
    were altered)."""
    from .assertion_registry import assertion_head_current

    fingerprint = lexicon_fingerprint()
    with _lock:
        cached: Lexicon | None = _cache.get("lexicon")
        if cached is not None and _cache.get("fingerprint") == fingerprint:
            return cached
    from . import extract

    head = assertion_head_current()

    if fingerprint[0] == "0":
        lexicon = Lexicon(concepts=extract.DEFAULT_LEXICON, source="file", head=head,
                          version=extract.pipeline_version(extract.DEFAULT_LEXICON, head=head))
    else:
        concepts = lexicon_from_database()
        prepared = extract.prepare_lexicon(concepts)
        lexicon = Lexicon(concepts=concepts, version=prepared.version(head), source="database", head=head,
                          prepared=prepared)
    with _lock:
        _cache["lexicon"], _cache["fingerprint"] = lexicon, fingerprint
    return lexicon


def lexicon_export() -> dict[str, Any]:
    """The active database lexicon as the content of a lexicon file."""
    return {"version": 1, "concepts": lexicon_from_database()}


# --- writing ------------------------------------------------------------------------------


def lexicon_check(concepts: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every problem of a lexicon in the JSON form (empty when it is well formed): what
    ``nlp.extract.validate_lexicon`` checks, plus code formats and terms shared by two concepts."""
    from .extract import LexiconError, validate_lexicon

    try:
        validate_lexicon(list(concepts))
    except LexiconError as exc:
        return [str(exc)]
    problems = []
    owner: dict[str, str] = {}
    for concept in concepts:
        cid = concept["id"]
        if not re.fullmatch(r"[-a-zA-Z0-9_]+", cid):
            problems.append(f"{cid}: an id holds only letters, digits, hyphens and underscores")
        for text in [*concept.get("synonyms", []), *concept.get("abbreviations", [])]:
            problem = term_problem(text)
            if problem:
                problems.append(f"{cid}: {problem}")
                continue
            other = owner.setdefault(term_key(text), cid)
            if other != cid:
                problems.append(f"{cid}: {text!r} is already a term of {other}")
        for code in concept.get("codes", []):
            problem = code_problem(code["system"], str(code["code"]))
            if problem:
                problems.append(f"{cid}: {problem}")
    return problems


@transaction.atomic
def lexicon_load(concepts: Sequence[Mapping[str, Any]], *, replace: bool = False) -> dict[str, int]:
    """Add the concepts the database lacks (by id), in order; with ``replace``, also set the
    concepts it has to the given content (their terms and codes too). Concepts absent from
    ``concepts`` are left alone. Nothing is written when any concept is malformed. Returns
    counts: added, replaced, unchanged."""
    current = {c["id"]: c for c in lexicon_from_database_all()}
    given = {str(c.get("id")) for c in concepts if isinstance(c, Mapping)}
    # Checked together with the concepts already stored: a term may name one concept only.
    problems = lexicon_check([*(c for cid, c in current.items() if cid not in given), *concepts])
    if problems:
        raise LexiconDataError("; ".join(problems[:20]) + (f" (and {len(problems) - 20} more)" if len(problems) > 20
                                                            else ""))
    existing = {c.concept_id: c for c in LexiconConcept.objects.all()}
    counts = {"added": 0, "replaced": 0, "unchanged": 0}
    for data in concepts:
        row = existing.get(data["id"])
        if row is not None and (not replace or _same(current.get(data["id"]), data, row)):
            counts["unchanged"] += 1
            continue
        if row is None:
            row = LexiconConcept.objects.create(concept_id=data["id"], kind=data["kind"], preferred=data["preferred"])
            counts["added"] += 1
        else:
            row.kind, row.preferred, row.active = data["kind"], data["preferred"], True
            row.save()
            row.terms.all().delete()
            row.codes.all().delete()
            counts["replaced"] += 1
        LexiconTerm.objects.bulk_create(
            [LexiconTerm(concept=row, term_type=LexiconTerm.Type.SYNONYM, text=t) for t in data.get("synonyms", [])]
            + [LexiconTerm(concept=row, term_type=LexiconTerm.Type.ABBREVIATION, text=t)
               for t in data.get("abbreviations", [])]
        )
        LexiconCode.objects.bulk_create(
            [LexiconCode(concept=row, system=c["system"], code=str(c["code"]), display=c.get("display", ""))
             for c in data.get("codes", [])]
        )
    return counts


def lexicon_from_database_all() -> list[dict[str, Any]]:
    """Like ``lexicon_from_database`` but with inactive concepts too (for checks across all)."""
    rows = LexiconConcept.objects.order_by("pk").prefetch_related("terms", "codes")
    out = []
    for row in rows:
        terms = list(row.terms.all())
        out.append({
            "id": row.concept_id, "kind": row.kind, "preferred": row.preferred,
            "synonyms": [t.text for t in terms if t.term_type == LexiconTerm.Type.SYNONYM],
            "abbreviations": [t.text for t in terms if t.term_type == LexiconTerm.Type.ABBREVIATION],
            "codes": [{"system": c.system, "code": c.code, "display": c.display} for c in row.codes.all()],
        })
    return out


def _same(current: Mapping[str, Any] | None, data: Mapping[str, Any], row: LexiconConcept) -> bool:
    if current is None or not row.active:
        return False
    wanted = {"synonyms": [], "abbreviations": [], "codes": [], **data}
    wanted["codes"] = [{"display": "", **c, "code": str(c["code"])} for c in wanted["codes"]]
    return all(current[key] == wanted[key] for key in ("kind", "preferred", "synonyms", "abbreviations", "codes"))
