"""Persons, roles and principals: one identity model for the control API and the command line.

A *person* is a stable id for one human or system (`alice`, `minister-office`, an OS user name).
A person may hold several API tokens; every token records the person it belongs to and its
*lineage*: the persons who minted it, then who minted the minter's token, and so on up to the
OS user who made the first admin token. Anyone in a token's lineage could have kept a copy of
it, so for the two-person rule a token speaks for its person *and* its lineage.

At the command line the caller is the local OS user, taken from the process's real uid (never
from `$USER` or `$LOGNAME`, which anyone can set), unless an API token is given with `--token`.
"""

from __future__ import annotations

import enum
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass

from loa.errors import ApiError

CLI = "cli"  # how a principal from the command line without a token says it came


class Role(enum.IntEnum):
    """What a principal may do; a higher role may do all a lower one may."""

    VIEWER = 1
    OPERATOR = 2
    APPROVER = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        """The role's lower-case name, as the API and the audit log spell it."""
        return self.name.lower()

    @classmethod
    def parse(cls, value: str) -> Role:
        """A role from its name."""
        try:
            return cls[value.strip().upper()]
        except KeyError:
            names = ", ".join(role.label for role in cls)
            raise ApiError(f"unknown role {value!r}; expected one of {names}") from None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is acting: a person, their role, the token used (`cli` for none), its lineage."""

    person: str
    role: Role
    token: str = CLI
    lineage: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The person, as the audit log and the API show who acted."""
        return self.person

    @property
    def speaks_for(self) -> frozenset[str]:
        """Every person who could have made this request: its person and the token's lineage."""
        return frozenset((self.person, *self.lineage))


@dataclass(frozen=True, slots=True)
class Author:
    """The person who created a campaign, as the campaign stores it."""

    person: str
    lineage: tuple[str, ...] = ()

    @classmethod
    def of(cls, principal: Principal) -> Author:
        """The author of what `principal` creates."""
        return cls(principal.person, principal.lineage)


def local_person() -> str:
    """The OS user running this process, from its real uid."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a passwd entry (containers): the number is still stable
        return f"uid{uid}"


def local_principal() -> Principal:
    """The command line's caller without a token: the OS user, who holds loa's data anyway."""
    return Principal(local_person(), Role.ADMIN)


def program(person: str, role: Role) -> Principal:
    """A program acting as a named person with no token (the demo's operators, a benchmark)."""
    return Principal(person, role, token="program")


def same_person(author: Author, approver: Principal) -> str | None:
    """Why `approver` counts as `author` for the two-person rule, or None when they differ.

    The approver's person must be neither the author nor in the author's token lineage (who
    minted the author's token could have used it), and the author must not be in the approver's
    lineage (an approval with a token the author minted counts as the author).
    """
    if approver.person == author.person:
        return f"{approver.person} created this campaign"
    if approver.person in author.lineage:
        return f"{approver.person} minted the token this campaign was created with"
    if author.person in approver.lineage:
        return f"the approving token was minted by {author.person}, who created this campaign"
    return None


def lineage_of(minter: Principal) -> tuple[str, ...]:
    """The lineage of a token `minter` makes: the minter, then the minter's own lineage."""
    return _unique((minter.person, *minter.lineage))


def _unique(persons: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(persons))
