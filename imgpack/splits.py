"""Reproducible train/val/test splits.

The assignment depends on the seed, the fractions and the samples' paths only: the
samples are sorted by path before they are shuffled, so the file system's listing
order, the reader's order and the worker count change nothing. Each split gets its
fraction of the samples by largest remainder, so the counts are exact to one sample;
with ``stratify`` that holds within every class (every label set, for multi-label data,
and the unlabeled samples as a group of their own), as the APTOS 2019 notebooks' stratified 90/10 split does.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import replace
from itertools import repeat

import numpy as np

from .errors import UsageError
from .plugins import Sample, Samples, Scan

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def parse_split(text: str) -> dict[str, float]:
    """``train=0.8,val=0.1,test=0.1`` (fractions, or percentages that add up to 100) -> {name: fraction}."""
    out: dict[str, float] = {}
    for part in text.split(","):
        name, eq, value = part.strip().partition("=")
        name = name.strip()
        if not eq or not _NAME.fullmatch(name):
            raise UsageError(f"--split: expected NAME=FRACTION,... (e.g. train=0.8,val=0.1,test=0.1), got {part!r}")
        if name in out:
            raise UsageError(f"--split: {name!r} is given twice")
        try:
            fraction = float(value)
        except ValueError:
            raise UsageError(f"--split: {name}={value!r} is not a number") from None
        if not math.isfinite(fraction) or fraction < 0:
            raise UsageError(f"--split: {name}={value} must be a fraction >= 0")
        out[name] = fraction
    total = sum(out.values())
    if math.isclose(total, 100, rel_tol=1e-6) and total > 1.5:  # percentages
        out = {k: v / 100 for k, v in out.items()}
        total = 1.0
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise UsageError(f"--split: the fractions add up to {total:g}, not 1")
    return out


def split_counts(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """``n`` shared out by largest remainder: each count is floor or ceil of n * fraction; ties go in order."""
    exact = {k: n * f for k, f in fractions.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    order = sorted(fractions, key=lambda k: (-(exact[k] - counts[k]), list(fractions).index(k)))
    for k in order[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def stratified_counts(sizes: Sequence[int], fractions: dict[str, float]) -> list[dict[str, int]]:
    """Each stratum's split counts: every count the floor or ceiling of its exact share, and the
    totals those of the unstratified split (largest remainder over the whole), exactly.

    A controlled rounding: after the floors, each stratum takes its missing units in splits
    where its share has a remainder, the largest remainders first, and where that leaves a
    stratum short, units move along an augmenting path (a small max-flow) until all fit.
    """
    names = list(fractions)
    totals = split_counts(sum(sizes), fractions)
    exact = [[n * fractions[k] for k in names] for n in sizes]
    floor = [[math.floor(v) for v in row] for row in exact]
    up = [[False] * len(names) for _ in sizes]  # the cells rounded up
    need = [n - sum(row) for n, row in zip(sizes, floor, strict=True)]
    room = [totals[k] - sum(row[j] for row in floor) for j, k in enumerate(names)]
    can = [[exact[i][j] > floor[i][j] for j in range(len(names))] for i in range(len(sizes))]
    for _, i, j in sorted((floor[i][j] - exact[i][j], i, j) for i in range(len(sizes))
                           for j in range(len(names)) if can[i][j]):
        if need[i] > 0 and room[j] > 0:
            up[i][j], need[i], room[j] = True, need[i] - 1, room[j] - 1
    for i in range(len(sizes)):
        while need[i] > 0:
            path = _augmenting_path(i, up, can, room)
            if path is None:  # cannot happen for consistent totals; keep what fits
                break
            for r, c, turn_up in path:
                up[r][c] = turn_up
            room[path[-1][1]] -= 1
            need[i] -= 1
    return [{k: floor[i][j] + up[i][j] for j, k in enumerate(names)} for i in range(len(sizes))]


def _augmenting_path(start: int, up: list[list[bool]], can: list[list[bool]],
                     room: list[int]) -> list[tuple[int, int, bool]] | None:
    """Cells to flip so that stratum ``start`` gains a unit and a split with room gives one: a BFS that
    alternates rounding a cell up (stratum -> split) and one down (split -> another stratum)."""

    came: dict[tuple[str, int], tuple[tuple[str, int], tuple[int, int, bool]] | None] = {("r", start): None}
    queue = deque([("r", start)])
    while queue:
        kind, at = queue.popleft()
        if kind == "r":
            for j, allowed in enumerate(can[at]):
                if allowed and not up[at][j] and ("c", j) not in came:
                    came["c", j] = (("r", at), (at, j, True))
                    if room[j] > 0:
                        steps: list[tuple[int, int, bool]] = []
                        node: tuple[str, int] = ("c", j)
                        while came[node] is not None:
                            prev, step = came[node]  # type: ignore[misc]
                            steps.append(step)
                            node = prev
                        return steps[::-1]
                    queue.append(("c", j))
        else:
            for i in range(len(up)):
                if up[i][at] and ("r", i) not in came:
                    came["r", i] = (("c", at), (i, at, False))
                    queue.append(("r", i))
    return None


def assign(samples: Sequence[Sample], fractions: dict[str, float], seed: int, stratify: bool) -> list[str]:
    """The split of each sample (in the given order)."""
    columns = Samples.of(samples)
    paths, ids = columns.paths.tolist(), columns.ids.tolist()
    strata: list[tuple[int, ...]] = []  # a sample's labels (multi-label), else its label
    if stratify:
        strata = [many if many is not None else (one,) for one, many in
                  zip(columns.label.tolist(), columns.labels or repeat(None), strict=False)]
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i in sorted(range(len(paths)), key=lambda i: (paths[i], ids[i])):
        groups[strata[i] if stratify else ()].append(i)
    rng = np.random.default_rng(seed)
    out = [""] * len(samples)
    keys = sorted(groups)
    # the strata share the exact overall counts (a per-stratum rounding would drift: 2,200 at 0.8/0.1/0.1
    # in 5 classes gave 1757/243/200)
    shares = stratified_counts([len(groups[k]) for k in keys], fractions)
    for key, share in zip(keys, shares, strict=True):
        members = groups[key]
        order = rng.permutation(len(members))
        at = 0
        for name, count in share.items():
            for j in order[at:at + count]:
                out[members[j]] = name
            at += count
    return out


def apply_split(scan: Scan, fractions: dict[str, float], seed: int, stratify: bool) -> Scan:
    """``scan`` with every sample's ``split`` set."""
    names = assign(scan.samples, fractions, seed, stratify)
    return replace(scan, samples=scan.samples.with_splits(names), splits=list(fractions))


_USUAL = ("train", "training", "val", "valid", "validation", "dev", "test", "testing")


def folder_order(names: set[str]) -> list[str]:
    """Split folder names in the usual order: train, then validation, then test, then any others."""
    return sorted(names, key=lambda n: (_USUAL.index(n.lower()) if n.lower() in _USUAL else len(_USUAL), n))
