"""Suite ``compression``: ratio and speed of the Compressor's codecs on chat payloads.

Payloads (the same bytes for every codec):

- ``requests``: the session simulator's chat requests, as it builds them
  (:func:`asyncperf.tools.simulate._strategies.build_request`): the first
  messages of the simulator's default schedule (seed 1), each with its
  session's last turn of history and a context of median 600 characters, as
  JSON; about 400 B to 4 KB each.
- ``replies``: the simulator's replies as a cache stores them (the reply text
  the upstream sent for each of those requests, serialized with msgpack);
  0.5 to 1.2 KB each.
- ``varied text``: requests of the same shape whose prompts, replies and
  contexts are cut at random from the standard library's docstrings. The
  simulator's text is one sentence (requests) or two words (replies) repeated,
  which compresses far better than real text; this workload shows what prose
  gives.

Codecs, each through :class:`asyncperf.io.Compressor` with ``threshold=0``
(every payload is tried; one that does not shrink is stored raw, header
included), so the figures include the header byte and the Python call:

- ``none``: the raw baseline (a header byte and a copy of the payload; decode
  is a copy of the slice after the header);
- ``zstd``: zstd level 3, no dictionary;
- ``zstd_dict``: zstd level 3 with a dictionary of up to 16 KiB trained
  (:func:`asyncperf.io.train_dictionary`) on as many payloads of the same kind
  from the next seed of the simulator (another draw of the varied text), not
  on the payloads measured;
- ``lz4``: lz4 frames at level 0 (the fast mode).

Per case, one repetition compresses (or decompresses) every payload once; the
figure is the median over the repetitions in milliseconds per MB of payload
(1 MB = 10**6 bytes of uncompressed payload, for both directions), shown as
MB/s. The ratio is the payload bytes over the stored bytes. Compression is
CPU work with no awaits, so the suite runs on the first loop asked for only.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import random
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import msgpack  # type: ignore[import-untyped]
from rich.table import Table

from asyncperf.io._compress import Compressor, train_dictionary
from asyncperf.tools.bench._harness import (
    Case,
    Config,
    Harness,
    LoopChoice,
    Plan,
    Result,
    Suite,
    fmt,
)
from asyncperf.tools.simulate._config import SimulationConfig
from asyncperf.tools.simulate._strategies import build_request
from asyncperf.tools.simulate._upstream import request_reply
from asyncperf.tools.simulate._workload import make_workload

__all__ = ["CODECS", "SUITE", "WORKLOADS", "Contender", "PayloadSet", "payload_sets"]

NAME = "compression"
#: Payloads per workload (and dictionary training samples, from another seed).
PAYLOADS = 4_000
QUICK_PAYLOADS = 300
#: The simulator's settings for these payloads: small contexts and a short history, so
#: requests stay between about 200 B and 4 KB.
CONTEXT_MEDIAN = 600
HISTORY = 1
DICTIONARY_SIZE = 16_384
#: The seed of the measured payloads; the dictionary is trained on the next one's.
SEED = 1
BASELINE = "none"

WORKLOADS = ("requests", "replies", "varied text")


@dataclass(frozen=True, slots=True)
class Contender:
    """A contender: its key, its label, and its Compressor given the workload's dictionary."""

    key: str
    label: str
    make: Callable[[bytes], Compressor]


CODECS = (
    Contender(BASELINE, "none (raw copy)", lambda _d: Compressor("none", threshold=0)),
    Contender("zstd", "zstd level 3", lambda _d: Compressor("zstd", threshold=0, level=3)),
    Contender(
        "zstd_dict",
        "zstd level 3 + trained dictionary",
        lambda d: Compressor("zstd", threshold=0, level=3, dictionary=d),
    ),
    Contender("lz4", "lz4 level 0", lambda _d: Compressor("lz4", threshold=0)),
)


@dataclass(slots=True)
class PayloadSet:
    """One workload: the payloads measured, its trained dictionary and what each codec made."""

    name: str
    payloads: list[bytes]
    dictionary: bytes
    training_seconds: float
    #: Per codec key: the stored form of every payload (made once, outside the timing).
    encoded: dict[str, list[bytes]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(map(len, self.payloads))

    def ratio(self, codec: str) -> float:
        """Payload bytes over stored bytes (header bytes included)."""
        return self.total / sum(map(len, self.encoded[codec]))

    def stored_raw(self, codec: str) -> int:
        """Payloads the codec left raw (compression did not shrink them)."""
        return sum(1 for stored in self.encoded[codec] if stored[0] == 0)

    def sizes(self) -> tuple[int, int, int]:
        """Smallest, median and largest payload, bytes."""
        lengths = sorted(map(len, self.payloads))
        return lengths[0], lengths[len(lengths) // 2], lengths[-1]


# -- payloads ------------------------------------------------------------------------------


def chat_payloads(count: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    """The simulator's first ``count`` requests (JSON) and their replies (msgpack)."""
    config = SimulationConfig(
        seed=seed, payload=CONTEXT_MEDIAN, history=HISTORY, isolate=False, disk_cache=False
    )
    workload = make_workload(config)
    histories: dict[int, deque[tuple[int, str]]] = {}
    requests: list[bytes] = []
    replies: list[bytes] = []
    for index in range(min(count, len(workload))):
        history = histories.setdefault(workload.session[index], deque(maxlen=HISTORY))
        request = build_request(workload, history, index)
        reply: str = json.loads(request_reply(len(request)))["text"]
        history.append((workload.prompt[index], reply))  # as the simulator does after a reply
        requests.append(request.encode())
        replies.append(msgpack.packb(reply, use_bin_type=True))
    return requests, replies


#: The standard library modules whose docstrings make the varied text.
_TEXT_MODULES: tuple[str, ...] = (
    "argparse",
    "asyncio",
    "collections",
    "contextlib",
    "functools",
    "inspect",
    "itertools",
    "json",
    "logging",
    "os",
    "pathlib",
    "re",
    "statistics",
)


def _corpus() -> str:
    """About 130 KB of English prose: the docstrings of a few standard modules."""
    parts: list[str] = []
    for module_name in _TEXT_MODULES:
        module = importlib.import_module(module_name)
        parts.append(inspect.getdoc(module) or "")
        for name in sorted(vars(module)):
            obj = getattr(module, name)
            if name.startswith("_") or not callable(obj):
                continue
            doc = inspect.getdoc(obj)
            if doc and len(doc) > 200:
                parts.append(doc)
    return "\n\n".join(dict.fromkeys(parts))


def varied_payloads(count: int, seed: int) -> list[bytes]:
    """``count`` chat requests of the simulator's shape with text cut from the corpus."""
    corpus = _corpus()
    rng = random.Random(seed)

    def cut(length: int) -> str:
        start = rng.randrange(0, len(corpus) - length)
        return corpus[start : start + length]

    payloads: list[bytes] = []
    for session in range(count):
        messages: list[dict[str, str]] = []
        for _turn in range(rng.randint(0, HISTORY)):
            messages.append({"role": "user", "content": cut(rng.randint(80, 200))})
            messages.append({"role": "assistant", "content": cut(rng.randint(400, 1_200))})
        prompt = cut(rng.randint(80, 200))
        messages.append({"role": "user", "content": prompt})
        context = cut(min(3_000, int(rng.lognormvariate(math.log(CONTEXT_MEDIAN), 0.5))))
        request = {
            "model": "simulated",
            "session": session,
            "messages": messages,
            "context": context,
            "prompt_tokens": (len(prompt) + len(context)) // 4,
            "max_tokens": 256,
        }
        payloads.append(json.dumps(request).encode())
    return payloads


def _train(samples: list[bytes]) -> tuple[bytes, float]:
    start = perf_counter()
    dictionary = train_dictionary(samples, DICTIONARY_SIZE)
    return dictionary, perf_counter() - start


def payload_sets(count: int) -> list[PayloadSet]:
    """The three workloads of ``count`` payloads each, dictionaries trained, every codec run."""
    requests, replies = chat_payloads(count, SEED)
    train_requests, train_replies = chat_payloads(count, SEED + 1)
    sets: list[PayloadSet] = []
    for name, payloads, samples in (
        ("requests", requests, train_requests),
        ("replies", replies, train_replies),
        ("varied text", varied_payloads(count, SEED), varied_payloads(count, SEED + 1)),
    ):
        dictionary, seconds = _train(samples)
        payload_set = PayloadSet(name, payloads, dictionary, seconds)
        for codec in CODECS:
            compressor = codec.make(dictionary)
            encoded = [compressor.encode(payload) for payload in payloads]
            payload_set.encoded[codec.key] = encoded
        sets.append(payload_set)
    return sets


# -- the measurement -----------------------------------------------------------------------


def _check(payload_set: PayloadSet, codec: str, got: list[bytes], compress: bool) -> None:
    """The run made what the reference encode made (compress) or every payload (decompress)."""
    expected = payload_set.encoded[codec] if compress else payload_set.payloads
    if got != expected:
        bad = next(i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
        direction = "compressed" if compress else "decompressed"
        raise AssertionError(f"{codec} {direction} {payload_set.name} #{bad} wrongly")


async def measure_compress(payload_set: PayloadSet, codec: Contender) -> float:
    """Seconds to encode every payload of the set once."""
    compressor = codec.make(payload_set.dictionary)
    compressor.encode(payload_set.payloads[0])  # this thread's context, outside the timing
    encode = compressor.encode
    payloads = payload_set.payloads
    start = perf_counter()
    got = [encode(payload) for payload in payloads]
    elapsed = perf_counter() - start
    _check(payload_set, codec.key, got, compress=True)
    return elapsed


async def measure_decompress(payload_set: PayloadSet, codec: Contender) -> float:
    """Seconds to decode every stored value of the set once."""
    compressor = codec.make(payload_set.dictionary)
    stored = payload_set.encoded[codec.key]
    compressor.decode(stored[0])  # this thread's context, outside the timing
    decode = compressor.decode
    start = perf_counter()
    got = [decode(value) for value in stored]
    elapsed = perf_counter() - start
    _check(payload_set, codec.key, got, compress=False)
    return elapsed


Measure = Callable[[PayloadSet, Contender], Coroutine[Any, Any, float]]


def _maker(
    measure: Measure, payload_set: PayloadSet, codec: Contender
) -> Callable[[], Coroutine[Any, Any, float]]:
    def make() -> Coroutine[Any, Any, float]:
        return measure(payload_set, codec)

    return make


#: The payload sets of the last plan, per loop (the report reads ratios and sizes from them).
_SETS: dict[str, list[PayloadSet]] = {}


def plan(config: Config, loop: LoopChoice) -> Plan:
    """Compress and decompress cases for every workload and codec, on the first loop only."""
    if loop != config.loops[0]:
        return Plan(
            cases=[],
            notes=[
                f"compression is CPU work with no awaits: measured on {config.loops[0]} only, "
                f"not again on {loop}."
            ],
        )
    count = min(config.jobs, QUICK_PAYLOADS if config.quick else PAYLOADS)
    sets = _SETS[loop] = payload_sets(count)
    result = Plan(cases=[])
    for payload_set in sets:
        for direction, measure in (
            ("compress", measure_compress),
            ("decompress", measure_decompress),
        ):
            for codec in CODECS:
                result.cases.append(
                    Case(
                        case=f"{direction} {payload_set.name}",
                        contender=codec.key,
                        label=codec.label,
                        make=_maker(measure, payload_set, codec),
                        items=payload_set.total,
                        unit="ms/MB",
                        scale=1e9,  # seconds per byte -> milliseconds per 10**6 bytes
                    )
                )
    trained = ", ".join(
        f"{s.name} {len(s.dictionary):,} B in {s.training_seconds * 1e3:.0f} ms" for s in sets
    )
    result.notes.append(
        f"compression: {count:,} payloads per workload, threshold=0 (every payload tried); "
        f"dictionaries trained on {count:,} payloads of another seed ({trained})."
    )
    return result


def _mb_per_s(ms_per_mb: float) -> str:
    return fmt(1e3 / ms_per_mb) if ms_per_mb > 0 else "-"


def report(h: Harness, loop: LoopChoice, results: list[Result]) -> None:
    """The table of ratio and MB/s per workload and codec; the ratios kept as side figures."""
    if not results:
        return  # measured on another loop (see the plan's note)
    sets = _SETS[loop]
    loop_name = results[0].loop
    by_key = {(r.case, r.contender): r for r in results}
    table = Table(
        title=f"compression: ratio and MB/s of the Compressor's codecs — loop {loop_name}",
        caption=f"median of {h.config.repeat} repetitions; MB = 10**6 payload bytes (both "
        "directions); best = fastest repetition; ratio = payload bytes / stored bytes, "
        "header included; raw = payloads left raw (not smaller compressed); x none = time "
        "/ the raw copy's; threshold 0, one Python call per payload",
    )
    for column in ("workload", "codec", "ratio", "raw", "compress MB/s", "best", "x none"):
        table.add_column(column, justify="left" if column in ("workload", "codec") else "right")
    for column in ("decompress MB/s", "best ", "x none "):
        table.add_column(column, justify="right")
    side: list[Result] = []
    for payload_set in sets:
        smallest, median, largest = payload_set.sizes()
        workload = (
            f"{payload_set.name}\n{len(payload_set.payloads):,} of {smallest:,}-{largest:,} B"
            f"\n(median {median:,})"
        )
        compress_base = by_key.get((f"compress {payload_set.name}", BASELINE))
        decompress_base = by_key.get((f"decompress {payload_set.name}", BASELINE))
        for index, codec in enumerate(CODECS):
            compress = by_key.get((f"compress {payload_set.name}", codec.key))
            decompress = by_key.get((f"decompress {payload_set.name}", codec.key))
            if compress is None or decompress is None:
                continue
            ratio = payload_set.ratio(codec.key)
            table.add_row(
                workload if index == 0 else "",
                codec.label,
                f"{ratio:.2f}",
                f"{payload_set.stored_raw(codec.key):,}",
                _mb_per_s(compress.value),
                _mb_per_s(compress.best),
                f"{compress.value / compress_base.value:.1f}x" if compress_base else "-",
                _mb_per_s(decompress.value),
                _mb_per_s(decompress.best),
                f"{decompress.value / decompress_base.value:.1f}x" if decompress_base else "-",
            )
            side.append(
                Result.side_figure(
                    NAME,
                    f"{payload_set.name}/ratio",
                    codec.key,
                    codec.label,
                    loop_name,
                    "x",
                    [ratio],
                    "payload bytes / stored bytes (header included), threshold 0",
                    higher_is_better=True,
                )
            )
        table.add_section()
    h.console.print(table)
    h.results.setdefault(NAME, []).extend(side)


SUITE = Suite(
    name=NAME,
    description="Compressor codecs (none, zstd level 3, zstd with a trained dictionary, lz4) "
    "on the session simulator's chat requests and replies and on requests of varied text: "
    "compression ratio, and compress and decompress MB/s (CPU only; first loop only).",
    plan=plan,
    report=report,
)
