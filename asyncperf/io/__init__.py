"""I/O optimisation: micro-batching, compression and buffered async file I/O.

Small parts that the cache, the runtime and users' handlers share:

- :class:`Batcher` gathers many small awaits to one upstream into batches;
- :class:`Compressor` compresses what is stored or sent (zstd or lz4), with a
  one-byte header so any value reads back whatever the setting is now;
- the file helpers write atomically and read into pooled buffers through
  aiofiles, with a bound on concurrent file operations.
"""

from asyncperf.io._batcher import Batcher, BatcherStatistics, FlushReason
from asyncperf.io._compress import (
    CodecName,
    CompressionStatistics,
    Compressor,
    CorruptValue,
    MissingDictionary,
    train_dictionary,
)
from asyncperf.io._files import (
    BufferHandle,
    BufferSource,
    FileBuffer,
    FileIO,
    FileIOStatistics,
    FileTooLarge,
)

__all__ = [
    "Batcher",
    "BatcherStatistics",
    "BufferHandle",
    "BufferSource",
    "CodecName",
    "CompressionStatistics",
    "Compressor",
    "CorruptValue",
    "FileBuffer",
    "FileIO",
    "FileIOStatistics",
    "FileTooLarge",
    "FlushReason",
    "MissingDictionary",
    "train_dictionary",
]
