"""Cutting a note's text into plain and highlighted pieces for the note page (no Django).

Spans come from the extraction; they may overlap (two stages marking the same words) or fall
outside a text that changed: such spans are left out of the highlighting (the fact is still
listed), never allowed to repeat or lose a character of the note.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Piece(Generic[T]):
    text: str
    item: T | None = None  # the highlighted fact, None for plain text


def note_pieces(text: str, spans: Sequence[tuple[int, int, T]]) -> tuple[list[Piece[T]], list[T]]:
    """The note as pieces whose texts join to ``text`` exactly, and the items whose span could
    not be shown (out of range, empty, or overlapping an earlier one)."""
    pieces: list[Piece[T]] = []
    hidden: list[T] = []
    position = 0
    for start, end, item in sorted(spans, key=lambda s: (s[0], -s[1])):
        if not (0 <= start < end <= len(text)) or start < position:
            hidden.append(item)
            continue
        if start > position:
            pieces.append(Piece(text[position:start]))
        pieces.append(Piece(text[start:end], item))
        position = end
    if position < len(text):
        pieces.append(Piece(text[position:]))
    return pieces, hidden
