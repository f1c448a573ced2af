"""Read a GGUF file's metadata (key/values and tensor shapes) without loading it.

Only the header is read: no llama.cpp, no numpy. Big arrays (the tokenizer's
vocabulary) are skipped and reported by length, as Ollama's `/api/show` does
when it is not asked to be verbose.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from p2pinfer.errors import ModelNotFound

MetadataValue = str | int | float | bool

_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<?", 1),
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
_STRING = 8
_ARRAY = 9

# llama.cpp's `enum llama_ftype`, named as Ollama names quantization levels.
FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
}


@dataclass(frozen=True)
class GGUFMetadata:
    """Scalar key/values of a GGUF file, array lengths, and the parameter count."""

    values: dict[str, MetadataValue]
    array_lengths: dict[str, int]
    parameter_count: int

    @property
    def architecture(self) -> str:
        return str(self.values.get("general.architecture", ""))

    @property
    def context_length(self) -> int:
        value = self.values.get(f"{self.architecture}.context_length", 0)
        return int(value) if isinstance(value, int | float) else 0

    @property
    def quantization(self) -> str:
        file_type = self.values.get("general.file_type")
        if isinstance(file_type, int) and not isinstance(file_type, bool):
            return FILE_TYPES.get(file_type, f"unknown({file_type})")
        return ""

    @property
    def chat_template(self) -> str:
        return str(self.values.get("tokenizer.chat_template", ""))


def human_parameter_count(count: int) -> str:
    """Ollama's rendering of a parameter count: "134.52M", "7.6B", "3B"."""
    if count >= 1_000_000_000:
        number = count / 1_000_000_000
        return f"{int(number)}B" if number.is_integer() else f"{number:.1f}B"
    if count >= 1_000_000:
        number = count / 1_000_000
        return f"{int(number)}M" if number.is_integer() else f"{number:.2f}M"
    if count >= 1_000:
        return f"{count / 1_000:.0f}K"
    return str(count)


class _Reader:
    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def take(self, n: int) -> bytes:
        data = self._stream.read(n)
        if len(data) != n:
            raise ValueError("truncated GGUF header")
        return data

    def unpack(self, fmt: str, size: int) -> int | float | bool:
        value: int | float | bool = struct.unpack(fmt, self.take(size))[0]
        return value

    def u32(self) -> int:
        return int(self.unpack("<I", 4))

    def u64(self) -> int:
        return int(self.unpack("<Q", 8))

    def string(self) -> str:
        return self.take(self.u64()).decode("utf-8", errors="replace")

    def skip(self, n: int) -> None:
        self._stream.seek(n, 1)

    def value(self, kind: int) -> MetadataValue | None:
        """A scalar or string value; arrays are skipped (None)."""
        if kind in _SCALARS:
            fmt, size = _SCALARS[kind]
            return self.unpack(fmt, size)
        if kind == _STRING:
            return self.string()
        raise ValueError(f"unknown GGUF value type {kind}")

    def skip_array(self) -> int:
        kind, count = self.u32(), self.u64()
        if kind in _SCALARS:
            self.skip(_SCALARS[kind][1] * count)
        elif kind == _STRING:
            for _ in range(count):
                self.skip(self.u64())
        elif kind == _ARRAY:
            for _ in range(count):
                self.skip_array()
        else:
            raise ValueError(f"unknown GGUF array type {kind}")
        return count


def read_gguf_metadata(path: Path) -> GGUFMetadata:
    """Parse `path`'s header; raise ModelNotFound if it is missing or not a GGUF file."""
    try:
        with path.open("rb") as stream:
            reader = _Reader(stream)
            if reader.take(4) != b"GGUF":
                raise ValueError("not a GGUF file (bad magic)")
            version = reader.u32()
            if version not in (2, 3):
                raise ValueError(f"unsupported GGUF version {version}")
            n_tensors, n_kv = reader.u64(), reader.u64()
            values: dict[str, MetadataValue] = {}
            arrays: dict[str, int] = {}
            for _ in range(n_kv):
                key, kind = reader.string(), reader.u32()
                if kind == _ARRAY:
                    arrays[key] = reader.skip_array()
                else:
                    value = reader.value(kind)
                    assert value is not None
                    values[key] = value
            parameters = 0
            for _ in range(n_tensors):
                reader.string()  # tensor name
                dims = [reader.u64() for _ in range(reader.u32())]
                reader.u32()  # ggml type
                reader.u64()  # offset
                count = 1
                for dim in dims:
                    count *= dim
                parameters += count
    except OSError as exc:
        raise ModelNotFound(f"cannot read model file {path}: {exc.strerror or exc}") from None
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        raise ModelNotFound(f"{path} is not a usable GGUF model: {exc}") from None
    return GGUFMetadata(values=values, array_lengths=arrays, parameter_count=parameters)
