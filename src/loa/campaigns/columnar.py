"""The columnar planner: an SMS campaign's audience planned a column batch at a time.

It plans what the row planner plans, with the same counts, invalid lines and reasons and the
same queued messages (a property test holds them together), for the commonest campaign: one
SMS channel in one language, no per-person send time, no follow-up question. Numbers are
64-bit integers (`loa.campaigns.numbers`), deduplication a bitmap the planner holds
(`loa.campaigns.seen`), the text rendered once when it reads no field and once per person
otherwise, its parts counted once per distinct text. Only rows the vectorised steps cannot
decide (odd spellings, foreign numbers) take the row path's functions, one at a time.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from loa.campaigns.columns import Columns
from loa.campaigns.fill import fill, fillable
from loa.campaigns.numbers import e164, read_numbers
from loa.campaigns.partitions import Partition
from loa.campaigns.planner import Kind, Planner, Report, region_of
from loa.campaigns.templates import Slots, TemplateRefused
from loa.errors import TemplateError
from loa.message import Message
from loa.sms import analyse

_POWERS = 10 ** np.arange(19, dtype=np.int64)  # 1, 10, ... 10**18
DENSE_PREFIX = 7  # routing prefixes up to this long are looked up in an array (8 MB at most)


def eligible(planner: Planner) -> bool:
    """Whether the columnar planner plans this campaign (else the row planner does)."""
    plan = planner.plan
    return (
        planner.settings.planning.columnar
        and list(plan.channels) == ["sms"]
        and not planner.languages.multilingual
        and not planner.languages.runs_code
        and plan.schedule.send_at is None
        and plan.followup is None
        and planner.sms_routing is not None
    )


@dataclass(slots=True)
class Candidates:
    """One batch after the checks that need no memory of other rows, in line order."""

    counts: Report
    lines: Any  # numpy int64
    values: Any  # numpy int64: each candidate's number
    targets: Any  # numpy int64: index into ColumnarPlanner.targets
    contents: Any  # numpy int64: index into ColumnarPlanner.contents
    bodies: Any  # pyarrow strings, per candidate, when the text reads fields; else None
    regions: Any  # pyarrow strings: the raw `region` cell; None without the column


class ColumnarPlanner:
    """The steps of one batch that need no Redis: read, check, filter, render, route."""

    def __init__(self, planner: Planner, partition: Partition) -> None:
        self.planner = planner
        self.partition = partition
        self.targets: list[tuple[str, str]] = []  # (route, carrier name)
        self.contents: list[tuple[str, int, str]] = []  # (body, parts, encoding)
        self._target_of: dict[int, int] = {}  # number prefix and length -> target
        self._content_of: dict[str, int] = {}  # body -> content
        lengths = planner.sms_routing.table.lengths if planner.sms_routing else ()
        self._prefix = max(lengths, default=0) or 16
        self._kinds: dict[tuple[int, int], Kind] = {}
        self._parts: Any = np.zeros(0, np.int64)  # numpy: the parts of each content
        self._dense: Any = None  # numpy: target per prefix of an eleven-digit number, or -1

    def work(self, batch: Columns) -> Candidates:
        """The batch's candidates, and its counts of rows that are none."""
        counts = Report()
        cells = batch.column("phone")
        sifted = self.partition.sift(cells)  # other partitions' rows, set aside unread
        rows, ends = sifted if sifted is not None else (None, None)
        numbers = read_numbers(cells if rows is None else cells.take(pa.array(rows)))
        first = self.partition.index == 0  # bad rows, and invalid cells without an ending
        mine = numbers.valid & self.partition.mine(numbers.values)
        if ends is not None:  # sifted by their ending: theirs even if a number's differed
            mine = numbers.valid & (ends | mine)
        invalid = list(batch.bad) if first else []
        lines = batch.lines if rows is None else batch.lines[rows]
        invalid += [
            (int(lines[i]), why)
            for i, why in numbers.reasons.items()
            if ends is None or ends[i] or first
        ]
        counts.total = int(mine.sum()) + len(invalid)
        chosen = np.flatnonzero(mine)
        values = numbers.values
        if rows is not None:
            chosen = rows[chosen]
            values = np.zeros(len(batch.lines), np.int64)
            values[rows] = numbers.values
        if self.planner._filtering:
            chosen = self._filter(batch, chosen, counts)
        found = self._render(batch, chosen, invalid)
        for line, reason in sorted(invalid):
            counts.invalid_row(line, reason)
        return self._candidates(batch, chosen[found], values, counts)

    def _filter(self, batch: Columns, chosen: Any, counts: Report) -> Any:
        """The rows the plan's audience rules keep (rules read whole rows: one at a time)."""
        matches = self.planner.plan.audience.matches
        rows = _rows(batch, chosen)
        keep = np.array([matches(row) for row in rows], bool)
        counts.filtered += int(len(keep) - keep.sum())
        return chosen[keep] if len(keep) else chosen

    def _render(self, batch: Columns, chosen: Any, invalid: list[tuple[int, str]]) -> Any:
        """Each chosen row's text (or its reason to be invalid); a mask of those rendered."""
        planner = self.planner
        fixed = planner._channels[0].static
        if fixed is not None:
            body, parts, _, encoding = fixed
            ok = parts <= planner.max_parts
            if not ok:
                reason = str(planner._too_long(parts))
                invalid.extend((int(batch.lines[i]), reason) for i in chosen)
            self._contents = [self._content(body, parts, encoding)] * len(chosen) if ok else []
            self._bodies: Any = None
            return np.full(len(chosen), ok, bool)
        slots = self.planner.templates.sms_slots
        if slots is not None and fillable(slots) and len(chosen):
            return self._render_slots(batch, chosen, invalid, slots)
        return self._render_each(batch, chosen, invalid)

    def _render_slots(
        self, batch: Columns, chosen: Any, invalid: list[tuple[int, str]], slots: Slots
    ) -> Any:
        """Texts of slots filled a column at a time; parts counted once per distinct text."""
        taken = pa.array(chosen)
        cells = [batch.column(name).take(taken) for _, name in slots.slots]
        texts, reasons = fill(slots, cells)
        encoded = pc.dictionary_encode(texts)
        contents, failures = [], {}
        for index, body in enumerate(encoded.dictionary.to_pylist()):
            try:
                known = self._content_of.get(body)
                contents.append(self._measure(body) if known is None else known)
            except TemplateError as exc:
                contents.append(-1)
                failures[index] = str(exc)
        which = encoded.indices.to_numpy(zero_copy_only=False)
        per_row = np.array(contents, np.int64)[which]
        unmeasured = (per_row < 0) & (reasons == None)  # noqa: E711 (numpy, element-wise)
        for position in np.flatnonzero(unmeasured).tolist():
            reasons[position] = failures[int(which[position])]
        found = reasons == None  # noqa: E711
        lines = batch.lines[chosen]
        invalid.extend((int(lines[i]), str(reasons[i])) for i in np.flatnonzero(~found).tolist())
        self._contents = per_row[found].tolist()
        self._bodies = texts.filter(pa.array(found))
        return found

    def _render_each(self, batch: Columns, chosen: Any, invalid: list[tuple[int, str]]) -> Any:
        render: Callable[[Mapping[str, str]], str] = self.planner._sms_body
        found = np.ones(len(chosen), bool)
        contents: list[int] = []
        bodies: list[str] = []
        for position, row in enumerate(_rows(batch, chosen)):
            line = int(batch.lines[chosen[position]])
            try:
                body = render(row)
                content = self._content_of.get(body)
                if content is None:
                    content = self._measure(body)
            except TemplateRefused as exc:
                raise TemplateRefused(exc.key, f"{exc.reason} (audience line {line})") from None
            except TemplateError as exc:
                invalid.append((line, str(exc)))
                found[position] = False
                continue
            contents.append(content)
            bodies.append(body)
        self._contents, self._bodies = contents, pa.array(bodies, pa.string())
        return found

    def _measure(self, body: str) -> int:
        """A new text's parts and encoding, counted once; too many parts make it invalid."""
        info = analyse(body)
        if info.parts > self.planner.max_parts:
            raise self.planner._too_long(info.parts)
        return self._content(body, info.parts, str(info.encoding))

    def _content(self, body: str, parts: int, encoding: str) -> int:
        index = self._content_of.get(body)
        if index is None:
            index = self._content_of[body] = len(self.contents)
            self.contents.append((body, parts, encoding))
        return index

    def _candidates(self, batch: Columns, rows: Any, values: Any, counts: Report) -> Candidates:
        picked = values[rows]
        region = batch.get("region")
        return Candidates(
            counts,
            batch.lines[rows],
            picked,
            self._targets(picked),
            np.array(self._contents, np.int64),
            self._bodies,
            region.take(pa.array(rows)) if region is not None else None,
        )

    def _targets(self, values: Any) -> Any:
        """The (route, carrier) of each number, looked up once per distinct prefix."""
        if not len(values):
            return np.zeros(0, np.int64)
        if 0 < self._prefix <= DENSE_PREFIX and values.min() >= 10**10 and values.max() < 10**11:
            return self._targets_of_eleven(values)
        digits = np.searchsorted(_POWERS, values, side="right")
        shift = np.maximum(digits - (self._prefix - 1), 0)
        keys = (values // _POWERS[shift]) * 100 + digits
        unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        pairs = zip(first.tolist(), unique.tolist(), strict=True)
        found = [self._target(int(values[i]), key) for i, key in pairs]
        return np.array(found, np.int64)[inverse]

    def _targets_of_eleven(self, values: Any) -> Any:
        """`_targets` for numbers of eleven digits (+84 and nine: nearly all), without a sort:
        each prefix's target is kept in an array indexed by the prefix itself."""
        place = 10 ** (12 - self._prefix)  # the key of `_targets`, without its length
        heads = values // place
        if self._dense is None:
            self._dense = np.full(10 ** (self._prefix - 1), -1, np.int64)
        found = self._dense[heads]
        missing = np.flatnonzero(found < 0)
        if len(missing):
            new, first = np.unique(heads[missing], return_index=True)
            for head, at in zip(new.tolist(), missing[first].tolist(), strict=True):
                self._dense[head] = self._target(int(values[at]), head * 100 + 11)
            found = self._dense[heads]
        return found

    def _target(self, value: int, key: int) -> int:
        index = self._target_of.get(key)
        if index is None:
            assert self.planner.sms_routing is not None
            carrier, route = self.planner.sms_routing.lookup(f"+{value}")
            pair = (route, carrier or "other")
            if pair not in self.targets:
                self.targets.append(pair)
            index = self._target_of[key] = self.targets.index(pair)
        return index

    def kind(self, target: int, content: int) -> Kind:
        """What a message of this target and content is counted under."""
        found = self._kinds.get((target, content))
        if found is None:
            route, carrier = self.targets[target]
            _, parts, encoding = self.contents[content]
            found = (route, "sms", carrier, encoding, parts, self.planner.plan.language)
            self._kinds[(target, content)] = found
        return found

    def messages(self, picked: Candidates, kept: Any) -> dict[tuple[str, str], list[Message]]:
        """The kept candidates' messages per route and region (the raw `region` cell, batched
        apart), each group's in line order."""
        # grouped by route, not by target: carriers that share a route share its batches
        route_names = sorted({route for route, _ in self.targets})
        route_of = np.array([route_names.index(route) for route, _ in self.targets], np.int64)
        routes = route_of[picked.targets[kept]]
        names, regions = _regions(picked, kept)
        order = np.lexsort((regions, routes))  # stable: line order within each group
        ids = pc.cast(pa.array(picked.lines[kept][order]), pa.string()).to_pylist()
        tos = e164(picked.values[kept][order])
        contents = picked.contents[kept][order]
        self._parts = np.array([parts for _, parts, _ in self.contents], np.int64)
        bodies = None
        if picked.bodies is not None:
            bodies = picked.bodies.take(pa.array(kept[order])).to_pylist()
        changed = (np.diff(routes[order]) != 0) | (np.diff(regions[order]) != 0)
        edges = np.flatnonzero(changed) + 1
        out: dict[tuple[str, str], list[Message]] = {}
        for a, b in zip([0, *edges.tolist()], [*edges.tolist(), len(order)], strict=True):
            route = route_names[int(routes[order[a]])]
            region = names[int(regions[order[a]])]
            texts = bodies[a:b] if bodies else None
            out[(route, region)] = list(self._messages(ids[a:b], tos[a:b], contents[a:b], texts))
        return out

    def _messages(
        self, ids: list[str], tos: list[str], contents: Any, bodies: list[str] | None
    ) -> Iterator[Message]:
        if bodies is None and (contents == contents[0]).all():  # one text for all: built in C
            body, parts, _ = self.contents[int(contents[0])]
            return map(Message, ids, tos, repeat(body), repeat(parts))
        counts = self._parts[contents].tolist()
        texts = bodies or [self.contents[c][0] for c in contents.tolist()]
        return itertools.starmap(Message, zip(ids, tos, texts, counts, strict=True))

    def count(self, picked: Candidates, kept: Any) -> None:
        """Count the kept candidates as queued."""
        width = max(len(self.contents), 1)
        pairs = picked.targets[kept] * width + picked.contents[kept]
        kinds: Counter[Kind] = Counter()
        for pair, n in zip(*np.unique(pairs, return_counts=True), strict=True):
            kinds[self.kind(int(pair) // width, int(pair) % width)] += int(n)
        regions: Counter[str] = Counter({"": len(kept)} if len(kept) else {})
        if picked.regions is not None and len(kept):
            regions = Counter()
            for entry in pc.value_counts(picked.regions.take(pa.array(kept))).to_pylist():
                regions[entry["values"]] += entry["counts"]
        picked.counts.count_kinds(kinds, regions)


def _rows(batch: Columns, chosen: Any) -> list[dict[str, str]]:
    """Whole rows as the row planner sees them (for rules and templates that read fields)."""
    if not len(chosen):
        return []
    taken = pa.array(chosen)
    names = batch.names
    columns = [batch.get(name).take(taken).to_pylist() for name in names]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def _regions(picked: Candidates, kept: Any) -> tuple[list[str], Any]:
    """The distinct `region` cells of the kept candidates, and each one's index among them
    (numpy int64); one empty region for all without the column."""
    if picked.regions is None or not len(kept):
        return [""], np.zeros(len(kept), np.int64)
    encoded = pc.dictionary_encode(picked.regions.take(pa.array(kept)))
    names: list[str] = []
    index: dict[str, int] = {}
    to_name = []  # each raw cell's index among the regions as counted (cells alike fold)
    for cell in [*encoded.dictionary.to_pylist(), ""]:
        name = region_of(cell or "")
        to_name.append(index.setdefault(name, len(names)))
        if len(index) > len(names):
            names.append(name)
    raw = encoded.indices.fill_null(len(to_name) - 1).to_numpy(zero_copy_only=False)
    return names, np.asarray(to_name, np.int64)[raw.astype(np.int64)]

