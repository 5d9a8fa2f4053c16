"""Per-document values (the daemon channel of each document). GUI thread only.

Krita hands out a new ``Document`` wrapper on every call (``Krita.activeDocument()`` makes one in
``libs/libkis/Krita.cpp``); wrappers of one document compare equal with ``==`` (libkis compares
the ``KisDocument`` behind them) and are unhashable (Krita 5.1.5: "unhashable type: 'Document'").
So neither ``id(doc)`` nor a dict can stand for a document: the wrappers are kept and found by
``==``. A closed document's wrapper points at nothing and equals no open document.
"""

from __future__ import annotations


class PerDocument:
    """A value per document, ``default`` for documents that have none of their own."""

    def __init__(self, default: str):
        self.default = default
        self._entries: list[tuple[object, str]] = []  # (a wrapper of the document, its value)

    def get(self, doc) -> str:
        return next((value for known, value in self._entries if known == doc), self.default)

    def set(self, doc, value: str, open_documents=()) -> None:
        """``doc``'s value (the default removes it); entries of documents that are no longer in
        ``open_documents`` (``Krita.documents()``) are dropped, so closed ones don't pile up."""
        still_open = list(open_documents)
        self._entries = [(known, old) for known, old in self._entries
                         if not known == doc and any(known == other for other in still_open)]
        if value != self.default:
            self._entries.append((doc, value))

    def __len__(self) -> int:
        return len(self._entries)
