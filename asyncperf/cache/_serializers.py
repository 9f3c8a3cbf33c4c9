"""How the disk cache turns values into bytes and back: serializers and compression.

A :class:`Serializer` turns a value into bytes (``dumps``) and back (``loads``).
Three ship with asyncperf: ``"pickle"`` (any picklable value; only where the
stored bytes cannot be tampered with, see :class:`~asyncperf.cache.DiskCache`),
``"json"`` (str, numbers, bools, None, lists and dicts with str keys; tuples come
back as lists) and ``"msgpack"`` (as JSON plus bytes). Users pass their own
object with ``dumps``, ``loads`` and ``name`` for anything else.

:class:`Codec` is how a cache's compression arguments become a
:class:`~asyncperf.io.Compressor`, which adds the one-byte header every stored
value starts with (raw, zstd, lz4, zstd with a dictionary): a cache reads
values written under any compression setting, whatever its own is.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Final, Literal, Protocol, TypeAlias, runtime_checkable

import msgpack  # type: ignore[import-untyped]

from asyncperf._validate import check_int
from asyncperf.io._compress import (
    DEFAULT_THRESHOLD,
    LEVELS,
    LZ4,
    RAW,
    ZSTD,
    ZSTD_DICT,
    Compressor,
    CorruptValue,
    check_level,
)

__all__ = [
    "LZ4",
    "RAW",
    "SERIALIZERS",
    "ZSTD",
    "ZSTD_DICT",
    "Codec",
    "Compression",
    "CorruptValue",
    "JsonSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "Serializer",
    "SerializerName",
    "make_serializer",
]

SerializerName = Literal["pickle", "json", "msgpack"]
#: A cache's ``compression`` argument: a codec by name, a Compressor, or None (see Codec).
Compression: TypeAlias = Literal["zstd", "lz4"] | Compressor | None

# The header bytes (RAW, ZSTD, LZ4, ZSTD_DICT) and CorruptValue live with the Compressor
# in asyncperf.io; they are re-exported here, where the caches have always found them.


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
    """A cache's compression arguments made into the :class:`Compressor` its values go through.

    Every stored value starts with the Compressor's one-byte header, so a cache
    reads values written under any other setting (raw, zstd, lz4; a zstd
    dictionary value needs its dictionary). The arguments, as DiskCache and
    RedisCacheLevel take them:

    - ``compression=None`` (the default), as before Compressor existed:
      ``compress_threshold=None`` stores every value raw; a number compresses
      values above that many bytes with zstd at ``compress_level`` (default 3).
    - ``compression="zstd"`` or ``"lz4"``: that codec, above ``compress_threshold``
      bytes (default 256) at ``compress_level`` (default: the codec's).
    - ``compression=Compressor(...)``: that one, as configured (for a dictionary, or
      to read its ``statistics()``); ``compress_threshold`` and ``compress_level``
      must then be left out.

    A payload is kept raw when compression does not make it smaller. Safe to
    use from several threads (as the Compressor is).

    Raises:
        ValueError, TypeError: a bad argument (the message names it).
    """

    __slots__ = ("compressor", "threshold")

    def __init__(
        self,
        compress_threshold: int | None = None,
        compress_level: int | None = None,
        *,
        compression: Compression = None,
    ) -> None:
        if isinstance(compression, Compressor):
            if compress_threshold is not None or compress_level is not None:
                raise ValueError(
                    "compress_threshold and compress_level must be left out when compression "
                    "is a Compressor (set them on the Compressor)"
                )
            compressor = compression
        elif compression is None:
            level = check_level(
                "zstd", 3 if compress_level is None else compress_level, "compress_level"
            )
            if compress_threshold is None:
                compressor = Compressor("none")
            else:
                threshold = check_int("compress_threshold", compress_threshold, minimum=0)
                compressor = Compressor("zstd", threshold=threshold, level=level)
        else:
            codec: object = compression  # checked here: callers may pass anything
            if codec != "zstd" and codec != "lz4":
                raise ValueError(
                    f"compression must be 'zstd', 'lz4', a Compressor or None, not {codec!r}"
                )
            threshold = (
                DEFAULT_THRESHOLD
                if compress_threshold is None
                else check_int("compress_threshold", compress_threshold, minimum=0)
            )
            level = (
                LEVELS[compression][2]
                if compress_level is None
                else check_level(compression, compress_level, "compress_level")
            )
            compressor = Compressor(compression, threshold=threshold, level=level)
        #: What encodes and decodes the stored values.
        self.compressor = compressor
        #: Payloads above this many bytes are compressed; None: none ever is.
        self.threshold = compressor.threshold if compressor.compresses else None

    def encode(self, payload: bytes) -> bytes:
        """The stored form of ``payload``: a header byte, then its compressed frame or itself."""
        return self.compressor.encode(payload)

    def decode(self, stored: bytes) -> bytes:
        """The payload of a stored value, whatever codec wrote it.

        Raises:
            CorruptValue: an empty value, an unknown header, a bad frame, or (its
                subclass MissingDictionary) a dictionary this cache was not given.
        """
        return self.compressor.decode(stored)
