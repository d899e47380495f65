"""Value-set membership (pure Python, no Django): which of a patient's codes belong to a set.

A ``Members`` is one value set compiled for matching: exact codes per system (with the "is-a"
descendants already expanded from ``ConceptIsA``), code prefixes per system (ICD-10-CM ``E11``
covers ``E11.9``), and names to find in a display text (whole words, case-insensitive), so a
medication is recognised by its RxNorm ingredient or product code or by its name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Common spellings of the systems in incoming records, mapped to the canonical URIs.
SYSTEM_ALIASES = {
    "http://www.nlm.nih.gov/research/umls/rxnorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "urn:oid:2.16.840.1.113883.6.88": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "urn:oid:2.16.840.1.113883.6.96": "http://snomed.info/sct",
    "urn:oid:2.16.840.1.113883.6.90": "http://hl7.org/fhir/sid/icd-10-cm",
    "http://hl7.org/fhir/sid/icd-10": "http://hl7.org/fhir/sid/icd-10-cm",
    "urn:oid:2.16.840.1.113883.6.1": "http://loinc.org",
}


def canonical_system(system: str) -> str:
    return SYSTEM_ALIASES.get(system, system)


@dataclass
class Members:
    slug: str
    kind: str = "other"
    dimension: str = ""
    codes: dict[str, frozenset[str]] = field(default_factory=dict)
    prefixes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    names: tuple[str, ...] = ()
    _name_re: re.Pattern[str] | None = field(default=None, repr=False)
    flat_codes: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        self.flat_codes = tuple(sorted({code for codes in self.codes.values() for code in codes}))
        if self.names:
            self._name_re = re.compile(r"\b(?:" + "|".join(re.escape(n.lower()) for n in self.names) + r")\b")

    def all_codes(self) -> set[str]:
        return {code for codes in self.codes.values() for code in codes}

    def matches(self, system: str, code: str, display: str = "") -> bool:
        system = canonical_system(system)
        if code:
            if code in self.codes.get(system, ()):
                return True
            prefixes = self.prefixes.get(system)
            if prefixes and code.startswith(prefixes):
                return True
        return bool(self._name_re is not None and display and self._name_re.search(display.lower()))

    def matches_code_any_system(self, code: str) -> bool:
        """For observation codes, which are LOINC in practice but not always labelled so."""
        return any(code in codes for codes in self.codes.values())


ValueSetIndex = dict[str, Members]
