"""How the disk cache turns values into bytes and back: serializers and compression.

A :class:`Serializer` turns a value into bytes (``dumps``) and back (``loads``).
Three ship with asyncperf: ``"pickle"`` (any picklable value; only where the
stored bytes cannot be tampered with, see :class:`~asyncperf.cache.DiskCache`),
``"json"`` (str, numbers, bools, None, lists and dicts with str keys; tuples come
back as lists) and ``"msgpack"`` (as JSON plus bytes). Users pass their own
object with ``dumps``, ``loads`` and ``name`` for anything else.

:class:`Codec` adds the one-byte header every stored value starts with, so raw
and zstd-compressed values can be told apart: a cache reads values written
under any compression setting, whatever its own is.
"""

from __future__ import annotations

import json
import pickle
import threading
from typing import Any, Final, Literal, Protocol, runtime_checkable

import msgpack  # type: ignore[import-untyped]
import zstandard

from asyncperf._validate import check_int

__all__ = [
    "RAW",
    "SERIALIZERS",
    "ZSTD",
    "Codec",
    "CorruptValue",
    "JsonSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "Serializer",
    "SerializerName",
    "make_serializer",
]

SerializerName = Literal["pickle", "json", "msgpack"]

#: First byte of a stored value: the payload follows as the serializer wrote it.
RAW: Final = 0x00
#: First byte of a stored value: the payload follows as one zstd frame.
ZSTD: Final = 0x01


class CorruptValue(Exception):
    """Stored bytes that cannot be decoded (unknown header, bad zstd frame)."""


@runtime_checkable
class Serializer(Protocol):
    """Turns values into bytes and back; ``name`` identifies it in errors and statistics."""

    @property
    def name(self) -> str: ...

    def dumps(self, value: Any) -> bytes:
        """The bytes of ``value``; raise TypeError (or ValueError) for a value it cannot hold."""
        ...

    def loads(self, data: bytes) -> Any:
        """The value of bytes made by ``dumps``; raise any exception for bytes it cannot read."""
        ...


class PickleSerializer:
    """Any picklable value, with the highest pickle protocol.

    Unpickling runs code named by the bytes: load only bytes you wrote yourself.
    """

    __slots__ = ()

    @property
    def name(self) -> str:
        return "pickle"

    def dumps(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:
        # Safe only on trusted bytes: DiskCache allows it in a private directory or with HMAC.
        return pickle.loads(data)


class JsonSerializer:
    """JSON in UTF-8: str, int, float, bool, None, lists and dicts with str keys."""

    __slots__ = ("_decoder", "_encoder")

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
        self._decoder = json.JSONDecoder()

    @property
    def name(self) -> str:
        return "json"

    def dumps(self, value: Any) -> bytes:
        return self._encoder.encode(value).encode("utf-8")

    def loads(self, data: bytes) -> Any:
        return self._decoder.decode(data.decode("utf-8"))


class MsgpackSerializer:
    """MessagePack: as JSON plus bytes, and maps with any hashable msgpack keys."""

    __slots__ = ()

    @property
    def name(self) -> str:
        return "msgpack"

    def dumps(self, value: Any) -> bytes:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]

    def loads(self, data: bytes) -> Any:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)


SERIALIZERS: Final[dict[str, type[PickleSerializer | JsonSerializer | MsgpackSerializer]]] = {
    "pickle": PickleSerializer,
    "json": JsonSerializer,
    "msgpack": MsgpackSerializer,
}


def make_serializer(serializer: SerializerName | Serializer) -> Serializer:
    """The serializer named, or the user's own object checked for the protocol.

    Raises:
        ValueError: an unknown name.
        TypeError: an object without ``dumps``, ``loads`` and ``name``.
    """
    if isinstance(serializer, str):
        try:
            return SERIALIZERS[serializer]()
        except KeyError:
            names = ", ".join(repr(name) for name in SERIALIZERS)
            raise ValueError(
                f"serializer must be one of {names} or a Serializer, not {serializer!r}"
            ) from None
    if not isinstance(serializer, Serializer):
        raise TypeError(
            "serializer must be a name or an object with dumps(), loads() and name, "
            f"not {type(serializer).__name__}"
        )
    return serializer


class Codec:
    """Adds and removes the one-byte header, compressing payloads above a threshold.

    ``compress_threshold=None`` stores every payload raw; otherwise a payload of
    more than ``compress_threshold`` bytes is compressed with zstd at
    ``compress_level``, and kept raw when compression does not make it smaller.
    ``decode`` reads both forms whatever the settings. Safe to use from several
    threads (zstd contexts are per thread).
    """

    __slots__ = ("_local", "level", "threshold")

    def __init__(self, compress_threshold: int | None = None, compress_level: int = 3) -> None:
        self.threshold = (
            None
            if compress_threshold is None
            else check_int("compress_threshold", compress_threshold, minimum=0)
        )
        level = check_int("compress_level", compress_level)
        if not 1 <= level <= zstandard.MAX_COMPRESSION_LEVEL:
            raise ValueError(
                f"compress_level must be between 1 and {zstandard.MAX_COMPRESSION_LEVEL}, "
                f"not {level}"
            )
        self.level = level
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        compressor: zstandard.ZstdCompressor | None = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = self._local.compressor = zstandard.ZstdCompressor(level=self.level)
        return compressor

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        decompressor: zstandard.ZstdDecompressor | None = getattr(self._local, "decompressor", None)
        if decompressor is None:
            decompressor = self._local.decompressor = zstandard.ZstdDecompressor()
        return decompressor

    def encode(self, payload: bytes) -> bytes:
        """The stored form of ``payload``: a header byte, then the payload or its zstd frame."""
        if self.threshold is not None and len(payload) > self.threshold:
            compressed = self._compressor().compress(payload)
            if len(compressed) < len(payload):
                return b"\x01" + compressed
        return b"\x00" + payload

    def decode(self, stored: bytes) -> bytes:
        """The payload of a stored value.

        Raises:
            CorruptValue: an empty value, an unknown header, or a bad zstd frame.
        """
        if not stored:
            raise CorruptValue("empty stored value")
        header = stored[0]
        if header == RAW:
            return stored[1:]
        if header == ZSTD:
            try:
                return self._decompressor().decompress(stored[1:])
            except zstandard.ZstdError as exc:
                raise CorruptValue(f"bad zstd frame: {exc}") from exc
        raise CorruptValue(f"unknown header byte {header:#04x}")
