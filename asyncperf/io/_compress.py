"""Compression of what is stored or sent: zstd or lz4, a one-byte header, zstd dictionaries.

Every value a :class:`Compressor` encodes starts with one header byte that says
how the rest was written::

    0x00  raw: the payload as given (small, or compression did not make it smaller)
    0x01  one zstd frame, no dictionary
    0x02  one lz4 frame
    0x03  one zstd frame made with a dictionary (the frame carries the dictionary's id)

``decode`` reads all four whatever the Compressor's own codec is, so a store
keeps reading its old values after its compression setting changes (zstd to
lz4, lz4 to none, a new dictionary...). The one thing it cannot read without
help is a dictionary-compressed value whose dictionary it was not given: keep
retired dictionaries in ``dictionaries=`` for as long as values made with them
may be read.

Codecs:

- ``zstd`` (python-zstandard): a good ratio at a few hundred MB/s; levels 1-22, 3 by default.
- ``lz4`` (lz4 frames): a lower ratio, several times faster to compress; levels 0-16
  (0 is the fast default, 3 and up the slower high-compression mode).
- ``none``: every value stored raw (it still decodes any compressed value).

Many small, similar values (chat messages, JSON records of one schema) hardly
compress alone: there is too little in one value to learn from. A zstd
dictionary trained on a sample of them (:func:`train_dictionary`) carries what
they share, and compresses each one with it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from asyncperf._errors import AsyncPerfError
from asyncperf._lazy import LazyModule
from asyncperf._validate import check_int

if TYPE_CHECKING:
    import lz4.frame as lz4_frame  # type: ignore[import-untyped]
    import zstandard
else:
    # Imported when a Compressor first uses them: most processes never compress.
    zstandard = LazyModule("zstandard")
    lz4_frame = LazyModule("lz4.frame")

__all__ = [
    "CODECS",
    "DEFAULT_THRESHOLD",
    "LEVELS",
    "LZ4",
    "MIN_DICTIONARY_SIZE",
    "MIN_SAMPLES",
    "RAW",
    "ZSTD",
    "ZSTD_DICT",
    "CodecName",
    "CompressionStatistics",
    "Compressor",
    "CorruptValue",
    "MissingDictionary",
    "check_level",
    "train_dictionary",
]

CodecName = Literal["zstd", "lz4", "none"]
CODECS: Final[tuple[CodecName, ...]] = ("zstd", "lz4", "none")

#: Header byte: the payload follows as given.
RAW: Final = 0x00
#: Header byte: one zstd frame, made without a dictionary.
ZSTD: Final = 0x01
#: Header byte: one lz4 frame.
LZ4: Final = 0x02
#: Header byte: one zstd frame made with the dictionary whose id its frame header carries.
ZSTD_DICT: Final = 0x03

#: Per codec: (lowest level, highest level, default level).
LEVELS: Final[dict[str, tuple[int, int, int]]] = {
    # zstandard.MAX_COMPRESSION_LEVEL and lz4.frame.COMPRESSIONLEVEL_MAX (a test checks),
    # written out so that checking a level imports neither library.
    "zstd": (1, 22, 3),
    "lz4": (0, 16, 0),
}
#: Payloads of at most this many bytes are stored raw unless a threshold is given.
DEFAULT_THRESHOLD: Final = 256
#: Fewer samples than this cannot train a zstd dictionary (zstd refuses them).
MIN_SAMPLES: Final = 8
#: Smallest dictionary size zstd trains.
MIN_DICTIONARY_SIZE: Final = 256


class CorruptValue(AsyncPerfError, ValueError):
    """Stored bytes that cannot be decoded: empty, an unknown header, or a bad frame."""


class MissingDictionary(CorruptValue):
    """A value compressed with a zstd dictionary this Compressor was not given.

    The bytes may be fine: pass the dictionary (``dictionaries=``) to read them.
    ``dict_id`` is the id the value's frame names.
    """

    def __init__(self, message: str, dict_id: int) -> None:
        super().__init__(message)
        self.dict_id = dict_id


def check_level(codec: str, level: object, name: str = "level") -> int:
    """``level`` checked against the range ``codec`` accepts; errors name ``name``.

    Raises:
        TypeError: ``level`` is not an int.
        ValueError: out of range for the codec (zstd 1-22, lz4 0-16).
    """
    low, high, _default = LEVELS[codec]
    value = check_int(name, level)
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high} for {codec}, not {value}")
    return value


def _is_zstd_dictionary(value: object) -> bool:
    """Whether ``value`` is a ZstdCompressionDict, without importing zstandard to ask.

    Nobody holds one unless zstandard is imported already.
    """
    module = sys.modules.get("zstandard")
    return module is not None and isinstance(value, module.ZstdCompressionDict)


def _dictionary_bytes(name: str, dictionary: object) -> tuple[int, bytes]:
    """The id and content of a trained zstd dictionary given as bytes or ZstdCompressionDict.

    Raises:
        TypeError: neither bytes nor a ZstdCompressionDict.
        ValueError: not a trained zstd dictionary (raw content has no id to find it by).
    """
    if isinstance(dictionary, zstandard.ZstdCompressionDict):
        content = dictionary.as_bytes()
    elif isinstance(dictionary, bytes | bytearray | memoryview):
        content = bytes(dictionary)
    else:
        raise TypeError(
            f"{name} must be bytes or a zstandard.ZstdCompressionDict, "
            f"not {type(dictionary).__name__}"
        )
    # Loading it as a full dictionary checks its format (a raw-content "dictionary"
    # has id 0: its frames could not say which dictionary they need).
    loaded = zstandard.ZstdCompressionDict(content, dict_type=zstandard.DICT_TYPE_FULLDICT)
    try:
        loaded.precompute_compress(level=3)
    except zstandard.ZstdError as exc:
        raise ValueError(
            f"{name} must be a trained zstd dictionary (see train_dictionary): {exc}"
        ) from None
    dict_id = loaded.dict_id()
    if dict_id == 0:
        raise ValueError(f"{name} must be a trained zstd dictionary with an id, not id 0")
    return dict_id, content


@dataclass(frozen=True, slots=True)
class CompressionStatistics:
    """What a :class:`Compressor` has done (counters summed over every thread that used it).

    ``encoded == compressed + stored_raw``; ``ratio`` is ``bytes_in / bytes_out``
    (1.0 before anything was encoded), header bytes included.
    """

    codec: CodecName
    level: int | None
    threshold: int
    dictionary_id: int | None
    #: Calls to encode.
    encoded: int
    #: Encoded values stored compressed.
    compressed: int
    #: Encoded values stored raw: at or below the threshold, or not smaller compressed.
    stored_raw: int
    #: Payload bytes given to encode.
    bytes_in: int
    #: Bytes encode returned (header bytes included).
    bytes_out: int
    ratio: float
    #: Values decode returned (any codec).
    decoded: int
    #: Values decode refused (CorruptValue, MissingDictionary).
    corrupt: int


class _Counters:
    """One thread's counters: written by that thread only, read by ``statistics()``."""

    __slots__ = ("bytes_in", "bytes_out", "compressed", "corrupt", "decoded", "encoded", "thread")

    def __init__(self, thread: threading.Thread | None) -> None:
        self.thread = thread
        self.encoded = 0
        self.compressed = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.decoded = 0
        self.corrupt = 0

    def add(self, other: _Counters) -> None:
        self.encoded += other.encoded
        self.compressed += other.compressed
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.decoded += other.decoded
        self.corrupt += other.corrupt


class _ThreadState:
    """One thread's zstd contexts (not thread-safe, so one set per thread) and counters.

    Kept in a ``threading.local``: the contexts (about a megabyte at level 3)
    go away with their thread; only the small counters outlive it.
    """

    __slots__ = ("compressor", "counters", "decompressor", "dict_decompressors")

    def __init__(self, counters: _Counters) -> None:
        self.counters = counters
        self.compressor: zstandard.ZstdCompressor | None = None
        self.decompressor: zstandard.ZstdDecompressor | None = None
        self.dict_decompressors: dict[int, zstandard.ZstdDecompressor] = {}


class Compressor:
    """Compresses payloads above a size threshold and reads back whatever it or another wrote.

    ``encode(payload)`` returns a header byte and the payload's compressed
    frame, or the payload itself (header 0x00) when it is no larger than
    ``threshold`` bytes or compression would not make it smaller. ``decode``
    reads every header whatever this Compressor's codec: values written under
    another codec, level or threshold read back unchanged.

    Safe to share between threads: zstd contexts are per thread (they are not
    thread-safe), lz4 frame functions keep no state, and each thread counts in
    its own counters, summed by :meth:`statistics`.

    Args:
        codec: ``"zstd"`` (the default), ``"lz4"`` or ``"none"`` (store raw; still decodes).
        threshold: payloads of at most this many bytes are stored raw (0: try every one).
        level: the codec's level (zstd 1-22, default 3; lz4 0-16, default 0, the fast
            mode; 3 and up is lz4's much slower high-compression mode). None: the default.
        dictionary: a trained zstd dictionary (from :func:`train_dictionary`) to compress
            with; only with ``codec="zstd"``.
        dictionaries: more dictionaries, used only to decode values written with them
            (retired ones, or those of another writer); allowed with any codec.

    Raises:
        ValueError: an unknown codec, a level out of range for it, a level with
            ``"none"``, a negative threshold, a dictionary with another codec, a
            dictionary that is not a trained zstd dictionary, or two different
            dictionaries with one id (each message names the parameter).
        TypeError: an argument of the wrong type (named).
    """

    __slots__ = (
        "_codec",
        "_compressing",
        "_dictionaries",
        "_dictionary_id",
        "_header",
        "_level",
        "_local",
        "_lock",
        "_retired",
        "_threads",
        "_threshold",
    )

    def __init__(
        self,
        codec: CodecName = "zstd",
        *,
        threshold: int = DEFAULT_THRESHOLD,
        level: int | None = None,
        dictionary: bytes | zstandard.ZstdCompressionDict | None = None,
        dictionaries: Iterable[bytes | zstandard.ZstdCompressionDict] = (),
    ) -> None:
        if codec not in CODECS:
            names = ", ".join(repr(name) for name in CODECS)
            raise ValueError(f"codec must be one of {names}, not {codec!r}")
        self._codec: CodecName = codec
        self._threshold = check_int("threshold", threshold, minimum=0)
        if codec == "none":
            if level is not None:
                raise ValueError(f"level must be None with codec 'none', not {level!r}")
            self._level: int | None = None
        else:
            self._level = LEVELS[codec][2] if level is None else check_level(codec, level)
        known: dict[int, bytes] = {}
        self._dictionary_id: int | None = None
        if dictionary is not None:
            if codec != "zstd":
                raise ValueError(f"dictionary needs codec 'zstd', not {codec!r}")
            self._dictionary_id, content = _dictionary_bytes("dictionary", dictionary)
            known[self._dictionary_id] = content
        if isinstance(dictionaries, bytes | bytearray | memoryview) or _is_zstd_dictionary(
            dictionaries
        ):
            raise TypeError(
                "dictionaries must be an iterable of dictionaries, not one dictionary "
                "(pass dictionaries=[d])"
            )
        try:
            extra = list(dictionaries)
        except TypeError:
            raise TypeError(
                f"dictionaries must be an iterable, not {type(dictionaries).__name__}"
            ) from None
        for index, other in enumerate(extra):
            dict_id, content = _dictionary_bytes(f"dictionaries[{index}]", other)
            if known.get(dict_id, content) != content:
                raise ValueError(
                    f"dictionaries[{index}] has id {dict_id}, as does a different dictionary"
                )
            known[dict_id] = content
        #: Every dictionary this Compressor can decode with, by id (raw content: each thread
        #: loads its own copy, so no zstd object is ever shared between threads).
        self._dictionaries = known
        self._compressing = codec != "none"
        self._header = {
            "zstd": bytes([ZSTD if self._dictionary_id is None else ZSTD_DICT]),
            "lz4": bytes([LZ4]),
            "none": bytes([RAW]),
        }[codec]
        self._local = threading.local()
        self._lock = threading.Lock()
        self._threads: list[_Counters] = []
        # Counters of threads that have ended, folded together (they cannot change).
        self._retired = _Counters(None)

    # -- settings -------------------------------------------------------------------

    @property
    def codec(self) -> CodecName:
        """``"zstd"``, ``"lz4"`` or ``"none"``: what ``encode`` compresses with."""
        return self._codec

    @property
    def threshold(self) -> int:
        """Payloads of at most this many bytes are stored raw."""
        return self._threshold

    @property
    def level(self) -> int | None:
        """The codec's level (None for ``"none"``)."""
        return self._level

    @property
    def compresses(self) -> bool:
        """Whether ``encode`` ever compresses (False for ``"none"``)."""
        return self._compressing

    @property
    def dictionary_id(self) -> int | None:
        """The id of the dictionary ``encode`` compresses with (None: no dictionary)."""
        return self._dictionary_id

    @property
    def dictionary_ids(self) -> frozenset[int]:
        """The ids of every dictionary ``decode`` can read values of."""
        return frozenset(self._dictionaries)

    def __repr__(self) -> str:
        dictionary = "" if self._dictionary_id is None else f", dictionary_id={self._dictionary_id}"
        return (
            f"Compressor({self._codec!r}, threshold={self._threshold}, level={self._level}"
            f"{dictionary})"
        )

    # -- per-thread state -----------------------------------------------------------

    def _state(self) -> _ThreadState:
        try:
            state: _ThreadState = self._local.state
        except AttributeError:
            state = self._local.state = self._new_state()
        return state

    def _new_state(self) -> _ThreadState:
        counters = _Counters(threading.current_thread())
        with self._lock:
            # A new thread is rare (pools reuse theirs): fold in the ended ones here, so
            # a program that keeps starting threads keeps a bounded list.
            alive: list[_Counters] = []
            for other in self._threads:
                thread = other.thread
                if thread is not None and not thread.is_alive():
                    self._retired.add(other)
                else:
                    alive.append(other)
            alive.append(counters)
            self._threads = alive
        return _ThreadState(counters)

    def _zstd_compressor(self, state: _ThreadState) -> zstandard.ZstdCompressor:
        compressor = state.compressor
        if compressor is None:
            if self._dictionary_id is None:
                compressor = zstandard.ZstdCompressor(level=self._level or 3)
            else:
                dictionary = zstandard.ZstdCompressionDict(
                    self._dictionaries[self._dictionary_id],
                    dict_type=zstandard.DICT_TYPE_FULLDICT,
                )
                # Digested once per thread, not once per value.
                dictionary.precompute_compress(level=self._level or 3)
                compressor = zstandard.ZstdCompressor(dict_data=dictionary)
            state.compressor = compressor
        return compressor

    def _zstd_decompressor(self, state: _ThreadState, dict_id: int) -> zstandard.ZstdDecompressor:
        if dict_id == 0:
            decompressor = state.decompressor
            if decompressor is None:
                decompressor = state.decompressor = zstandard.ZstdDecompressor()
            return decompressor
        decompressor = state.dict_decompressors.get(dict_id)
        if decompressor is None:
            content = self._dictionaries.get(dict_id)
            if content is None:
                known = ", ".join(map(str, sorted(self._dictionaries))) or "none"
                raise MissingDictionary(
                    f"the value was compressed with zstd dictionary id {dict_id}, which this "
                    f"Compressor was not given (it has: {known}); pass it in dictionaries=",
                    dict_id,
                )
            dictionary = zstandard.ZstdCompressionDict(
                content, dict_type=zstandard.DICT_TYPE_FULLDICT
            )
            decompressor = zstandard.ZstdDecompressor(dict_data=dictionary)
            state.dict_decompressors[dict_id] = decompressor
        return decompressor

    # -- encoding -------------------------------------------------------------------

    def encode(self, payload: bytes) -> bytes:
        """The stored form of ``payload``: a header byte, then its compressed frame or itself."""
        try:
            state: _ThreadState = self._local.state
        except AttributeError:
            state = self._state()
        counters = state.counters
        size = len(payload)
        counters.encoded += 1
        counters.bytes_in += size
        if self._compressing and size > self._threshold:
            if self._codec == "zstd":
                frame = self._zstd_compressor(state).compress(payload)
            else:
                frame = lz4_frame.compress(payload, compression_level=self._level)
            if len(frame) < size:
                stored: bytes = self._header + frame
                counters.compressed += 1
                counters.bytes_out += len(stored)
                return stored
        counters.bytes_out += size + 1
        return b"\x00" + payload

    def decode(self, stored: bytes) -> bytes:
        """The payload of a value ``encode`` made, under any codec and setting.

        Raises:
            MissingDictionary: a dictionary value whose dictionary this Compressor lacks.
            CorruptValue: an empty value, an unknown header, or a frame that does not decode.
        """
        try:
            state: _ThreadState = self._local.state
        except AttributeError:
            state = self._state()
        try:
            payload = self._decode(state, stored)
        except CorruptValue:
            state.counters.corrupt += 1
            raise
        state.counters.decoded += 1
        return payload

    def _decode(self, state: _ThreadState, stored: bytes) -> bytes:
        if not stored:
            raise CorruptValue("empty stored value")
        header = stored[0]
        if header == RAW:
            return stored[1:]
        frame = memoryview(stored)[1:]  # no copy: both libraries read any buffer
        if header == ZSTD:
            try:
                return self._zstd_decompressor(state, 0).decompress(frame)
            except zstandard.ZstdError as exc:
                raise CorruptValue(f"bad zstd frame: {exc}") from exc
        if header == ZSTD_DICT:
            try:
                dict_id = zstandard.get_frame_parameters(frame).dict_id
                if dict_id == 0:
                    raise CorruptValue("dictionary zstd value whose frame names no dictionary")
                return self._zstd_decompressor(state, dict_id).decompress(frame)
            except zstandard.ZstdError as exc:
                raise CorruptValue(f"bad zstd frame: {exc}") from exc
        if header == LZ4:
            try:
                payload: bytes = lz4_frame.decompress(frame)
            except (RuntimeError, ValueError) as exc:  # what lz4 raises for a bad frame
                raise CorruptValue(f"bad lz4 frame: {exc}") from exc
            return payload
        raise CorruptValue(f"unknown header byte {header:#04x}")

    # -- statistics -----------------------------------------------------------------

    def statistics(self) -> CompressionStatistics:
        """The counters so far, summed over every thread (a snapshot; cheap)."""
        total = _Counters(None)
        with self._lock:
            total.add(self._retired)
            for counters in self._threads:
                total.add(counters)
        return CompressionStatistics(
            codec=self._codec,
            level=self._level,
            threshold=self._threshold,
            dictionary_id=self._dictionary_id,
            encoded=total.encoded,
            compressed=total.compressed,
            stored_raw=total.encoded - total.compressed,
            bytes_in=total.bytes_in,
            bytes_out=total.bytes_out,
            ratio=total.bytes_in / total.bytes_out if total.bytes_out else 1.0,
            decoded=total.decoded,
            corrupt=total.corrupt,
        )


def train_dictionary(
    samples: Iterable[bytes | bytearray | memoryview], size: int = 16_384
) -> bytes:
    """A zstd dictionary of at most ``size`` bytes trained on ``samples`` (typical values).

    Give it a few hundred values or more, like those you will compress
    (zstd suggests about 100 times ``size`` bytes of samples in all); pass the
    result as ``Compressor(dictionary=...)`` and keep it (and, after
    retraining, in ``dictionaries=``) for as long as values made with it may be read.

    Raises:
        TypeError: ``samples`` is not an iterable of bytes, or ``size`` is not an int.
        ValueError: ``size`` below 256, fewer than 8 samples, or samples zstd cannot
            train on (too few or too small for ``size``); the message names ``samples``.
    """
    size = check_int("size", size, minimum=MIN_DICTIONARY_SIZE)
    if isinstance(samples, bytes | bytearray | memoryview | str):
        raise TypeError("samples must be an iterable of bytes values, not one value")
    try:
        iterator = iter(samples)
    except TypeError:
        raise TypeError(
            f"samples must be an iterable of bytes, not {type(samples).__name__}"
        ) from None
    collected: list[bytes | bytearray | memoryview] = []
    for sample in iterator:
        if not isinstance(sample, bytes | bytearray | memoryview):
            raise TypeError(f"samples must hold bytes, not {type(sample).__name__}")
        collected.append(bytes(sample))
    if len(collected) < MIN_SAMPLES:
        raise ValueError(
            f"samples must hold at least {MIN_SAMPLES} values to train a dictionary, "
            f"not {len(collected)}"
        )
    try:
        trained = zstandard.train_dictionary(size, collected)
    except zstandard.ZstdError as exc:
        total = sum(map(len, collected))
        raise ValueError(
            f"samples: zstd could not train a {size}-byte dictionary on {len(collected)} "
            f"samples of {total} bytes in all ({exc}); give more samples or a smaller size"
        ) from None
    return trained.as_bytes()
