"""bench/gpu_kit.py: packs cut to a size limit, put together again byte for byte as they arrive,
corrupt pieces refused with nothing half-written, and the choice of wheels to carry."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest

from bench import gpu_kit


def _sources(tmp_path: Path) -> list[tuple[str, Path]]:
    src = tmp_path / "src"
    src.mkdir()
    npz = src / "pneumoniamnist.npz"
    npz.write_bytes(os.urandom(700))
    notes = src / "mtsamples.csv.gz"
    with gzip.open(notes, "wb") as fh:
        fh.write(b"note_id,transcription\n1,HISTORY: hypertension.\n")
    weights = src / "model.safetensors"
    weights.write_bytes(os.urandom(2600))  # more than two packs of 1,000 bytes by itself
    empty = src / "empty.txt"
    empty.write_bytes(b"")
    return [("data/imaging/pneumoniamnist.npz", npz), ("data/nlp/mtsamples.csv.gz", notes),
            ("encoder/model.safetensors", weights), ("encoder/empty.txt", empty)]


def _arrive(kit: Path, packs: Path, number: int) -> None:
    """The host's kit folder holds only the pack that came with this transfer."""
    shutil.rmtree(kit, ignore_errors=True)
    kit.mkdir()
    shutil.copytree(packs / f"pack-{number}", kit / f"pack-{number}")


def test_packs_arrive_one_at_a_time_and_are_put_together_byte_for_byte(tmp_path: Path, capsys) -> None:
    files = _sources(tmp_path)
    packs = tmp_path / "packs"
    count = gpu_kit.write_packs(packs, files, 1000, "3.12")
    sizes = [sum(p.stat().st_size for p in (packs / f"pack-{n}" / "pieces").iterdir()) for n in range(1, count + 1)]
    assert count == 4 and max(sizes) <= 1000
    manifest = json.loads((packs / "pack-1" / gpu_kit.MANIFEST).read_text())
    assert manifest["packs"] == 4 and len(manifest["files"]) == 4
    assert [p["pack"] for p in manifest["files"][2]["pieces"]] == [1, 2, 3, 4]  # the weights span four packs

    kit, into = tmp_path / "kit", tmp_path / "into"
    _arrive(kit, packs, 1)
    assert gpu_kit.install(kit, into) == 0
    out = capsys.readouterr().out
    assert "ready: imaging data yes; NLP (wheels, encoder, notes) no" in out
    assert (into / "files/data/imaging/pneumoniamnist.npz").read_bytes() == files[0][1].read_bytes()
    assert (into / "files/data/nlp/mtsamples.csv").read_text().startswith("note_id,transcription")
    assert not (into / "files/encoder/model.safetensors").exists()
    assert "CDSS_NLP_ENCODER_DIR" not in (into / "env.sh").read_text()

    for number in (2, 3, 4):
        _arrive(kit, packs, number)
        assert gpu_kit.install(kit, into) == 0
    out = capsys.readouterr().out
    assert "0 file(s) still missing" in out and "NLP (wheels, encoder, notes) yes" in out
    assert (into / "files/encoder/model.safetensors").read_bytes() == files[2][1].read_bytes()
    assert (into / "files/encoder/empty.txt").read_bytes() == b""
    env = (into / "env.sh").read_text()
    assert f"CDSS_NLP_ENCODER_DIR={into / 'files/encoder'}" in env
    assert f"CDSS_DATA_DIR={into / 'files/data'}" in env
    assert "PYTHONPATH" not in env  # no wheels in this kit: nothing installed
    assert not (into / "site").exists()


def test_a_corrupt_piece_is_refused_and_nothing_half_written(tmp_path: Path, capsys) -> None:
    files = _sources(tmp_path)
    packs = tmp_path / "packs"
    gpu_kit.write_packs(packs, files, 1_000_000, "3.12")
    manifest = json.loads((packs / "pack-1" / gpu_kit.MANIFEST).read_text())
    weights = next(e for e in manifest["files"] if e["path"] == "encoder/model.safetensors")
    piece = packs / "pack-1" / "pieces" / weights["pieces"][0]["name"]
    data = bytearray(piece.read_bytes())
    data[100] ^= 0xFF
    piece.write_bytes(bytes(data))
    into = tmp_path / "into"
    assert gpu_kit.install(packs, into) == 1
    assert "is corrupt or foreign" in capsys.readouterr().err
    assert not (into / "pieces" / piece.name).exists()
    assert not (into / "files" / "encoder" / "model.safetensors").exists()

    # The same pack again, intact: taken, and the file put together.
    gpu_kit.write_packs(tmp_path / "again", files, 1_000_000, "3.12")
    assert gpu_kit.install(tmp_path / "again", into) == 0
    assert (into / "files/encoder/model.safetensors").read_bytes() == files[2][1].read_bytes()


def test_install_without_any_pack_says_so(tmp_path: Path, capsys) -> None:
    (tmp_path / "kit").mkdir()
    assert gpu_kit.install(tmp_path / "kit", tmp_path / "into") == 1
    assert "no pack under" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("imported", "base", "carried"),
    [
        ({"spacy": "3.7.5", "numpy": "1.26.4", "torch": "2.14.1", "django": "5.2.19", "Py_RuSH": "1.0.13"},
         ["torch", "numpy", "py-rush"], {"spacy": "3.7.5", "numpy": "1.26.4"}),
        ({"medspacy": "1.3.1", "greenlet": "3.5.6"}, [], {"medspacy": "1.3.1", "numpy": "1.26.4"}),
    ],
)
def test_wheels_to_carry_are_what_the_host_lacks_plus_numpy_1(imported, base, carried) -> None:
    chosen = gpu_kit.wheels_to_carry({gpu_kit.normalise(k): v for k, v in imported.items()}, base)
    assert chosen == carried
