"""Eviction policies: each simple policy against a reference model written plainly here,
W-TinyLFU against its invariants and its behaviour (sketch, doorkeeper, scan resistance,
admission, the adaptive window), and the errors of ``make_policy``."""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncperf.cache._policies import (
    POLICIES,
    EvictionPolicy,
    LRUPolicy,
    TinyLFUPolicy,
    _Entry,
    make_policy,
)
from asyncperf.cache._sketch import MAX_FREQUENCY, FrequencySketch

#: The heaviest weight a key gets: every max_weight in the tests is at least this.
HEAVIEST = 10
#: Operations in proportion: mostly puts and gets, now and then a removal, a resize or a
#: clear (a clear too often would keep the policies nearly empty).
KINDS = ["put"] * 18 + ["get"] * 16 + ["remove"] * 3 + ["resize"] * 2 + ["clear"]


def _operation(kind: str, key: int, weight: int) -> tuple[str, int, int]:
    if kind == "resize":  # new bounds: 1 to 8 entries, 10 to 40 in weight
        return kind, key % 8 + 1, HEAVIEST + 3 * weight
    return kind, key, weight


operations = st.lists(
    st.builds(_operation, st.sampled_from(KINDS), st.integers(0, 11), st.integers(0, HEAVIEST)),
    min_size=10,
    max_size=80,
)
bound_kinds = st.sampled_from(["entries", "weight", "both"])


def bounds(kind: str, entries: int, weight: int) -> tuple[int | None, int | None]:
    return (None if kind == "weight" else entries, None if kind == "entries" else weight)


# -- reference models: lists and dicts, no cleverness -------------------------------


@dataclass
class Model:
    """What a policy should hold, kept the obvious way; subclasses choose the victim."""

    max_entries: int | None
    max_weight: int | None
    weights: dict[int, int] = field(default_factory=dict)

    def over(self, entries: int, weight: int) -> bool:
        return (self.max_entries is not None and entries > self.max_entries) or (
            self.max_weight is not None and weight > self.max_weight
        )

    def total(self) -> int:
        return sum(self.weights.values())

    def evict_until_fits(self, extra_entries: int, extra_weight: int, keep: object) -> list[int]:
        evicted = []
        while self.over(len(self.weights) + extra_entries, self.total() + extra_weight):
            victim = self.victim(keep)
            self.forget(victim)
            evicted.append(victim)
        return evicted

    def insert(self, key: int, weight: int) -> list[int]:
        evicted = self.evict_until_fits(1, weight, None)
        self.weights[key] = weight
        self.added(key)
        return evicted

    def update(self, key: int, weight: int) -> list[int]:
        self.weights[key] = weight
        self.used(key)
        return self.evict_until_fits(0, 0, key)

    def resize(self, max_entries: int | None, max_weight: int | None) -> list[int]:
        self.max_entries, self.max_weight = max_entries, max_weight
        return self.evict_until_fits(0, 0, None)

    def forget(self, key: int) -> None:
        del self.weights[key]

    def clear(self) -> None:
        for key in list(self.weights):
            self.forget(key)

    def victim(self, keep: object) -> int:
        raise NotImplementedError

    def added(self, key: int) -> None:
        raise NotImplementedError

    def used(self, key: int) -> None:
        raise NotImplementedError


@dataclass
class LRUModel(Model):
    order: list[int] = field(default_factory=list)  # least recently used first

    def victim(self, keep: object) -> int:
        return next(key for key in self.order if key != keep)

    def added(self, key: int) -> None:
        self.order.append(key)

    def used(self, key: int) -> None:
        self.order.remove(key)
        self.order.append(key)

    def forget(self, key: int) -> None:
        super().forget(key)
        self.order.remove(key)


@dataclass
class FIFOModel(LRUModel):
    def used(self, key: int) -> None:
        pass  # neither hits nor updates move a key


@dataclass
class LFUModel(Model):
    counts: dict[int, int] = field(default_factory=dict)
    last_use: dict[int, int] = field(default_factory=dict)
    clock: itertools.count[int] = field(default_factory=itertools.count)

    def victim(self, keep: object) -> int:
        others = [key for key in self.weights if key != keep]
        return min(others, key=lambda key: (self.counts[key], self.last_use[key]))

    def added(self, key: int) -> None:
        self.counts[key] = 1
        self.last_use[key] = next(self.clock)

    def used(self, key: int) -> None:
        self.counts[key] += 1
        self.last_use[key] = next(self.clock)

    def forget(self, key: int) -> None:
        super().forget(key)
        del self.counts[key], self.last_use[key]


@dataclass
class SieveModel(Model):
    queue: list[int] = field(default_factory=list)  # oldest first
    visited: dict[int, bool] = field(default_factory=dict)
    hand: int | None = None  # the key the next eviction looks at first; None: the oldest

    def victim(self, keep: object) -> int:
        position = 0 if self.hand is None else self.queue.index(self.hand)
        while self.visited[self.queue[position]] or self.queue[position] == keep:
            self.visited[self.queue[position]] = False
            position = (position + 1) % len(self.queue)
        self.hand = self.queue[position]  # forget() moves it on to the next newer key
        return self.hand

    def added(self, key: int) -> None:
        self.queue.append(key)
        self.visited[key] = False

    def used(self, key: int) -> None:
        self.visited[key] = True

    def forget(self, key: int) -> None:
        super().forget(key)
        position = self.queue.index(key)
        if self.hand == key:
            newer = self.queue[position + 1 :]
            self.hand = newer[0] if newer else None
        del self.queue[position], self.visited[key]


MODELS: dict[str, type[Model]] = {
    "lru": LRUModel,
    "fifo": FIFOModel,
    "lfu": LFUModel,
    "sieve": SieveModel,
}


def drive(policy: EvictionPolicy, op: str, key: int, value: int) -> list[Hashable]:
    """Apply one operation as a cache would; the keys it evicted."""
    if op == "put":
        return policy.update(key, value) if key in policy else policy.insert(key, value)
    if op == "get":
        if key in policy:
            policy.access(key)
        else:
            policy.miss(key)
        return []
    if op == "remove":
        if key in policy:
            policy.remove(key)
        return []
    if op == "resize":
        entries = None if policy.max_entries is None else key
        weight = None if policy.max_weight is None else value
        return policy.resize(entries, weight)
    policy.clear()
    return []


def drive_model(model: Model, op: str, key: int, value: int) -> list[int]:
    if op == "put":
        return model.update(key, value) if key in model.weights else model.insert(key, value)
    if op == "get":
        if key in model.weights:
            model.used(key)
        return []
    if op == "remove":
        if key in model.weights:
            model.forget(key)
        return []
    if op == "resize":
        entries = None if model.max_entries is None else key
        weight = None if model.max_weight is None else value
        return model.resize(entries, weight)
    model.clear()
    return []


@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=400, deadline=None)
@given(ops=operations, kind=bound_kinds, entries=st.integers(1, 6), weight=st.integers(10, 30))
def test_policy_matches_its_reference_model(
    name: str, ops: list[tuple[str, int, int]], kind: str, entries: int, weight: int
) -> None:
    """After every operation the policy holds the model's keys and evicted the model's victims."""
    max_entries, max_weight = bounds(kind, entries, weight)
    policy = make_policy(name, max_entries, max_weight)
    model = MODELS[name](max_entries, max_weight)
    for op, key, value in ops:
        assert drive(policy, op, key, value) == drive_model(model, op, key, value), (op, key)
        assert {k for k in range(12) if k in policy} == set(model.weights)
        assert sorted(policy.items()) == sorted(model.weights.items())  # no key twice
        assert len(policy) == len(model.weights)
        assert policy.weight == model.total()
    if name in ("lru", "fifo"):
        assert [key for key, _ in policy.items()] == model.order  # type: ignore[attr-defined]


def test_lfu_evicts_the_least_used_then_the_least_recent() -> None:
    """Among keys used as often, the one used longest ago goes; the newcomer never does."""
    policy = make_policy("lfu", max_entries=3)
    for key in "abc":
        policy.insert(key, 1)
    policy.access("a")
    policy.access("b")
    assert policy.insert("d", 1) == ["c"]  # c: used once
    assert policy.insert("e", 1) == ["d"]  # d: used once, and the newcomer stays
    policy.access("e")
    assert policy.insert("f", 1) == ["a"]  # a, b, e used twice; a longest ago
    assert [key for key, _ in policy.items()] == ["f", "b", "e"]


def test_sieve_gives_visited_keys_a_second_chance_and_keeps_its_hand() -> None:
    """The hand clears visited bits on its way and resumes where it stopped."""
    policy = make_policy("sieve", max_entries=3)
    for key in "abc":
        policy.insert(key, 1)
    policy.access("a")
    assert policy.insert("d", 1) == ["b"]  # a visited: spared, its bit cleared
    assert policy.insert("e", 1) == ["c"]  # the hand went on from b's place
    assert policy.insert("f", 1) == ["d"]  # and on: a, the oldest, is behind the hand
    assert policy.insert("g", 1) == ["e"]
    assert [key for key, _ in policy.items()] == ["f", "g", "a"]


def test_none_is_a_key_like_any_other() -> None:
    """None as a key is evicted, kept and updated like any key."""
    for name in POLICIES:
        policy = make_policy(name, max_entries=2)
        policy.insert(None, 1)
        policy.insert("x", 1)
        policy.access(None)
        policy.access("x")
        assert None in policy
        assert policy.update(None, 1) == []
        evicted = policy.insert("y", 1)
        assert len(evicted) == 1
        assert len(policy) == 2


# -- W-TinyLFU: invariants -----------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    ops=operations,
    kind=bound_kinds,
    entries=st.integers(1, 6),
    weight=st.integers(10, 30),
    seed=st.integers(0, 3),
)
def test_tinylfu_keeps_its_invariants(
    ops: list[tuple[str, int, int]], kind: str, entries: int, weight: int, seed: int
) -> None:
    """Bounds hold, the resident keys are what went in minus what came out, an update
    never evicts its own key, and the window and protected targets stay in range."""
    max_entries, max_weight = bounds(kind, entries, weight)
    policy = TinyLFUPolicy(max_entries, max_weight, seed=seed)
    resident: dict[Hashable, int] = {}
    for op, key, value in ops:
        updating = op == "put" and key in resident
        evicted = drive(policy, op, key, value)
        assert len(evicted) == len(set(evicted))
        if op == "put":
            resident[key] = value
        elif op == "remove":
            resident.pop(key, None)
        elif op == "clear":
            resident.clear()
        if updating:
            assert key not in evicted
        assert set(evicted) <= set(resident)
        for gone in evicted:
            del resident[gone]
        assert {k for k in range(12) if k in policy} == set(resident)
        assert sorted(policy.items()) == sorted(resident.items())  # no key twice
        assert len(policy) == len(resident)
        assert policy.weight == sum(resident.values())
        if policy.max_entries is not None:
            assert len(policy) <= policy.max_entries
        if policy.max_weight is not None:
            assert policy.weight <= policy.max_weight
        capacity = policy.max_weight if policy.max_weight is not None else policy.max_entries
        assert capacity is not None
        assert policy.window_max >= 1
        assert policy.window_max + policy.protected_max <= capacity


def test_tinylfu_unbounded_never_evicts() -> None:
    """Without bounds nothing is evicted, and a later bound evicts down to it."""
    policy = TinyLFUPolicy()
    for key in range(500):
        policy.miss(key)
        assert policy.insert(key, 1) == []
    assert len(policy) == 500
    evicted = policy.resize(100, None)
    assert len(evicted) == 400
    assert len(policy) == 100


# -- W-TinyLFU: the sketch -------------------------------------------------------------


def test_sketch_counts_saturates_and_halves() -> None:
    """The doorkeeper takes the first occurrence, counters the rest up to 15; ageing
    halves the counters and clears the doorkeeper."""
    sketch = FrequencySketch(1_000)
    slots = {key: sketch.locate(key) for key in ("a", "b", "c", 7)}
    assert sketch.increment(slots["a"]) is False  # the doorkeeper took it
    assert sketch.frequency(slots["a"]) == 1
    for _ in range(8):
        assert sketch.increment(slots["b"]) in (True, False)
    assert sketch.frequency(slots["b"]) == 8
    for _ in range(30):
        sketch.increment(slots["c"])
    assert sketch.frequency(slots["c"]) == MAX_FREQUENCY
    assert sketch.increment(slots["c"]) is False  # saturated
    assert sketch.frequency(slots[7]) == 0
    sketch.age()
    assert sketch.frequency(slots["a"]) == 0  # only ever in the doorkeeper
    assert sketch.frequency(slots["b"]) == 3  # counters 7 -> 3, doorkeeper cleared
    assert sketch.frequency(slots["c"]) == 7
    sketch.add(slots["b"], 4)  # the doorkeeper takes one again
    assert sketch.frequency(slots["b"]) == 7
    sketch.clear()
    assert sketch.frequency(slots["c"]) == 0


def test_sketch_estimates_many_keys_within_the_count_min_bound() -> None:
    """Estimates never undercount and rarely overcount by much at the designed load."""
    sketch = FrequencySketch(1_000)
    rng = random.Random(5)
    truth = {key: rng.randint(1, 12) for key in range(1_000)}
    for key, count in truth.items():
        sketch.add(sketch.locate(key), count)
    errors = [sketch.frequency(sketch.locate(key)) - count for key, count in truth.items()]
    assert min(errors) >= 0
    assert sum(error > 2 for error in errors) < 20


def test_doorkeeper_keeps_one_hit_wonders_out_of_the_counters() -> None:
    """A stream of one-off keys leaves every counter at zero; a second occurrence counts."""
    sketch = FrequencySketch(1_000)
    for key in range(5_000):
        sketch.increment(sketch.locate(f"once-{key}"))
    assert sketch.door_additions >= 4_900  # a few false positives at most
    sketch.age()
    assert sketch.door_additions == 0
    assert all(sketch.frequency(sketch.locate(f"once-{key}")) == 0 for key in range(5_000))
    twice = sketch.locate("twice")
    sketch.increment(twice)
    assert sketch.increment(twice) is True
    sketch.age()
    assert sketch.frequency(twice) == 0  # 1 -> 0; a third occurrence would have kept one


@pytest.mark.parametrize(
    "capacity",
    [1_000, 40_000, 200_000],  # 16-bit lanes; 32-bit lanes; and a doorkeeper packed in bits
)
def test_sketch_record_counts_as_locate_then_increment(capacity: int) -> None:
    """``record`` (the miss path's one call) finds the slots ``locate`` finds and counts
    what ``increment`` counts, in every layout of the rows and of the doorkeeper."""
    recorded, reference = FrequencySketch(capacity), FrequencySketch(capacity)
    rng = random.Random(capacity)
    keys: list[Hashable] = [f"k{i}" for i in range(300)] + [-(1 << 70), 1 << 80, None, 2.5]
    keys += [rng.getrandbits(64) for _ in range(300)]
    for round_ in range(3):
        for _ in range(4_000):
            key = rng.choice(keys)
            slots = reference.locate(key)
            before = recorded.recorded
            assert recorded.record(hash(key)) == slots
            assert (recorded.recorded == before + 1) == reference.increment(slots)
        assert recorded.door_additions == reference.door_additions
        assert [recorded.frequency(recorded.locate(k)) for k in keys] == [
            reference.frequency(reference.locate(k)) for k in keys
        ]
        if round_ == 0:
            recorded.age()
            reference.age()


def test_tinylfu_ages_its_sketch_after_a_sample() -> None:
    """After about ten times the capacity in recorded events, frequencies are halved."""
    policy = TinyLFUPolicy(100)
    for _ in range(9):
        policy.miss("popular")
    assert policy.frequency("popular") == 9
    one_offs = 0
    while policy.frequency("popular") == 9:  # one-offs fill the doorkeeper: a sample's worth
        policy.miss(one_offs)
        one_offs += 1
    assert 900 <= one_offs <= 1_100
    assert policy.frequency("popular") == 4  # counters 8 -> 4, doorkeeper cleared


def test_tinylfu_hits_count_toward_the_frequency() -> None:
    """Hits are uses: admission sees them when it compares a key."""
    policy = TinyLFUPolicy(100)
    policy.miss("k")
    policy.insert("k", 1)
    assert policy.frequency("k") == 1
    for _ in range(5):
        policy.access("k")
    assert policy.frequency("k") == 6


# -- W-TinyLFU: behaviour --------------------------------------------------------------


def simulate(policy: EvictionPolicy, keys: Iterable[Hashable]) -> list[bool]:
    """Run requests through a policy as a cache would; whether each was a hit."""
    hits = []
    for key in keys:
        if key in policy:
            policy.access(key)
            hits.append(True)
        else:
            policy.miss(key)
            policy.insert(key, 1)
            hits.append(False)
    return hits


def test_popular_keys_survive_a_long_scan_that_flushes_lru() -> None:
    """A hot set hit once every 500 requests stays in W-TinyLFU through 18,000 one-off
    keys; LRU, whose 100 entries see each hot key leave before it returns, keeps none."""
    hot = [f"hot-{i}" for i in range(50)]
    warm = hot * 20
    stream: list[Hashable] = []
    scan = (f"scan-{i}" for i in itertools.count())
    for _ in range(40):
        for key in hot:
            stream.append(key)
            stream.extend(next(scan) for _ in range(9))
    results = {}
    for name in ("lru", "tinylfu"):
        policy = make_policy(name, max_entries=100)
        simulate(policy, warm)
        hits = simulate(policy, stream)
        hot_hits = [hit for key, hit in zip(stream, hits, strict=True) if key in hot]
        results[name] = sum(hot_hits) / len(hot_hits)
    assert results["tinylfu"] >= 0.95
    assert results["lru"] <= 0.01  # only the first round, before the scan flushed it


def test_admission_refuses_a_cold_candidate_and_admits_a_popular_one() -> None:
    """A new key pushed out of the window loses to a more popular victim; one asked for
    often enough wins and evicts the victim."""
    policy = TinyLFUPolicy(100)
    simulate(policy, [f"r-{i}" for i in range(100)] * 3)  # everyone used three times
    simulate(policy, ["cold-0"])  # the window (one entry) now holds a cold key
    residents = {key for key, _ in policy.items()} - {"cold-0"}
    assert len(residents) == 99
    policy.miss("cold-1")
    assert policy.insert("cold-1", 1) == ["cold-0"]  # refused: frequency 1 against 3
    policy.miss("cold-2")
    assert policy.insert("cold-2", 1) == ["cold-1"]
    assert {key for key, _ in policy.items()} == residents | {"cold-2"}
    for _ in range(6):
        policy.miss("wanted")
    assert policy.insert("wanted", 1) == ["cold-2"]
    victim = next(iter(policy.items()))[0]  # the front of probation
    policy.miss("push")
    assert policy.insert("push", 1) == [victim]  # "wanted" (6) beat the victim (3)
    assert victim in residents
    assert "wanted" in policy


def test_admission_can_refuse_the_inserted_key_itself() -> None:
    """With weights, a key heavier than the window is a candidate at once, and may lose."""
    policy = TinyLFUPolicy(max_weight=1_000)
    assert policy.window_max == 10
    residents = [f"r-{i}" for i in range(100)]
    for _ in range(3):
        for key in residents:
            if key in policy:
                policy.access(key)
            else:
                policy.miss(key)
                policy.insert(key, 10)
    policy.miss("big")
    assert "big" in policy.insert("big", 20)
    assert "big" not in policy
    assert policy.weight <= 1_000


def test_a_popular_losing_candidate_is_sometimes_admitted() -> None:
    """Ties go to the victim, but a candidate seen six times or more wins one time in 128
    (a flood of keys colliding with the victim's counters cannot pin it forever)."""
    policy = TinyLFUPolicy(100, seed=3)
    sketch = policy._sketch

    def entry(key: str, uses: int) -> _Entry:
        made = _Entry(1, sketch.locate(key))
        made.uses = uses
        return made

    popular, victim = entry("candidate", 7), entry("victim", 7)
    admitted = sum(policy._admit(popular, victim) for _ in range(12_800))
    assert 50 <= admitted <= 150  # about 100
    modest, victim = entry("candidate", 5), entry("victim", 5)
    assert not any(policy._admit(modest, victim) for _ in range(2_000))
    assert policy._admit(entry("candidate", 7), entry("victim", 5))  # beats it by two


def test_update_never_evicts_the_updated_key() -> None:
    """Growing a key's weight evicts others, whichever region the key is in."""
    policy = TinyLFUPolicy(max_weight=100)
    for key in range(10):
        policy.miss(key)
        policy.insert(key, 10)
    assert len(policy.update(0, 60)) == 5  # 150 to 100: five keys of 10 leave
    policy.update(0, 5)
    for key in range(10):
        if key not in policy:
            policy.miss(key)
            policy.insert(key, 10)
        evicted = policy.update(key, 60)
        assert key not in evicted
        assert key in policy
        assert policy.weight <= 100
        assert policy.update(key, 5) == []


def recency_stream(length: int, distance: int, first: int) -> list[Hashable]:
    """Each new key is asked for again ``distance`` requests later, then never."""
    stream: list[Hashable] = []
    for i in range(length):
        stream.append(first + i)
        if i >= distance:
            stream.append(first + i - distance)
    return stream


def zipf_stream(rng: random.Random, length: int, keys: int) -> list[Hashable]:
    """Keys 0 to ``keys - 1``, the one of rank r asked for in proportion to 1/r."""
    weights = [1 / (rank + 1) for rank in range(keys)]
    return list(rng.choices(range(keys), weights=weights, k=length))


def test_window_grows_on_a_recency_biased_stream_and_shrinks_on_a_frequency_biased_one() -> None:
    """The climber moves the split toward the side that would have hit more."""
    rng = random.Random(0)  # int keys hash the same in every process: a fixed outcome
    policy = TinyLFUPolicy(400, seed=1)
    start = policy.window_max
    assert start == 4
    simulate(policy, zipf_stream(rng, 8_000, 4_000))
    assert policy.window_max <= start  # frequency-biased from the start: stays small
    simulate(policy, recency_stream(10_000, 20, first=1_000_000))
    grown = policy.window_max
    assert grown >= 50  # each key returns 20 requests later: a window of 4 misses it
    simulate(policy, zipf_stream(rng, 40_000, 4_000))
    assert policy.window_max <= grown / 2


class PlainTinyLFU(TinyLFUPolicy):
    """W-TinyLFU without its fast paths: hits through ``_use``, every insertion through
    the general eviction, and the ghosts trimmed in full after each eviction."""

    def _make_access(self) -> Callable[[Hashable], None]:
        return functools.partial(TinyLFUPolicy.access, self)

    def _evict_one(self) -> list[Hashable]:
        self._window_size += 1
        return self._evict(None)

    def _haunt(self, by_window: bool, key: Hashable, units: int) -> None:
        super()._haunt(by_window, key, units)
        self._trim_ghosts()


def observe(policy: TinyLFUPolicy) -> tuple[object, ...]:
    """What decides what the policy does next (the window ghosts a miss would count)."""
    oldest = policy._departed - policy._ghost_limit
    return (
        list(policy.items()),
        {ghost for ghost, left in policy._ghost_window.items() if left >= oldest},
        list(policy._ghost_main.items()),
        policy.window_max,
        policy.protected_max,
        policy._hits,
        policy._misses,
        policy._ghost_window_hits,
        policy._ghost_main_hits,
        policy._main_edge_hits,
    )


@pytest.mark.parametrize(("max_entries", "max_weight"), [(60, None), (None, 300), (80, 400)])
def test_tinylfu_fast_paths_decide_as_the_plain_ones(
    max_entries: int | None, max_weight: int | None
) -> None:
    """The hit path, the eviction of a full cache and the ghosts' trimming, each written
    for speed, evict the same keys in the same order as the plain code, and the climber
    counts the same hits, through resizes (which change the ghosts' step) and clears."""
    fast = TinyLFUPolicy(max_entries, max_weight, seed=2)
    plain = PlainTinyLFU(max_entries, max_weight, seed=2)
    rng = random.Random(7)
    stream = zipf_stream(rng, 30_000, 400) + recency_stream(6_000, 30, first=10_000)
    for step, key in enumerate(stream):
        roll = rng.random()
        weight = rng.randint(0, 9)
        if key in fast:
            if roll < 0.85:
                fast.access(key)
                plain.access(key)
            elif roll < 0.95:
                assert fast.update(key, weight) == plain.update(key, weight)
            else:
                fast.remove(key)
                plain.remove(key)
        elif roll < 0.1:
            assert fast.insert(key, weight) == plain.insert(key, weight)  # set without a get
        else:
            fast.miss(key)
            plain.miss(key)
            if roll < 0.9:
                assert fast.insert(key, weight) == plain.insert(key, weight)
        if step % 3_000 == 2_999:
            entries = max_entries and rng.randint(max_entries // 3, 2 * max_entries)
            weight_bound = max_weight and rng.randint(max_weight // 3, 2 * max_weight)
            assert fast.resize(entries, weight_bound) == plain.resize(entries, weight_bound)
        if step == 20_000:
            fast.clear()
            plain.clear()
        assert observe(fast) == observe(plain), step


def test_tinylfu_shrinking_relocates_the_entries_in_the_smaller_sketch() -> None:
    """A resize gives the sketch a new size, and the resident entries their places in it:
    admission against entries placed in a bigger sketch would read past its end."""
    policy = TinyLFUPolicy(2_000)
    keys = [f"k{i}" for i in range(2_000)]
    simulate(policy, keys * 3)
    evicted = policy.resize(100, None)
    assert len(evicted) == 1_900
    assert len(policy) == 100
    assert policy._sketch.capacity == 100
    assert all(0 <= policy.frequency(key) <= MAX_FREQUENCY for key, _ in policy.items())
    simulate(policy, [f"new-{i}" for i in range(500)])  # admission keeps working
    assert len(policy) == 100


class EqualToAll:
    """A key equal to everything (as ``unittest.mock.ANY`` is), with a hash of its own."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 12_345


def test_an_insertion_takes_the_slots_of_a_pending_miss_only() -> None:
    """``insert`` reuses what ``miss`` recorded for the same key once; a later insertion
    of another key, however it compares, is recorded on its own."""
    policy = TinyLFUPolicy(100)
    for _ in range(5):
        policy.miss("popular")
    policy.insert("popular", 1)
    assert policy.frequency("popular") == 5  # four counts and the doorkeeper's one
    odd = EqualToAll()
    policy.insert(odd, 1)
    assert policy.frequency(odd) == 1


# -- errors ------------------------------------------------------------------------------


def test_make_policy_names_a_bad_policy() -> None:
    with pytest.raises(ValueError, match=r"^policy must be one of fifo, lfu, lru, sieve, tinylfu"):
        make_policy("arc")
    with pytest.raises(ValueError, match=r"^policy must be one of"):
        make_policy(["lru"])  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_bad_bounds_name_the_parameter(name: str) -> None:
    with pytest.raises(ValueError, match=r"^max_entries must be >= 1, not 0$"):
        make_policy(name, max_entries=0)
    with pytest.raises(TypeError, match=r"^max_entries must be an int, not str$"):
        make_policy(name, max_entries="10")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^max_weight must be >= 1, not -5$"):
        make_policy(name, max_weight=-5)
    with pytest.raises(TypeError, match=r"^max_weight must be an int, not float$"):
        make_policy(name, max_weight=1.5)  # type: ignore[arg-type]
    policy = make_policy(name, max_entries=10)
    with pytest.raises(ValueError, match=r"^max_entries must be >= 1, not 0$"):
        policy.resize(0, None)


def test_lru_access_is_bound_to_the_order() -> None:
    """The LRU hit path is the OrderedDict's own move_to_end (no Python frame)."""
    policy = LRUPolicy(2)
    policy.insert("a", 1)
    policy.insert("b", 1)
    policy.access("a")
    assert policy.insert("c", 1) == ["b"]
