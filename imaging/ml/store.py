"""Files saved in the background while the imaging pipeline goes on (no Django, no torch).

The imaging job saves its heat map PNGs to an object store in packs (``PackSaves``, several PNGs
one after another in one file, each finding naming its PNG's place; ``imaging.jobs.HeatmapStore``;
to a local storage folder the pipeline's encoders write the packs themselves);
``bench/imaging.py --store DIR --store-on threads`` uses the same class with plain files, so its
cost can be measured where Django is not installed (a GPU host's kit).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Self

from .cpuwork import write_new_file

# Threads saving files per job: enough to overlap the round trips of an object store; on local
# disk a save costs a few system calls.
STORE_THREADS = 8
# Overlay PNGs per pack saved to an object store: one write (a PUT) instead of 16, and a pack of
# 16 overlays of at most 128 px (3-30 KB each) is small enough to fetch whole for one of them. The
# pipeline's encoders pack what they encode together (a group of about 16 images).
PACK_PNGS = 16


class BackgroundSaves:
    """``save(name, data)`` on ``threads`` threads, in the background.

    ``submit`` returns at once; ``names`` waits for every save and returns the names written, or,
    if any save failed, removes the ones that were written (``remove``) and raises the first error;
    ``discard`` waits and removes them all. Used as a context manager, the threads end with the
    block, and a block left by an exception discards everything."""

    def __init__(self, save: Callable[[str, bytes], str], remove: Callable[[list[str]], None],
                 threads: int = STORE_THREADS) -> None:
        self._save, self._remove = save, remove
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="imaging-store")
        self.saves: list[Future[str]] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        try:
            if kind is not None:
                self.discard()
        finally:
            self.pool.shutdown(wait=True)

    def submit(self, name: str, data: bytes) -> str:
        self.saves.append(self.pool.submit(self._save, name, data))
        return name

    def names(self) -> list[str]:
        wait(self.saves)
        failed = [exc for exc in (f.exception() for f in self.saves) if exc is not None]
        if failed:
            self.discard()
            raise failed[0]
        return [f.result() for f in self.saves]

    def discard(self) -> None:
        wait(self.saves)
        self._remove([f.result() for f in self.saves if f.exception() is None])
        self.saves = []


class PackSaves(BackgroundSaves):
    """``BackgroundSaves`` of PNGs gathered into packs: ``add`` places a PNG in the current pack
    (a new one, named by ``new_name``, every ``per_pack`` PNGs) and returns the pack's name and the
    PNG's (offset, length) in it; a full pack is saved in the background, the last one by
    ``names`` (or ``flush``). ``discard`` drops the pack being gathered too."""

    def __init__(self, save: Callable[[str, bytes], str], remove: Callable[[list[str]], None],
                 new_name: Callable[[], str], per_pack: int = PACK_PNGS, threads: int = STORE_THREADS) -> None:
        super().__init__(save, remove, threads)
        if per_pack < 1:
            raise ValueError("a pack holds at least one PNG")
        self.new_name, self.per_pack = new_name, per_pack
        self._name = ""
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, png: bytes) -> tuple[str, int, int]:
        if len(self._parts) >= self.per_pack:
            self.flush()
        if not self._parts:
            self._name = self.new_name()
        offset = self._size
        self._parts.append(png)
        self._size += len(png)
        return self._name, offset, len(png)

    def flush(self) -> None:
        if self._parts:
            self.submit(self._name, b"".join(self._parts))
        self._name, self._parts, self._size = "", [], 0

    def names(self) -> list[str]:
        self.flush()
        return super().names()

    def discard(self) -> None:
        self._name, self._parts, self._size = "", [], 0
        super().discard()


def folder_saver(root: Path) -> tuple[Callable[[str, bytes], str], Callable[[list[str]], None]]:
    """``save`` and ``remove`` for plain files under ``root``, created as Django's FileSystemStorage
    creates a new file (``cpuwork.write_new_file``)."""

    def save(name: str, data: bytes) -> str:
        write_new_file(str(root / name), data)
        return name

    def remove(names: list[str]) -> None:
        for name in names:
            (root / name).unlink(missing_ok=True)

    return save, remove
