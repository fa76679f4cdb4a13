"""Pinned content: what a campaign was created with, so that what is approved is what is sent.

At create, the audience is copied into the campaign's own directory under the data directory
(private, read-only), hashing it on the way; a file too large to copy is pinned in place by its
size, modification time and SHA-256. The plan is stored whole in the campaign, with its SHA-256.
Approval records both digests; the approver's dry run and the launch read only pinned content,
and check it against those digests first.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from loa.engine.embedded import private_dir
from loa.errors import CampaignError

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class PinnedFile:
    """An audience as pinned: where it is read from and what it must be."""

    path: Path
    sha256: str
    size: int
    mtime_ns: int
    copied: bool

    def fields(self) -> dict[str, str | int]:
        """As the campaign stores it."""
        return {
            "audience": str(self.path),
            "audience_sha256": self.sha256,
            "audience_size": self.size,
            "audience_mtime_ns": self.mtime_ns,
            "audience_copied": int(self.copied),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> PinnedFile | None:
        """The pin a campaign stores, or None for one created before audiences were pinned."""
        if not fields.get("audience_sha256"):
            return None
        return cls(
            Path(fields["audience"]),
            fields["audience_sha256"],
            int(fields["audience_size"]),
            int(fields["audience_mtime_ns"]),
            fields.get("audience_copied") == "1",
        )


def text_digest(content: str) -> str:
    """The SHA-256 of a text, as plans are pinned."""
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def file_digest(path: Path) -> tuple[str, int]:
    """The SHA-256 and size of a file, read in chunks (a blocking call)."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def pin_audience(source: Path, directory: Path, copy_limit: int, *, move: bool) -> PinnedFile:
    """Pin `source` for a campaign whose directory is `directory` (a blocking call).

    `move` takes a file that is already loa's own (an upload) instead of copying it.
    """
    size = source.stat().st_size
    if size > copy_limit and not move:
        sha, size = file_digest(source)
        return PinnedFile(source, sha, size, source.stat().st_mtime_ns, copied=False)
    private_dir(directory.parent)
    directory.mkdir(mode=0o700)  # a new campaign's own: it must not exist yet
    target = directory / f"audience{source.suffix.lower()}"
    if move:
        os.replace(source, target)
    else:
        _copy(source, target)
    target.chmod(0o400)
    sha, size = file_digest(target)
    return PinnedFile(target, sha, size, target.stat().st_mtime_ns, copied=True)


def _copy(source: Path, target: Path) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with source.open("rb") as src, os.fdopen(fd, "wb") as dst:
        shutil.copyfileobj(src, dst, CHUNK)


def check_audience(pin: PinnedFile, approved_sha256: str | None = None) -> None:
    """Refuse, saying why, when the pinned audience is missing or not what was pinned/approved."""
    expected = pin.sha256 if approved_sha256 is None else approved_sha256
    where = "the campaign's pinned copy" if pin.copied else "the audience file"
    try:
        stat = pin.path.stat()
    except FileNotFoundError:
        raise CampaignError(
            f"{where} {pin.path} is gone; this campaign's audience must be read on the machine "
            "that created it, from its data directory"
        ) from None
    if stat.st_size != pin.size or stat.st_mtime_ns != pin.mtime_ns:
        raise _changed(where, pin.path)
    sha, _ = file_digest(pin.path)
    if sha != expected:
        raise _changed(where, pin.path)


def _changed(where: str, path: Path) -> CampaignError:
    return CampaignError(
        f"{where} {path} has changed since the campaign was created: it is not what was "
        "approved, and nothing of it is sent. Create a new campaign from the new file."
    )


def check_plan(plan_text: str, approved_sha256: str) -> None:
    """Refuse when the stored plan differs from the one that was approved."""
    if text_digest(plan_text) != approved_sha256:
        raise CampaignError(
            "the campaign's plan differs from the plan that was approved; nothing was sent"
        )
