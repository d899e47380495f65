"""The NegEx/ConText annotated sentences (Chapman et al.), as rows with a located mention.

File: ``CDSS_DATA_DIR/nlp/negex-dev.tsv`` (columns id, sentence, concept, label, temporality,
experiencer, span_start, span_end; span -1 where the concept could not be located). Labels:
negated = label "Negated"; historical = temporality "Historical"; hypothetical = temporality
"Not particular" (the annotators' value for conditions that may happen: "return if fever");
family = experiencer "Family member". Rows with span -1 are located by searching the concept's
words in the sentence (case- and whitespace-insensitive); rows where that fails are counted and
skipped. Pure Python (no Django).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

FLAGS = ("negated", "historical", "hypothetical", "family")


@dataclass(frozen=True)
class Row:
    id: int
    sentence: str
    concept: str
    start: int
    end: int
    negated: bool
    historical: bool
    hypothetical: bool
    family: bool

    def label(self, flag: str) -> bool:
        return bool(getattr(self, flag))


@dataclass
class Loaded:
    rows: list[Row]
    located: int = 0  # span -1 in the file, found by searching the concept text
    skipped: int = 0  # span -1 and the concept text was not found


def locate(sentence: str, concept: str) -> tuple[int, int] | None:
    words = concept.split()
    if not words:
        return None
    match = re.search(r"\s+".join(re.escape(w) for w in words), sentence, flags=re.IGNORECASE)
    return (match.start(), match.end()) if match else None


def load_negex(path: Path) -> Loaded:
    """The file's rows, each with a usable span; ValueError naming the line for a malformed row."""
    out = Loaded(rows=[])
    with path.open(encoding="utf-8", newline="") as fh:
        for line_no, rec in enumerate(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE), start=2):
            try:
                start, end = int(rec["span_start"]), int(rec["span_end"])
                row_id = int(rec["id"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path.name} line {line_no}: bad id or span ({type(exc).__name__})") from exc
            if start < 0 or end <= start:
                found = locate(rec["sentence"], rec["concept"])
                if found is None:
                    out.skipped += 1
                    continue
                start, end = found
                out.located += 1
            out.rows.append(
                Row(
                    id=row_id,
                    sentence=rec["sentence"],
                    concept=rec["concept"],
                    start=start,
                    end=end,
                    negated=rec["label"] == "Negated",
                    historical=rec["temporality"] == "Historical",
                    hypothetical=rec["temporality"] == "Not particular",
                    family=rec["experiencer"] == "Family member",
                )
            )
    return out
