"""The PII detector's work grows linearly with the prompt: a prompt dense in PII (thousands of e-mail addresses and
card numbers) must not hold the event loop for minutes. Work is counted (attribute reads, searched characters),
never timed. The faster code finds exactly what the quadratic code found."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings, strategies as st

from gateway.guardrails import pii
from gateway.guardrails.base import Finding
from gateway.guardrails.pii import PiiDetector

RANKED = list(pii._RANK)


def reference_resolve(found: list[Finding]) -> list[Finding]:
    """The former quadratic _resolve: each finding against every kept one."""
    found = sorted(found, key=lambda f: (pii._RANK[f.type], f.start - f.end, f.start))
    kept: list[Finding] = []
    for finding in found:
        if all(finding.end <= k.start or finding.start >= k.end for k in kept):
            kept.append(finding)
    return sorted(kept, key=lambda f: f.start)


spans = st.tuples(st.sampled_from(RANKED), st.integers(0, 400), st.integers(0, 90)).map(
    lambda t: Finding(t[0], t[1], t[1] + t[2])
)


@settings(max_examples=300, derandomize=True, deadline=None, database=None)
@given(found=st.lists(spans, max_size=40))
def test_resolve_keeps_what_the_quadratic_version_kept(found: list[Finding]) -> None:
    assert pii._resolve(list(found)) == reference_resolve(found)


class CountingFinding:
    """Reads of start and end are the comparisons _resolve makes."""

    reads = 0

    def __init__(self, kind: str, start: int, end: int) -> None:
        self.type, self._start, self._end = kind, start, end

    @property
    def start(self) -> int:
        CountingFinding.reads += 1
        return self._start

    @property
    def end(self) -> int:
        CountingFinding.reads += 1
        return self._end


def test_resolve_compares_a_finding_with_its_neighbours_only() -> None:
    n = 2_000
    found: Any = [CountingFinding("email", i * 20, i * 20 + 15) for i in range(n)]
    CountingFinding.reads = 0
    kept = pii._resolve(found)
    assert len(kept) == n
    assert CountingFinding.reads < 20 * n  # every kept one against every other: about n * n


class CountingText(str):
    """Counts the characters that str.find and str.rfind are asked to search."""

    searched = 0

    def find(self, sub: Any, start: Any = None, end: Any = None) -> int:
        CountingText.searched += (len(self) if end is None else end) - (start or 0)
        return super().find(sub, start, end)

    def rfind(self, sub: Any, start: Any = None, end: Any = None) -> int:
        CountingText.searched += (len(self) if end is None else end) - (start or 0)
        return super().rfind(sub, start, end)


def test_the_windows_around_digit_runs_search_a_bounded_stretch() -> None:
    text = CountingText("call 4111111111111111/" * 3_000)  # no newline anywhere
    CountingText.searched = 0
    windows = pii._windows(text)
    assert windows
    per_run = 4 * (8 * pii._WINDOW_BEFORE + 8 * pii._WINDOW_AFTER)
    assert CountingText.searched < 3_000 * per_run  # the whole text for each run was about 3,000 * 66,000


@settings(max_examples=200, derandomize=True, deadline=None, database=None)
@given(text=st.text(alphabet="0123456789 \n.-()/+abcDE@", max_size=300))
def test_the_bounded_windows_find_what_the_whole_searches_found(text: str) -> None:
    assert pii._windows(text) == reference_windows(text)
    assert isinstance(PiiDetector().detect(text), list)


def reference_windows(text: str) -> list[tuple[int, int, int, bool]]:
    """The former _windows: its searches ran over the whole text."""
    windows: list[tuple[int, int, int, bool]] = []
    for match in pii._NUMERIC_RUN.finditer(text):
        run = match.group()
        if len(run) < 7 or pii._DATE.fullmatch(run):
            continue
        digits = sum(map(str.isdigit, run))
        dotted = run.count(".") >= 3
        if digits < 7 and not dotted:
            continue
        start, end = max(0, match.start() - pii._WINDOW_BEFORE), min(len(text), match.end() + pii._WINDOW_AFTER)
        space = max(text.rfind(" ", 0, start), text.rfind("\n", 0, start))
        start = max(space + 1, start - 4 * pii._WINDOW_BEFORE, 0)
        space = min((i for i in (text.find(" ", end), text.find("\n", end)) if i >= 0), default=len(text))
        end = min(space, end + 4 * pii._WINDOW_AFTER, len(text))
        if windows and start <= windows[-1][1]:
            last = windows[-1]
            windows[-1] = (last[0], max(end, last[1]), max(digits, last[2]), dotted or last[3])
        else:
            windows.append((start, end, digits, dotted))
    return windows
