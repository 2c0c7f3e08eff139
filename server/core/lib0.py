"""lib0's binary encoding (the one y-protocols, y-websocket and Hocuspocus frames use), read
strictly.

pycrdt's ``_sync.Decoder`` reads past the end of a truncated frame without noticing (it slices
silently shorter) and raises IndexError/RuntimeError on others: fine between trusting peers, not
for frames from the network, where every malformation must be a clear refusal. So reading is
done here (:class:`Reader`, raising :class:`MalformedFrame`); writing uses pycrdt's
``write_var_uint``, which is exact.
"""

from __future__ import annotations

from pycrdt._sync import write_var_uint

__all__ = ["MalformedFrame", "Reader", "var_bytes", "var_string", "var_uint"]

#: lib0 var-uints are JavaScript numbers: at most 53 bits (8 bytes of 7 bits).
_MAX_VARUINT_BYTES = 8


class MalformedFrame(ValueError):
    """A frame that does not follow the protocol (truncated, overlong, bad UTF-8, ...)."""


class Reader:
    """Reads one frame front to back."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def uint(self) -> int:
        data, pos, value, shift = self.data, self.pos, 0, 0
        for _ in range(_MAX_VARUINT_BYTES):
            if pos >= len(data):
                raise MalformedFrame(f"truncated number at byte {self.pos}")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                self.pos = pos
                return value
        raise MalformedFrame(f"number at byte {self.pos} is longer than 53 bits")

    def bytes(self) -> bytes:
        start = self.pos
        n = self.uint()
        end = self.pos + n
        if end > len(self.data):
            raise MalformedFrame(
                f"a {n}-byte field at byte {start} runs past the end of the"
                f" {len(self.data)}-byte frame"
            )
        out = self.data[self.pos : end]
        self.pos = end
        return bytes(out)

    def string(self) -> str:
        start = self.pos
        raw = self.bytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedFrame(f"the string at byte {start} is not UTF-8") from None

    @property
    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def end(self) -> None:
        """The frame must hold nothing more."""
        if self.pos != len(self.data):
            raise MalformedFrame(
                f"{len(self.data) - self.pos} unexpected bytes after the message at byte {self.pos}"
            )


def var_uint(n: int) -> bytes:
    return write_var_uint(n)


def var_bytes(data: bytes) -> bytes:
    return write_var_uint(len(data)) + data


def var_string(text: str) -> bytes:
    return var_bytes(text.encode("utf-8"))
