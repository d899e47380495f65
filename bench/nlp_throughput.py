#!/usr/bin/env python
"""Throughput: notes per second on the MTSamples notes, the project's rule path beside two baselines.

    .venv/bin/python bench/nlp_throughput.py [--data-dir DIR] [--limit N] [--warmup K]
    .venv/bin/python bench/nlp_throughput.py --long [--long-chars N]

Reads CDSS_DATA_DIR/nlp/mtsamples.csv (``--data-dir``, else the CDSS_DATA_DIR environment
variable, else ../shared/data next to the project; text column ``transcription``) and times, in
ONE process (this one; no worker pool, no spaCy ``n_process``), over the same notes in file order:

  A. medspaCy's default pipeline (``medspacy.load()``: PyRuSH sentences, target matcher, ConText
     with its default rules);
  B. medspaCy with spaCy's rule-based ``sentencizer`` instead of PyRuSH, target matcher, ConText;
  P. the project's rule path, ``nlp.extract.extract(text, assertion=False)`` (markup masking,
     sections, concepts, ConText with the project's rules, medications, allergies);
  T. the whole pipeline with the transformer stage, ``nlp.extract.extract(text)``: P, then the
     assertion classifier (MiniLM features, per-flag heads) on the candidate mentions
     (problems, symptoms, findings, procedures), one classifier call per note, under
     ``torch.inference_mode``; device ``cuda`` when present, else CPU with
     ``CDSS_NLP_TORCH_THREADS`` threads (default min(4, CPUs)).

  Tb. T as the ``nlp`` job runs it: ``nlp.extract.extract_batch`` over 32 notes at a time, the
     candidate mentions of all of them classified in one call (the same facts as T).

Both baselines get the same target rules as the project (``nlp.extract._target_rules`` over
nlp/lexicon.json), so all three look for the same concepts. Each pipeline is built and warmed up
on the first ``--warmup`` notes before timing. Empty notes are skipped (and counted). PyRuSH's
loguru logger is disabled (it logs note text). Prints figures; asserts nothing.

``--long`` times instead ONE long note: the MTSamples notes joined by blank lines up to
``--long-chars`` (default 1,000,000), through the rule path read in chunks of
``nlp.extract.CHUNK_CHARS`` and in chunks of 100,000 characters (the former chunk size), and
checks that both give the same facts. Measured 2026-11-26, 2-core machine shared with other
work: 1,000,000 characters of MTSamples, 2.1 s in 2 kB chunks (561) and 3.6 s in 100 kB chunks
(11), the same 645 facts. A note dense with mentions ("Denies chest pain. History of HTN, DM and
CAD. Mother had breast cancer." repeated; not timed here) shows the difference best: 200 kB in
6.3 s in 2 kB chunks, unfinished after 280 s in 100 kB ones; 1 MB (67,565 facts) in 31 s. After
the rule path's speed-ups of the same day (nlp/README.md, Throughput), run twice each,
alternated with the code before them: 1.1 s and 2.7-2.9 s (before: 2.3 s and 3.8-4.3 s), and
200 kB dense (13,699 facts) in 2.1 s (before: 4.0-4.3 s).

Measured 2026-11-26 (idle 2-core machine, ``--limit 300``, torch 1 thread), with Tb and the CPU's
encoder batches of 16: A 14.2, B 94.8, P 313.4, T 46.5, Tb 54.3 notes/s (Tb/T 1.17x; with batches
of 64 Tb had been 35.7 against T 44.7).

Measured 2026-11-25, first 500 notes, 2-core machine shared with other work (another process at
~200% CPU), torch 1 thread: A 10.6, B 64.6, P 90.4, T 31.7 notes/s (T/A 2.99x, T/B 0.49x, T/P
0.35x; P/B 1.40x). No GPU was available for the ">= 200 notes/s on a GPU" figure.

Measured 2026-11-26, first 300 notes, same kind of machine, shared and noisy (load average 3 to
4 on 2 cores in some runs), torch 1 thread: four runs of the code before that day's rule-path
speed-ups alternated with four runs of the code after them (notes/s, before / after):
A 10.9, 9.7, 13.8, 11.3 / 9.8, 9.5, 10.9, 9.2; B 91.7, 60.6, 96.6, 65.7 / 62.3, 74.5, 97.3, 69.4;
P 154.6, 94.5, 104.0, 101.4 / 206.9, 324.0, 342.2, 296.1; T 40.1, 25.8, 25.5, 26.1 / 29.4, 47.7,
30.5, 38.6; P/B 1.69, 1.56, 1.08, 1.54 / 3.32, 4.35, 3.52, 4.27. In the quietest pair of runs
(before the last of those changes, which matters to notes dense with mentions only): B 88.5 and
95.3 / 97.2 and 94.5, P 135.4 and 147.1 / 341.2 and 317.5 (P/B 1.53 and 1.54 / 3.51 and 3.36),
T 38.6 and 41.3 / 46.2 and 46.2.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Before medspaCy / PyRuSH are imported: PyRuSH logs every sentence (patient text) at DEBUG
# through loguru's default stderr handler. nlp.pipeline does the same on import.
try:
    from loguru import logger as _loguru_logger

    _loguru_logger.disable("PyRuSH")
except ImportError:  # pragma: no cover - loguru comes with PyRuSH
    pass
for _name in ("PyRuSH", "PyRuSH.RuSH", "PyRuSH.PyRuSHSentencizer", "medspacy"):
    logging.getLogger(_name).setLevel(logging.WARNING)

TEXT_COLUMN = "transcription"

# The issue's goals (issue 5, "Measures").
GOAL_RULE_PATH = "rule path at least as fast as the faster baseline"
GOAL_TRANSFORMER_CPU = 20.0  # notes/s, whole pipeline with the transformer stage, on CPU
GOAL_TRANSFORMER_GPU = 200.0  # notes/s, same, on a GPU
ISSUE_BASELINE_A = 13.0  # notes/s the issue quotes for medspaCy's defaults
ISSUE_BASELINE_B = 100.0  # notes/s the issue quotes for medspaCy with spaCy's sentencizer


@dataclass
class Notes:
    texts: list[str]  # non-empty notes, in file order
    rows: int  # rows in the file
    empty: int  # rows whose text is empty or blank (skipped)


@dataclass
class Timing:
    name: str
    n: int
    chars: int
    seconds: float
    per_note_ms: list[float]
    found: int  # concept mentions (baselines: doc.ents; project: facts)
    build_s: float
    warmup_s: float

    @property
    def notes_per_s(self) -> float:
        return self.n / self.seconds if self.seconds else 0.0

    @property
    def chars_per_s(self) -> float:
        return self.chars / self.seconds if self.seconds else 0.0

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.per_note_ms) if self.per_note_ms else 0.0

    @property
    def p95_ms(self) -> float:
        if not self.per_note_ms:
            return 0.0
        ordered = sorted(self.per_note_ms)
        return ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]


def default_data_dir() -> Path:
    return Path(os.environ.get("CDSS_DATA_DIR") or ROOT.parent / "shared" / "data")


def load_notes(path: Path) -> Notes:
    csv.field_size_limit(sys.maxsize)
    texts: list[str] = []
    rows = empty = 0
    with path.open(encoding="utf-8", newline="") as fh:
        for rec in csv.DictReader(fh):
            rows += 1
            text = rec.get(TEXT_COLUMN) or ""
            if not text.strip():
                empty += 1
                continue
            texts.append(text)
    return Notes(texts=texts, rows=rows, empty=empty)


# --- the three pipelines: each a builder returning ``process(text) -> mentions found`` ------


def _baseline(sentencizer: str) -> Callable[[str], int]:
    import medspacy

    from nlp.extract import DEFAULT_LEXICON, _target_rules

    if sentencizer == "pyrush":
        nlp = medspacy.load()  # medspaCy tokenizer, PyRuSH, target matcher, ConText (default rules)
    else:
        nlp = medspacy.load(medspacy_enable=["medspacy_tokenizer"])
        nlp.add_pipe("sentencizer")
        nlp.add_pipe("medspacy_target_matcher")
        nlp.add_pipe("medspacy_context")
    nlp.get_pipe("medspacy_target_matcher").add(_target_rules(nlp, DEFAULT_LEXICON))

    def process(text: str) -> int:
        return len(nlp(text).ents)

    process.pipe_names = list(nlp.pipe_names)  # type: ignore[attr-defined]
    return process


def _project(assertion: bool) -> Callable[[str], int]:
    from nlp.extract import DEFAULT_LEXICON, _get_pipeline, extract, pipeline_version

    # build now (extract() builds it lazily; one pipeline per rules + lexicon version)
    _get_pipeline(DEFAULT_LEXICON, pipeline_version(DEFAULT_LEXICON, assertion=False))
    if assertion:
        from nlp.assertion.context import get_classifier

        classifier = get_classifier()  # load the encoder and heads now, not in the timed loop
        _STAGE_INFO["device"] = classifier.encoder.device
        import torch

        _STAGE_INFO["threads"] = torch.get_num_threads()

    def process(text: str) -> int:
        facts = extract(text, assertion=assertion)["facts"]
        if assertion:
            _CLASSIFIED["facts"] += sum(1 for f in facts if f["stage"].endswith("+classifier"))
        return len(facts)

    return process


def _project_batched() -> Callable[[str], int]:
    """T as the ``nlp`` job runs it: ``nlp.extract.extract_batch`` over ``BATCH_NOTES`` notes at a
    time, their candidate mentions classified together."""
    from nlp.extract import extract_batch

    _project(True)  # builds the pipeline and loads the classifier

    def process(texts: Sequence[str]) -> int:  # type: ignore[misc]
        found = 0
        for result in extract_batch(texts):
            if isinstance(result, Exception):
                raise result
            _CLASSIFIED["facts"] += sum(1 for f in result["facts"] if f["stage"].endswith("+classifier"))
            found += len(result["facts"])
        return found

    process.batch = BATCH_NOTES  # type: ignore[attr-defined]
    return process  # type: ignore[return-value]


BATCH_NOTES = 32
_STAGE_INFO: dict[str, object] = {}
_CLASSIFIED = {"facts": 0}


PIPELINES: dict[str, Callable[[], Callable[[str], int]]] = {
    "A medspaCy default (PyRuSH)": lambda: _baseline("pyrush"),
    "B medspaCy + spaCy sentencizer": lambda: _baseline("rule"),
    "P project rule path extract()": lambda: _project(False),
    "T project + transformer stage": lambda: _project(True),
    "Tb T, notes batched (the job)": _project_batched,
}


def run(name: str, build: Callable[[], Callable[[str], int]], texts: Sequence[str], warmup: Sequence[str]) -> Timing:
    t0 = time.perf_counter()
    process = build()
    build_s = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\[W036\]")
        t0 = time.perf_counter()
        batch = int(getattr(process, "batch", 0))
        groups = [texts[i : i + batch] for i in range(0, len(texts), batch)] if batch else [[t] for t in texts]
        call: Callable[[Sequence[str]], int] = process if batch else (lambda group: process(group[0]))  # type: ignore[assignment]
        if warmup:
            for group in [warmup] if batch else [[t] for t in warmup]:
                call(group)
        warmup_s = time.perf_counter() - t0
        per_note: list[float] = []
        found = 0
        start = time.perf_counter()
        for group in groups:
            t = time.perf_counter()
            found += call(group)
            per_note.extend([(time.perf_counter() - t) * 1000.0 / len(group)] * len(group))
        seconds = time.perf_counter() - start
    timing = Timing(
        name=name,
        n=len(texts),
        chars=sum(len(t) for t in texts),
        seconds=seconds,
        per_note_ms=per_note,
        found=found,
        build_s=build_s,
        warmup_s=warmup_s,
    )
    pipes = getattr(process, "pipe_names", None)
    suffix = f"  pipes={pipes}" if pipes else ""
    print(f"  done: {name}: {timing.notes_per_s:.1f} notes/s in {seconds:.1f} s{suffix}", flush=True)
    return timing


def _worker(key: str, texts: Sequence[str], warmup: Sequence[str], ready, go, results) -> None:
    """One worker process of ``--processes N``: its own pipeline (and encoder), its share of the notes."""
    process = PIPELINES[key]()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\[W036\]")
        for text in warmup:
            process(text)
        ready.put(os.getpid())
        go.wait()
        found = 0
        per_note: list[float] = []
        for text in texts:
            t = time.perf_counter()
            found += process(text)
            per_note.append((time.perf_counter() - t) * 1000.0)
    results.put((found, per_note, dict(_STAGE_INFO), _CLASSIFIED["facts"]))


def run_parallel(key: str, texts: Sequence[str], warmup: Sequence[str], processes: int) -> Timing:
    """``processes`` worker processes (spawned: one pipeline and one encoder each, sharing the GPU when
    there is one), notes dealt round-robin; the clock runs from the moment every worker is built and
    warmed up until the last one has finished its share."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    t0 = time.perf_counter()
    workers = [
        ctx.Process(target=_worker, args=(key, list(texts[i::processes]), list(warmup), ready, go, results))
        for i in range(processes)
    ]
    for w in workers:
        w.start()
    for _ in workers:
        ready.get()
    build_s = time.perf_counter() - t0
    start = time.perf_counter()
    go.set()
    found = 0
    per_note: list[float] = []
    for _ in workers:
        f, ms, info, classified = results.get()
        found += f
        per_note.extend(ms)
        _STAGE_INFO.update(info)
        _CLASSIFIED["facts"] += classified
    seconds = time.perf_counter() - start
    for w in workers:
        w.join()
    timing = Timing(name=f"{key} x{processes} processes", n=len(texts), chars=sum(len(t) for t in texts),
                    seconds=seconds, per_note_ms=per_note, found=found, build_s=build_s, warmup_s=0.0)
    print(f"  done: {timing.name}: {timing.notes_per_s:.1f} notes/s in {seconds:.1f} s", flush=True)
    return timing


def _versions() -> str:
    out = [f"Python {platform.python_version()}"]
    for module in ("spacy", "medspacy", "PyRuSH"):
        try:
            mod = __import__(module)
            out.append(f"{module} {getattr(mod, '__version__', '?')}")
        except ImportError:
            out.append(f"{module} absent")
    return ", ".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=None, help="time the first N non-empty notes (default: all)")
    parser.add_argument("--warmup", type=int, default=5, help="notes each pipeline sees before timing (default 5)")
    parser.add_argument(
        "--processes",
        type=int,
        default=0,
        help="after the one-process table, also time P and T with N worker processes (0: skip), as a "
        "worker host with N prefork processes would run them (a GPU is shared by all of them)",
    )
    parser.add_argument("--long", action="store_true", help="time one long note, chunk sizes side by side")
    parser.add_argument("--long-chars", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    path = (args.data_dir or default_data_dir()) / "nlp" / "mtsamples.csv"
    notes = load_notes(path)
    if args.long:
        long_note(notes.texts, args.long_chars)
        return
    texts = notes.texts[: args.limit] if args.limit is not None else notes.texts
    warmup = notes.texts[: max(0, args.warmup)]
    chars = sum(len(t) for t in texts)
    print(
        f"{path}: {notes.rows} notes; empty (skipped, not timed): {notes.empty}; "
        f"timed: {len(texts)} notes in file order, {chars:,} chars (mean {chars / max(1, len(texts)):.0f})"
    )
    print(
        f"one process (pid {os.getpid()}), sequential, one note per call; "
        f"{os.cpu_count()} CPUs visible; {platform.processor() or platform.machine()}; {_versions()}"
    )
    print(f"warm-up: first {len(warmup)} notes through each pipeline before timing (also part of the timed set)")
    results = [run(name, build, texts, warmup) for name, build in PIPELINES.items()]

    print()
    header = (
        f"{'pipeline':<32} {'notes/s':>8} {'chars/s':>10} {'mean ms':>8} {'p95 ms':>8} {'mentions':>9} {'build s':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:<32} {r.notes_per_s:>8.1f} {r.chars_per_s:>10,.0f} {r.mean_ms:>8.1f} {r.p95_ms:>8.1f}"
            f" {r.found:>9} {r.build_s:>8.1f}"
        )
    a, b, p, t, tb = results
    print("(mentions: baselines count target-matcher entities; the project counts facts after its own filtering)")
    print(
        f"transformer stage: device {_STAGE_INFO.get('device')}, torch threads {_STAGE_INFO.get('threads')}; "
        f"facts decided by the classifier in the timed run (incl. warm-up notes): {_CLASSIFIED['facts']}"
    )

    print()
    ratio_a = p.notes_per_s / a.notes_per_s if a.notes_per_s else float("nan")
    ratio_b = p.notes_per_s / b.notes_per_s if b.notes_per_s else float("nan")
    print(f"ratio project / baseline A (PyRuSH):      {ratio_a:.2f}x")
    print(f"ratio project / baseline B (sentencizer): {ratio_b:.2f}x")
    print(f"ratio transformer path / baseline A:      {t.notes_per_s / a.notes_per_s:.2f}x")
    print(f"ratio transformer path / baseline B:      {t.notes_per_s / b.notes_per_s:.2f}x")
    print(f"ratio transformer path / rule path:       {t.notes_per_s / p.notes_per_s:.2f}x")
    print(f"ratio batched transformer path / T:       {tb.notes_per_s / t.notes_per_s:.2f}x "
          f"({BATCH_NOTES} notes a batch, as the nlp job reads them)")
    print(f"issue's reference figures: baseline A about {ISSUE_BASELINE_A:.0f} notes/s, B about {ISSUE_BASELINE_B:.0f}")

    print()
    print("goals (issue 5):")
    faster = max(a, b, key=lambda r: r.notes_per_s)
    met = "MET" if p.notes_per_s >= faster.notes_per_s else "NOT MET"
    print(
        f"  {GOAL_RULE_PATH}: project {p.notes_per_s:.1f} vs {faster.name.split()[0]} "
        f"{faster.notes_per_s:.1f} notes/s -> {met} ({p.notes_per_s / faster.notes_per_s:.2f}x)"
    )
    on_gpu = str(_STAGE_INFO.get("device", "cpu")).startswith("cuda")
    goal = GOAL_TRANSFORMER_GPU if on_gpu else GOAL_TRANSFORMER_CPU
    for r in (t, tb):
        met = "MET" if r.notes_per_s >= goal else "NOT MET"
        print(
            f"  whole pipeline with the transformer stage >= {goal:.0f} notes/s on {'GPU' if on_gpu else 'CPU'} "
            f"({r.name.split()[0]}): {r.notes_per_s:.1f} notes/s -> {met}"
        )
    other = "CPU" if on_gpu else "GPU"
    print(f"  same on {other}: not measured in this run (device is picked automatically)")

    if args.processes > 0:
        print()
        print(f"{args.processes} worker processes (spawned; each builds its own pipeline; notes dealt round-robin):")
        for key in ("P project rule path extract()", "T project + transformer stage"):
            r = run_parallel(key, texts, warmup, args.processes)
            print(f"  {r.name:<48} {r.notes_per_s:>8.1f} notes/s  mean {r.mean_ms:.1f} ms/note per process")


def long_note(texts: Sequence[str], chars: int) -> None:
    """One note of ``chars`` characters, rule path, the current chunk size beside 100,000."""
    from nlp import extract as extract_module

    parts: list[str] = []
    for text in texts:
        parts.append(text)
        if sum(map(len, parts)) + 2 * len(parts) >= chars:
            break
    note = "\n\n".join(parts)[:chars]
    extract_module.extract("HTN.", assertion=False)  # build the pipeline before timing
    current = extract_module.CHUNK_CHARS
    results = {}
    for size in (current, 100_000):
        extract_module.CHUNK_CHARS = size
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"\[W036\]")
            t0 = time.perf_counter()
            results[size] = extract_module.extract(note, assertion=False)
            seconds = time.perf_counter() - t0
        print(f"{len(note):,} chars, chunks of {size:,} ({len(extract_module._chunks(note))} chunks): "
              f"{seconds:.1f} s, {len(results[size]['facts'])} facts", flush=True)
    extract_module.CHUNK_CHARS = current
    same = results[current]["facts"] == results[100_000]["facts"]
    print(f"same facts in both: {same}")


if __name__ == "__main__":
    main()
