#!/usr/bin/env python
"""The rule path's output on MTSamples, saved or compared: a check that a change to the extractor's
code (not its rules) leaves every fact as it was.

    .venv/bin/python bench/nlp_identity.py --save FILE [--limit N]      # before the change
    .venv/bin/python bench/nlp_identity.py --compare FILE [--limit N]   # after it

Runs ``nlp.extract.extract(text, assertion=False)`` on the first ``--limit`` (default 1,000)
non-empty notes of CDSS_DATA_DIR/nlp/mtsamples.csv (``--data-dir``) in file order and writes, or
compares with, the whole result of each note (pipeline version, sections, and every field of
every fact: kind, concept, span, section, codes, context flags, stage, medication and allergy
fields). ``--compare`` prints the notes that differ and the first differing facts, and exits 1
if any note differs.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.nlp_throughput import default_data_dir, load_notes  # noqa: E402


def results(texts: Sequence[str]) -> list[dict]:
    from nlp.extract import extract

    out = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\[W036\]")
        for text in texts:
            out.append(extract(text, assertion=False))
    # Through JSON, so a saved file and a fresh run compare alike (tuples become lists).
    return json.loads(json.dumps(out))


def compare(before: list[dict], after: list[dict]) -> int:
    if len(before) != len(after):
        print(f"note counts differ: {len(before)} saved, {len(after)} now")
        return 1
    differing = 0
    facts = sum(len(r["facts"]) for r in before)
    for index, (old, new) in enumerate(zip(before, after, strict=True)):
        if old == new:
            continue
        differing += 1
        if differing > 10:
            continue
        print(f"note {index}: differs")
        for key in ("pipeline_version", "sections"):
            if old[key] != new[key]:
                print(f"  {key}: {old[key]!r} -> {new[key]!r}")
        if len(old["facts"]) != len(new["facts"]):
            print(f"  facts: {len(old['facts'])} -> {len(new['facts'])}")
        shown = 0
        for a, b in zip(old["facts"], new["facts"], strict=False):
            if a != b and shown < 3:
                shown += 1
                print(f"  fact: {a}\n     -> {b}")
    print(f"{len(before)} notes, {facts} facts saved; notes differing: {differing}")
    return 1 if differing else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=1000)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", type=Path)
    group.add_argument("--compare", type=Path)
    args = parser.parse_args(argv)
    notes = load_notes((args.data_dir or default_data_dir()) / "nlp" / "mtsamples.csv")
    texts = notes.texts[: args.limit]
    now = results(texts)
    if args.save:
        args.save.write_text(json.dumps(now), encoding="utf-8")
        print(f"{len(now)} notes, {sum(len(r['facts']) for r in now)} facts -> {args.save}")
        return 0
    return compare(json.loads(args.compare.read_text(encoding="utf-8")), now)


if __name__ == "__main__":
    sys.exit(main())
