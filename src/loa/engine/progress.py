"""How far a batch got: outcomes so far, what goes again, what gave up. Survives a crash."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgpack

from loa.errors import EnvelopeError


@dataclass(slots=True)
class Progress:
    """The state of one batch being sent; checkpointed to Redis after each chunk."""

    done: int = 0  # messages [0, done) have a result for this attempt
    counts: Counter[str] = field(default_factory=Counter)
    retry: list[tuple[int, float]] = field(default_factory=list)  # (index, delay in s)
    throttled: list[int] = field(default_factory=list)  # indexes to send again, same attempt
    dead: list[tuple[int, str]] = field(default_factory=list)  # (index, reason)
    requeue: list[int] = field(default_factory=list)  # indexes put back unsent (drain)
    throttle_after: float = 0.0  # the longest retry-after a throttling provider asked for
    hold_until_ms: int = 0  # the requeued rest waits until then (paused, quiet hours)
    # messages [done, handed) went to the adapter and their outcome is not recorded yet: if the
    # worker dies now, these (and only these) may have reached the provider (0: none did)
    handed: int = 0
    # per index of a message sent again: what it carries into its next send, in its `extra`
    # (the parts of it the provider took, that its last send got no answer)
    carry: dict[int, dict[str, Any]] = field(default_factory=dict)
    # the delivery (how many workers had taken the batch) that made the last progress: a batch
    # taken again and again without any is one that kills its workers
    delivery: int = 0

    def pack(self) -> bytes:
        """Encode for the progress hash."""
        return msgpack.packb(  # type: ignore[no-any-return]
            [
                self.done,
                dict(self.counts),
                self.retry,
                self.throttled,
                self.dead,
                self.requeue,
                self.throttle_after,
                self.hold_until_ms,
                self.handed,
                list(self.carry.items()),
                self.delivery,
            ]
        )

    @classmethod
    def unpack(cls, data: bytes) -> Progress:
        """Decode a checkpoint written by `pack`."""
        try:
            fields = msgpack.unpackb(data, strict_map_key=False)
            # checkpoints written before `handed`, `carry` and `delivery` have fewer fields
            done, counts, retry, throttled, dead, requeue, throttle_after, hold = fields[:8]
            handed = fields[8] if len(fields) > 8 else 0
            carry = fields[9] if len(fields) > 9 else []
            delivery = fields[10] if len(fields) > 10 else 0
            return cls(
                done=int(done),
                counts=Counter({str(k): int(v) for k, v in counts.items()}),
                retry=[(int(i), float(d)) for i, d in retry],
                throttled=[int(i) for i in throttled],
                dead=[(int(i), str(r)) for i, r in dead],
                requeue=[int(i) for i in requeue],
                throttle_after=float(throttle_after),
                hold_until_ms=int(hold),
                handed=int(handed),
                carry={int(i): dict(extra) for i, extra in carry},
                delivery=int(delivery),
            )
        except (ValueError, TypeError, AttributeError, msgpack.ExtraData) as exc:
            raise EnvelopeError(f"progress checkpoint is malformed: {exc}") from exc
