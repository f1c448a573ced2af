"""A py-libp2p `Reader` over fixed bytes: libp2p's own readers (its frame and varint
readers) run on bytes a test made, with no stream under them."""

from __future__ import annotations


class BytesReader:
    """A py-libp2p `Reader` over fixed bytes, read in the pieces asked for."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    @property
    def unread(self) -> bytes:
        return self._data

    async def read(self, n: int | None = None) -> bytes:
        size = len(self._data) if n is None else n
        out, self._data = self._data[:size], self._data[size:]
        return out
