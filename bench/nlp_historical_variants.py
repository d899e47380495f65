#!/usr/bin/env python
"""Experiment: three more feature ideas for the historical head, each measured by nested grouped CV
repeated over fold seeds.

    .venv/bin/python bench/nlp_historical_variants.py [--data-dir DIR] [--seeds 20261125,1,2,3,4]
                                                     [--variant base|time|middle|bare ...]

The shipped historical head (``nlp.assertion.head``) sees the rules' flags and cue features and
the frozen MiniLM last-layer means of the mention and the words either side. Each variant adds
features to those, then runs the same nested CV (``head.nested_cv``: every head and its settings
chosen by inner folds of the training rows) for each fold seed:

- ``base``: nothing added (what ``bench/nlp_eval.py --repeats`` measures);
- ``time``: the ConText annotation guideline's definition (Chapman et al.; Harkema et al., J Biomed
  Inform 2009;42:839-51: historical = began more than 14 days before the encounter) as two
  features: a time expression in the mention's window of at most 14 days ("2 days ago", "for 24
  hours", "yesterday") or of more ("eight years ago", "for many years", "childhood");
- ``middle``: the same three means from MiniLM's middle layer (3 of 6) beside the last layer's;
- ``bare``: the mention's own last-layer mean again, kept only for mentions that are nearly the
  whole sentence (a bare list item such as "HYPERLIPIDEMIA."), so that a linear head can learn
  which conditions such items, cut from problem lists, tend to be past ones.

Prints per variant the historical F1 per seed, mean and standard deviation; changes nothing in the
project. Measured 2026-11-26 (5 seeds, 2-core machine, about 1 minute per variant):
base 0.792 +- 0.007, time 0.790 +- 0.006, middle 0.783 +- 0.009, bare 0.775 +- 0.010: none adopted.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.nlp_eval import default_data_dir  # noqa: E402
from nlp.assertion import head as heads  # noqa: E402
from nlp.assertion.cv import Counts  # noqa: E402
from nlp.assertion.encoder import MAX_TOKENS, marked, window  # noqa: E402
from nlp.assertion.features import NAMES  # noqa: E402

VARIANTS = ("base", "time", "middle", "bare")
_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
            "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
            "thirty": 30, "several": 3, "few": 3, "couple of": 2, "couple": 2, "many": 10, "multiple": 3}
_DAYS = {"minute": 1 / 1440, "min": 1 / 1440, "hour": 1 / 24, "hr": 1 / 24, "day": 1, "week": 7, "wk": 7,
         "month": 30, "mo": 30, "year": 365, "yr": 365, "decade": 3650}
_QUANTITY = re.compile(
    r"\b(\d+(?:\.\d+)?|" + "|".join(sorted(_NUMBERS, key=len, reverse=True)) + r")[\s-]+("
    + "|".join(sorted(_DAYS, key=len, reverse=True)) + r")s?\b",
    re.IGNORECASE,
)
_RECENT = re.compile(r"\b(?:yesterday|last\s+night|this\s+morning|today|tonight|overnight|this\s+evening)\b", re.I)
_PAST = re.compile(r"\b(?:childhood|as\s+a\s+(?:child|teenager|youth)|last\s+year|for\s+years|many\s+years|years)\b",
                   re.I)
MIDDLE_LAYER = 3


def time_features(text: str, start: int, end: int) -> list[float]:
    """[a time expression of at most 14 days, one of more] in the mention's window."""
    piece, _, _ = window(text, start, end)
    recent, past = bool(_RECENT.search(piece)), bool(_PAST.search(piece))
    for match in _QUANTITY.finditer(piece):
        amount = match.group(1).lower()
        days = (float(amount) if amount[0].isdigit() else _NUMBERS[amount]) * _DAYS[match.group(2).lower()]
        past, recent = past or days > 14, recent or days <= 14
    return [float(recent), float(past)]


def middle_layer_means(rows, encoder) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Target / left / right means of MiniLM's layer ``MIDDLE_LAYER``, as the encoder's last-layer ones."""
    import torch

    out = []
    items = [marked(row.sentence, row.start, row.end) for row in rows]
    for lo in range(0, len(items), 64):
        batch = items[lo : lo + 64]
        enc = encoder.tokenizer([t for t, _, _ in batch], padding=True, truncation=True, max_length=MAX_TOKENS,
                                return_offsets_mapping=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping").numpy()
        with torch.inference_mode():
            hidden = encoder.model(**enc, output_hidden_states=True).hidden_states[MIDDLE_LAYER].float().numpy()
        mask = enc["attention_mask"].numpy().astype(bool)
        for b, (_, s, e) in enumerate(batch):
            tok_start, tok_end = offsets[b, :, 0], offsets[b, :, 1]
            real = mask[b] & (tok_end > tok_start)
            parts = (real & (tok_start < e) & (tok_end > s), real & (tok_end <= s - 2), real & (tok_start >= e + 2))
            out.append(np.concatenate([hidden[b, p].mean(axis=0) if p.any() else np.zeros(hidden.shape[-1])
                                       for p in parts]))
    return np.asarray(out, dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--seeds", default="20261125,1,2,3,4")
    parser.add_argument("--variant", choices=VARIANTS, action="append", help="default: all four")
    args = parser.parse_args()
    from nlp.assertion import train as training
    from nlp.assertion.data import load_negex
    from nlp.assertion.encoder import Encoder

    rows = load_negex((args.data_dir or default_data_dir()) / "nlp" / "negex-dev.tsv").rows
    encoder = Encoder()
    dev = training.dev_features(rows, encoder)
    gold, rule_flag = dev.gold("historical"), dev.rule_flag("historical")
    seeds = [int(s) for s in args.seeds.split(",")]
    for variant in args.variant or VARIANTS:
        encoded, rules = dev.encoded, dev.rules
        if variant == "time":
            rules = np.hstack([rules, np.asarray([time_features(r.sentence, r.start, r.end) for r in rows], np.float32)])
        elif variant == "middle":
            encoded = np.hstack([encoded, middle_layer_means(rows, encoder)])
        elif variant == "bare":
            bare = (dev.rules[:, NAMES.index("mention_fraction")] > 0.8).astype(np.float32)[:, None]
            encoded = np.hstack([encoded, dev.encoded[:, : encoder.info.hidden] * bare])
        f1s = []
        for seed in seeds:
            result = heads.nested_cv(encoded, rules, rule_flag, gold, dev.groups, dev.strata, seed=seed)
            f1s.append(Counts.of(gold, result.combined).f1)
        print(f"{variant:<7} historical F1 mean {np.mean(f1s):.3f} sd {np.std(f1s):.3f}: "
              + " ".join(f"{f:.3f}" for f in f1s), flush=True)


if __name__ == "__main__":
    main()
