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
  which conditions such items, cut from problem lists, tend to be past ones;
- ``prior`` / ``prior_encoded``: a prior learnt from unlabelled notes, not from NegEx labels: the
  short items of the MTSamples notes' past history lists (PAST MEDICAL / SURGICAL HISTORY...)
  against those of their current lists (CHIEF COMPLAINT, DIAGNOSIS, IMPRESSION, ASSESSMENT...),
  4,692 phrases, a logistic regression over MiniLM's mean of the phrase alone; its log-odds for
  the mention's own text, standardised, added to the rule features (``prior``) or to the encoder
  features (``prior_encoded``). Alone it ranks the dev file's historical mentions with an AUC of
  0.80;
- ``cues_forest`` / ``cues_boosted``: the small rules-and-cues regression of the blend replaced by
  a random forest or gradient-boosted trees over the same features (interactions of cues).

Prints per variant the historical F1 per seed, mean and standard deviation; changes nothing in the
project. Measured 2026-11-26 (5 seeds, 2-core machine, about 1 minute per variant):
base 0.792 +- 0.007, time 0.790 +- 0.006, middle 0.783 +- 0.009, bare 0.775 +- 0.010; later that
day prior 0.770 +- 0.011, prior_encoded 0.790 +- 0.004, cues_forest 0.789 +- 0.013, cues_boosted
0.770 +- 0.024 (about 2 to 4 minutes each): none adopted.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.nlp_eval import default_data_dir  # noqa: E402
from nlp.assertion import head as heads  # noqa: E402
from nlp.assertion.cv import Counts, grouped_folds  # noqa: E402
from nlp.assertion.encoder import MAX_TOKENS, marked, window  # noqa: E402
from nlp.assertion.features import NAMES  # noqa: E402

VARIANTS = ("base", "time", "middle", "bare", "prior", "prior_encoded", "cues_forest", "cues_boosted")
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


# --- prior: past history lists against current lists in unlabelled notes (MTSamples) ---------
_PAST_HEADER = re.compile(r"^(?:PAST\s+(?:MEDICAL\s+|SURGICAL\s+)?HISTORY|MEDICAL\s+HISTORY|SURGICAL\s+HISTORY|PMH|PSH|"
                          r"PAST\s+MEDICAL\s+AND\s+SURGICAL\s+HISTORY|PAST\s+SURGERIES|PREVIOUS\s+SURGERIES|PAST\s+HISTORY)$")
_CURRENT_HEADER = re.compile(
    r"^(?:CHIEF\s+COMPLAINT|(?:PRE|POST)[- ]?OPERATIVE\s+DIAGNOS[EI]S|(?:ADMITTING|ADMISSION|DISCHARGE|FINAL|PRINCIPAL|"
    r"PRIMARY|SECONDARY)?\s*DIAGNOS[EI]S|ASSESSMENT|IMPRESSION|ASSESSMENT\s+AND\s+PLAN|IMPRESSION\s+AND\s+PLAN|"
    r"REASON\s+FOR\s+(?:ADMISSION|CONSULTATION|VISIT|REFERRAL)|PROBLEMS?|PROBLEM\s+LIST|INDICATIONS?(?:\s+FOR\s+\w+)?)$")
_HEADER = re.compile(r"(?:^|[,.]\s*)([A-Z][A-Z /&-]{1,60}?):\s*,?")
_NUMBERED = re.compile(r"(?:^|,)\s*\d{1,2}[.)]\s+")
_LEAD = re.compile(r"^(?:(?:the\s+)?(?:patient|pt|he|she)\s+(?:has|had|is|was)\s+(?:a\s+)?(?:history\s+of\s+)?|"
                   r"(?:significant|positive|notable|remarkable)\s+for\s+|(?:history|hx)\s+of\s+|status\s+post\s+|"
                   r"s/p\s+|includes?\s+|including\s+|also\s+|a\s+|an\s+|and\s+|rule\s+out\s+|possible\s+|probable\s+)+",
                   re.I)
_NOT_ITEM = re.compile(r"(?i)^(?:none|no|negative|noncontributory|unremarkable|denies|unknown|n/a|see|as\s+above|as\s+per|"
                       r"per)\b|^(?:the|however|this|that|these|which|who|risks?|benefits?|patient|in|on|at|of|to|for|"
                       r"from|right|left|bilateral)$")


def list_items(body: str) -> list[str]:
    """Short condition-like items (1 to 5 words, no digits) of a section body."""
    out = []
    for piece in re.split(r"[\n;.]|,|\band\b|\bwith\b", _NUMBERED.sub("\n", body)):
        item = _LEAD.sub("", piece.strip(" ,.:-")).strip(" ,.:-")
        if 1 <= len(item.split()) <= 5 and re.search(r"[A-Za-z]{3}", item) and not re.search(r"\d", item) \
                and not _NOT_ITEM.search(item):
            out.append(item.lower())
    return out


def past_list_phrases(mtsamples: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Phrases of the notes' short or numbered past / current list sections, with their counts."""
    csv.field_size_limit(1 << 30)
    past: Counter[str] = Counter()
    current: Counter[str] = Counter()
    with mtsamples.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            text = row["transcription"] or ""
            headers = list(_HEADER.finditer(text))
            for i, match in enumerate(headers):
                name = re.sub(r"\s+", " ", match.group(1).strip())
                kind = past if _PAST_HEADER.match(name) else current if _CURRENT_HEADER.match(name) else None
                body = text[match.end() : headers[i + 1].start() if i + 1 < len(headers) else len(text)]
                if kind is not None and (len(body) <= 300 or _NUMBERED.search(body)):
                    kind.update(list_items(body))
    phrases = sorted(set(past) | set(current))
    return phrases, np.array([past[p] for p in phrases], float), np.array([current[p] for p in phrases], float)


def prior_feature(rows, encoder, mtsamples: Path) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Standardised log-odds of "a past history item" for each row's mention text alone."""
    from sklearn.linear_model import LogisticRegression

    phrases, past, current = past_list_phrases(mtsamples)
    hidden = encoder.info.hidden
    vectors = encoder.features([(p, 0, len(p)) for p in phrases])[:, :hidden]
    x = np.vstack([vectors, vectors])
    y = np.r_[np.zeros(len(phrases)), np.ones(len(phrases))]
    weight = np.r_[current, past * current.sum() / past.sum()]  # the two classes weigh alike
    keep = weight > 0
    model = LogisticRegression(C=0.1, max_iter=2000).fit(x[keep], y[keep], sample_weight=weight[keep])
    spans = [(r.sentence[r.start : r.end], 0, r.end - r.start) for r in rows]
    score = model.decision_function(encoder.features(spans)[:, :hidden])
    return ((score - score.mean()) / score.std()).astype(np.float32)[:, None]


# --- cues_forest / cues_boosted: trees instead of the blend's cues regression ---------------
def _cues_model(kind: str, rules: np.ndarray, y: np.ndarray, seed: int):  # type: ignore[no-untyped-def]
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    if kind == "cues_forest":
        model = RandomForestClassifier(n_estimators=300, min_samples_leaf=3, class_weight="balanced_subsample",
                                       random_state=seed, n_jobs=1).fit(rules, y.astype(int))
    else:
        weight = np.where(y, (len(y) - y.sum()) / max(1, y.sum()), 1.0)
        model = HistGradientBoostingClassifier(max_depth=3, learning_rate=0.05, max_iter=150, l2_regularization=1.0,
                                               random_state=seed).fit(rules, y.astype(int), sample_weight=weight)
    return lambda r: model.predict_proba(r)[:, 1]


def nested_cv_trees(kind: str, encoded, rules, rule_flag, y, groups, strata, *, seed: int):  # type: ignore[no-untyped-def]
    """``head.nested_cv`` with the blend's cues regression replaced by ``kind``'s trees (the same
    grid, thresholds, modes, folds and margin over the rules)."""
    rule_flag = np.asarray(rule_flag, bool)

    def blended(tr, te, config, s):  # type: ignore[no-untyped-def]
        main = heads.fit_linear(encoded[tr], rules[tr], y[tr], config, seed=s).proba(np.hstack([encoded[te], rules[te]]))
        return 0.5 * main + 0.5 * _cues_model(kind, rules[tr], y[tr], s)(rules[te])

    out = np.zeros(len(y), bool)
    for n, (tr, te) in enumerate(grouped_folds(groups, strata, k=5, seed=seed)):
        inner_seed, yt, ft = seed + 1 + n, y[tr], rule_flag[tr]
        best, chosen = Counts.of(yt, ft).f1 + heads.MIN_GAIN, None
        inner = grouped_folds(groups[tr], strata[tr], k=5, seed=inner_seed)
        cues = np.zeros(len(tr))
        for a, b in inner:
            cues[b] = _cues_model(kind, rules[tr][a], yt[a], inner_seed)(rules[tr][b])
        for config in heads._grid():
            main = np.zeros(len(tr))
            for a, b in inner:
                main[b] = heads.fit_linear(encoded[tr][a], rules[tr][a], yt[a], config, seed=inner_seed).proba(
                    np.hstack([encoded[tr][b], rules[tr][b]]))
            for threshold, mode in itertools.product(heads.THRESHOLDS, ("model", "or")):
                predicted = 0.5 * main + 0.5 * cues >= threshold
                f1 = Counts.of(yt, predicted | ft if mode == "or" else predicted).f1
                if f1 > best + 1e-9:
                    best, chosen = f1, (config, threshold, mode)
        if chosen is None:
            out[te] = rule_flag[te]
            continue
        config, threshold, mode = chosen
        out[te] = blended(tr, te, config, seed) >= threshold
        if mode == "or":
            out[te] |= rule_flag[te]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--seeds", default="20261125,1,2,3,4")
    parser.add_argument("--variant", choices=VARIANTS, action="append", help="default: all")
    args = parser.parse_args()
    from nlp.assertion import train as training
    from nlp.assertion.data import load_negex
    from nlp.assertion.encoder import Encoder

    data_dir = args.data_dir or default_data_dir()
    rows = load_negex(data_dir / "nlp" / "negex-dev.tsv").rows
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
        elif variant in ("prior", "prior_encoded"):
            prior = prior_feature(rows, encoder, data_dir / "nlp" / "mtsamples.csv")
            if variant == "prior":
                rules = np.hstack([rules, prior])
            else:
                encoded = np.hstack([encoded, prior])
        f1s = []
        for seed in seeds:
            if variant.startswith("cues_"):
                predicted = nested_cv_trees(variant, encoded, rules, rule_flag, gold, dev.groups, dev.strata, seed=seed)
            else:
                predicted = heads.nested_cv(encoded, rules, rule_flag, gold, dev.groups, dev.strata, seed=seed).combined
            f1s.append(Counts.of(gold, predicted).f1)
        print(f"{variant:<7} historical F1 mean {np.mean(f1s):.3f} sd {np.std(f1s):.3f}: "
              + " ".join(f"{f:.3f}" for f in f1s), flush=True)


if __name__ == "__main__":
    main()
