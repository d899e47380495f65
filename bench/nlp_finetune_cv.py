#!/usr/bin/env python
"""Experiment: fine-tune MiniLM's top layer(s) for the historical flag, measured by nested grouped CV.

    .venv/bin/python bench/nlp_finetune_cv.py [--data-dir DIR] [--layers 1] [--seed N] [--cache FILE]

The shipped historical head (``nlp.assertion.head``) is a logistic regression over FROZEN
all-MiniLM-L6-v2 features (target / left / right means of the last layer) and the rule and cue
features, blended equally with a rules-and-cues-only regression. This script asks whether
fine-tuning the top ``--layers`` transformer layer(s) helps, in the "linear probe, then fine-tune"
fashion (Kumar et al., "Fine-Tuning can Distort Pretrained Features", ICLR 2022):

1. the bottom layers stay frozen, so their output for every dev row is computed once;
2. per training set, the encoder + rules regression of the shipped head (C 0.1, rule weight 1)
   is fitted on the frozen features and becomes the initial linear head over [target, left,
   right means ; rule features];
3. the top layer(s) and that head are trained together (AdamW, layer lr ``LR_LAYER``, head lr
   ``LR_HEAD``, class-balanced BCE, batch ``BATCH``, dropout as in the model's config);
4. the probability is blended equally with the rules-and-cues-only regression (as shipped).

Choices (epochs 0 = the linear probe alone, ``EPOCHS``; threshold; "model" or "rules OR model";
or the rules) are made by grouped 5-fold CV inside each outer training set only (``MIN_GAIN`` as
in ``nlp.assertion.head``); the figure printed comes from the 5 outer folds. Folds, groups and
seed are those of ``bench/nlp_eval.py``. CPU, ``CDSS_NLP_TORCH_THREADS`` threads (default 2): one
outer fold took 114-117 s on an idle 2-core machine, 225-460 s on a busy one (``--first-fold`` and
``--folds`` run part of them; the folds are deterministic). Measured 2026-11-26: see nlp/README.md
(the inner folds chose the initial head, 0 epochs, in every outer fold run). Prints figures;
changes nothing in the project.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nlp.assertion import head as heads  # noqa: E402
from nlp.assertion.cv import Counts, grouped_folds  # noqa: E402

FLAG = "historical"
EPOCHS = (0, 2, 4)  # checkpoints the inner folds choose from (0: the linear probe alone)
THRESHOLDS = heads.THRESHOLDS
LR_LAYER, LR_HEAD, WEIGHT_DECAY, BATCH = 3e-5, 1e-4, 0.01, 32
LP = heads.Config(mode="model", rule_weight=1.0, c=0.1)


def prepare(data_dir: Path, layers: int, cache: Path | None) -> dict[str, np.ndarray]:
    """Per dev row: the frozen bottom layers' output (padded to MAX_TOKENS), the three part masks,
    the attention mask, the rule features, gold labels, groups and strata."""
    if cache and cache.is_file():
        return dict(np.load(cache))
    import torch

    from nlp.assertion import train as training
    from nlp.assertion.data import load_negex
    from nlp.assertion.encoder import MAX_TOKENS, Encoder, marked

    rows = load_negex(data_dir / "nlp" / "negex-dev.tsv").rows
    encoder = Encoder(device="cpu")
    dev = training.dev_features(rows, encoder)
    prepared = [marked(r.sentence, r.start, r.end) for r in rows]
    enc = encoder.tokenizer(
        [p[0] for p in prepared],
        padding="max_length",
        truncation=True,
        max_length=MAX_TOKENS,
        return_offsets_mapping=True,
        return_tensors="pt",
    )
    offsets = enc.pop("offset_mapping").numpy()
    mask = enc["attention_mask"].numpy().astype(bool)
    parts = np.zeros((len(rows), 3, MAX_TOKENS), np.float32)
    for b, (_, s, e) in enumerate(prepared):
        ts, te = offsets[b, :, 0], offsets[b, :, 1]
        real = mask[b] & (te > ts)
        parts[b, 0] = real & (ts < e) & (te > s)
        parts[b, 1] = real & (te <= s - 2)
        parts[b, 2] = real & (ts >= e + 2)
    hidden = np.zeros((len(rows), MAX_TOKENS, encoder.info.hidden), np.float32)
    with torch.inference_mode():
        for lo in range(0, len(rows), 64):
            out = encoder.model(**{k: v[lo : lo + 64] for k, v in enc.items()}, output_hidden_states=True)
            hidden[lo : lo + 64] = out.hidden_states[-1 - layers].numpy()
    data = {
        "hidden": hidden,
        "parts": parts,
        "mask": mask,
        "rules": dev.rules,
        "encoded": dev.encoded,
        "gold": dev.gold(FLAG),
        "rule_flag": dev.rule_flag(FLAG),
        "groups": dev.groups,
        "strata": dev.strata,
    }
    if cache:
        np.savez(cache, **data)
    return data


class Top:
    """The top layer(s) (copies of MiniLM's) and a linear head over pooled parts + rule features."""

    def __init__(self, base_layers: list, coef: np.ndarray, intercept: float) -> None:
        import torch

        self.layers = torch.nn.ModuleList([copy.deepcopy(layer) for layer in base_layers])
        self.head = torch.nn.Linear(coef.shape[0], 1).double()
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(coef[None, :]))
            self.head.bias.fill_(intercept)

    def logits(self, hidden, mask, parts, rules):
        import torch

        additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        h = hidden
        for layer in self.layers:
            h = layer(h, attention_mask=additive)
            h = h[0] if isinstance(h, tuple) else h
        counts = parts.sum(-1, keepdim=True).clamp(min=1.0)
        pooled = (parts @ h) / counts  # (b, 3, hidden); an empty part is zeros
        x = torch.cat([pooled.flatten(1).double(), rules.double()], dim=1)
        return self.head(x).squeeze(-1)


def train_predict(data, tr, te, base_layers, *, seed: int, epochs=EPOCHS) -> dict[int, np.ndarray]:
    """Probabilities on ``te`` (blended with the cues-only regression) after each epoch count."""
    import torch

    y = data["gold"][tr]
    lp = heads.fit_linear(data["encoded"][tr], data["rules"][tr], y, LP, seed=seed)
    cues = heads.fit_cues(data["encoded"][tr], data["rules"][tr], y, LP, seed=seed)
    p_cues = cues.proba(np.hstack([data["encoded"][te], data["rules"][te]]))
    torch.manual_seed(seed)
    model = Top(base_layers, np.asarray(lp.coef, np.float64), float(lp.intercept))
    t = {k: torch.from_numpy(np.asarray(data[k])) for k in ("hidden", "parts", "mask", "rules")}
    yt = torch.from_numpy(y.astype(np.float64))
    pos = max(1.0, float(y.sum()))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(y) - pos) / pos, dtype=torch.float64))
    opt = torch.optim.AdamW(
        [{"params": model.layers.parameters(), "lr": LR_LAYER}, {"params": model.head.parameters(), "lr": LR_HEAD}],
        weight_decay=WEIGHT_DECAY,
    )
    rng = np.random.RandomState(seed)
    te_t = torch.from_numpy(np.asarray(te))

    def predict() -> np.ndarray:
        model.layers.eval()
        with torch.inference_mode():
            z = model.logits(t["hidden"][te_t], t["mask"][te_t], t["parts"][te_t], t["rules"][te_t])
        return 0.5 * torch.sigmoid(z).numpy() + 0.5 * p_cues

    out = {}
    for epoch in range(max(epochs) + 1):
        if epoch in epochs:
            out[epoch] = predict()
        if epoch == max(epochs):
            break
        model.layers.train()
        order = rng.permutation(len(tr))
        for lo in range(0, len(order), BATCH):
            idx = torch.from_numpy(np.asarray(tr)[order[lo : lo + BATCH]])
            z = model.logits(t["hidden"][idx], t["mask"][idx], t["parts"][idx], t["rules"][idx])
            loss = loss_fn(z, yt[torch.from_numpy(order[lo : lo + BATCH])])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return out


def choose(data, tr, base_layers, *, seed: int) -> tuple[tuple[str, int, float], dict[int, float]]:
    """(mode, epochs, threshold) by grouped 5-fold CV on ``tr`` only; ("rules", 0, 0) unless a
    learned head beats the rules by MIN_GAIN; and the best inner F1 per epoch count (printed only)."""
    y, rule_flag = data["gold"][tr], data["rule_flag"][tr]
    proba = {e: np.zeros(len(tr)) for e in EPOCHS}
    for itr, ite in grouped_folds(data["groups"][tr], data["strata"][tr], k=5, seed=seed):
        for e, p in train_predict(data, tr[itr], tr[ite], base_layers, seed=seed).items():
            proba[e][ite] = p
    best = (Counts.of(y, rule_flag).f1 + heads.MIN_GAIN, ("rules", 0, 0.0))
    per_epoch = dict.fromkeys(EPOCHS, 0.0)
    for e, threshold, mode in itertools.product(EPOCHS, THRESHOLDS, ("model", "or")):
        predicted = proba[e] >= threshold
        f1 = Counts.of(y, predicted | rule_flag if mode == "or" else predicted).f1
        per_epoch[e] = max(per_epoch[e], f1)
        if f1 > best[0] + 1e-9:
            best = (f1, (mode, e, threshold))
    return best[1], per_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("CDSS_DATA_DIR") or ROOT.parent / "shared" / "data")
    )
    parser.add_argument("--layers", type=int, default=1, help="top layers fine-tuned (default 1)")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--cache", type=Path, default=None, help="npz of the frozen bottom layers' outputs")
    parser.add_argument("--folds", type=int, default=5, help="outer folds run (fewer: timing only)")
    parser.add_argument("--first-fold", type=int, default=0, help="skip the outer folds before this one")
    args = parser.parse_args()
    os.environ.setdefault("CDSS_NLP_TORCH_THREADS", "2")
    import torch

    from nlp.assertion.encoder import Encoder

    torch.set_num_threads(int(os.environ["CDSS_NLP_TORCH_THREADS"]))
    t0 = time.perf_counter()
    data = prepare(args.data_dir, args.layers, args.cache)
    base = Encoder(device="cpu").model
    base_layers = list(base.encoder.layer[-args.layers :])
    print(f"prepared {len(data['gold'])} rows in {time.perf_counter() - t0:.0f} s", flush=True)
    gold, rule_flag = data["gold"], data["rule_flag"]
    combined = np.zeros(len(gold), bool)
    fold_of = np.full(len(gold), -1)
    for n, (tr, te) in enumerate(grouped_folds(data["groups"], data["strata"], k=5, seed=args.seed)):
        if n >= args.folds:
            break
        if n < args.first_fold:
            continue
        t1 = time.perf_counter()
        (mode, epochs, threshold), per_epoch = choose(data, tr, base_layers, seed=args.seed + 1 + n)
        if mode == "rules":
            combined[te] = rule_flag[te]
        else:
            proba = train_predict(data, tr, te, base_layers, seed=args.seed, epochs=(epochs,))[epochs]
            combined[te] = proba >= threshold
            if mode == "or":
                combined[te] |= rule_flag[te]
        fold_of[te] = n
        c = Counts.of(gold[te], combined[te])
        print(
            f"outer fold {n}: chose {mode} epochs={epochs} t={threshold:g}; F1 {c.f1:.3f} "
            f"(tp {c.tp} fp {c.fp} fn {c.fn}) "
            f"({time.perf_counter() - t1:.0f} s); inner best F1 by epochs "
            + ", ".join(f"{e}: {f:.3f}" for e, f in per_epoch.items()),
            flush=True,
        )
    done = fold_of >= 0
    rules, ft = Counts.of(gold[done], rule_flag[done]), Counts.of(gold[done], combined[done])
    print(f"{FLAG} ({int(gold[done].sum())} positives), layers fine-tuned: {args.layers}")
    for name, c in (("rules only", rules), ("fine-tuned", ft)):
        print(f"  {name:<11} P {c.precision:.3f} R {c.recall:.3f} F1 {c.f1:.3f} (tp {c.tp} fp {c.fp} fn {c.fn})")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
