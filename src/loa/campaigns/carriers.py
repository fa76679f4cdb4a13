"""Which Vietnamese carrier serves a number, and which SMS route carries its messages.

A CarrierTable maps number prefixes to carrier names, longest prefix first, so an operator can
add a ported number (`{"0961234567": "vinaphone"}`) on top of the default prefix table and it
wins over the `096` Viettel block. Lookups are a few dict probes on slices of the E.164 string,
one per distinct prefix length in the table: no regex, no parsing, because the planner calls
this once per recipient.

Prefixes are given in national form (`"096"`) or E.164 form (`"+8496"`); carrier names are
case-insensitive and kept lower-case, the same names SmsRouting maps to routes.
"""

from __future__ import annotations

from collections.abc import Mapping

from loa.errors import ConfigError

VN = "+84"

# The 3-digit prefixes (trunk 0 included) of each operator's mobile ranges, as allocated by the
# Ministry of Information and Communications (the 2018 conversion moved 01xx to 03x/05x/07x/08x).
# Cross-checked with libphonenumber's carrier data; iTel's 087 is shown there as Vinaphone, whose
# network the iTel MVNO uses, and Reddi (also an MVNO on VNPT) holds 055.
DEFAULT_PREFIXES: Mapping[str, str] = {
    **dict.fromkeys(
        ["086", "096", "097", "098", "032", "033", "034", "035", "036", "037", "038", "039"],
        "viettel",
    ),
    **dict.fromkeys(["088", "091", "094", "081", "082", "083", "084", "085"], "vinaphone"),
    **dict.fromkeys(["089", "090", "093", "070", "076", "077", "078", "079"], "mobifone"),
    **dict.fromkeys(["092", "052", "056", "058"], "vietnamobile"),
    **dict.fromkeys(["099", "059"], "gmobile"),
    "087": "itel",
    "055": "reddi",
}

# A full Vietnamese mobile has 9 digits after +84: a key longer than that can never match.
_MAX_NATIONAL = 9

# Keys with this many digits may be a subscriber's number (a port override), which must not
# reach logs; shorter ones are range prefixes and are shown whole.
_MASK_FROM_DIGITS = 7


class CarrierTable:
    """Longest-prefix map from E.164 numbers to carrier names; immutable once built."""

    __slots__ = ("_tables",)

    def __init__(self, prefixes: Mapping[str, str]) -> None:
        by_length: dict[int, dict[str, str]] = {}
        for key, carrier in prefixes.items():
            prefix = _e164_prefix(key)
            where = f"carrier prefix {_shown(key)}"
            by_length.setdefault(len(prefix), {})[prefix] = _carrier_name(carrier, where)
        # One dict per prefix length, longest first: a ported number or a sub-block beats the
        # 3-digit range it lies in.
        self._tables = tuple((n, by_length[n]) for n in sorted(by_length, reverse=True))

    @classmethod
    def default(cls, overrides: Mapping[str, str] | None = None) -> CarrierTable:
        """The built-in Vietnamese table, with `overrides` (ports, new ranges) on top."""
        return cls(DEFAULT_PREFIXES).extended(overrides or {})

    def extended(self, overrides: Mapping[str, str]) -> CarrierTable:
        """A new table: this one plus `overrides`, which replace entries with the same prefix."""
        return CarrierTable({**self.prefixes, **overrides})

    @property
    def prefixes(self) -> dict[str, str]:
        """Every entry as E.164 prefix -> carrier (a copy: the table itself does not change)."""
        return {prefix: name for _, table in self._tables for prefix, name in table.items()}

    @property
    def carriers(self) -> frozenset[str]:
        """The carrier names this table can answer."""
        return frozenset(self.prefixes.values())

    @property
    def lengths(self) -> tuple[int, ...]:
        """The prefix lengths the table holds, longest first: with one, the carrier of a
        number depends only on that many leading characters (a cache can key on them)."""
        return tuple(length for length, _ in self._tables)

    def carrier_of(self, e164: str) -> str | None:
        """The carrier serving `e164` (`+84961234567` -> `viettel`); None if foreign or unknown."""
        # Every key starts with +84, so a foreign number simply matches nothing.
        for length, table in self._tables:
            carrier = table.get(e164[:length])
            if carrier is not None:
                return carrier
        return None

    def __len__(self) -> int:
        return sum(len(table) for _, table in self._tables)

    def __repr__(self) -> str:
        return f"CarrierTable({len(self)} prefixes, carriers={sorted(self.carriers)})"


class SmsRouting:
    """Picks the SMS route for a number: its carrier's route, or the default route."""

    __slots__ = ("default", "routes", "table")

    def __init__(self, table: CarrierTable, routes: Mapping[str, str], default: str) -> None:
        self.table = table
        self.routes = {
            _carrier_name(carrier, f"sms route {_shown(carrier)}"): _route_name(carrier, route)
            for carrier, route in routes.items()
        }
        self.default = _route_name("default", default)

    def route_for(self, e164: str) -> str:
        """The route name for `e164`; unknown carriers and foreign numbers take the default."""
        carrier = self.table.carrier_of(e164)
        if carrier is None:
            return self.default
        return self.routes.get(carrier, self.default)

    def lookup(self, e164: str) -> tuple[str | None, str]:
        """The carrier serving `e164` (None: unknown) and its route, from one table look-up."""
        carrier = self.table.carrier_of(e164)
        if carrier is None:
            return None, self.default
        return carrier, self.routes.get(carrier, self.default)

    def unrouted(self) -> frozenset[str]:
        """Carriers the table knows that have no route of their own (they take the default)."""
        return self.table.carriers - self.routes.keys()


# The name the brief and older notes use for the same helper.
Routes = SmsRouting


def _e164_prefix(key: str) -> str:
    """`"096"` or `"+8496"` -> `"+8496"`; anything else is a ConfigError naming the key."""
    text = key.strip() if isinstance(key, str) else ""
    if text.startswith(VN):
        national = text[len(VN) :]
    elif text.startswith("0"):
        national = text[1:]
    else:
        raise ConfigError(f"carrier prefix {_shown(key)}: expected '+84…' or '0…'")
    if not (national.isascii() and national.isdigit()):
        raise ConfigError(f"carrier prefix {_shown(key)}: digits only after '+84' or '0'")
    if national[0] == "0" or len(national) > _MAX_NATIONAL:
        raise ConfigError(f"carrier prefix {_shown(key)}: not a Vietnamese number prefix")
    return VN + national


def _carrier_name(carrier: object, where: str) -> str:
    """The carrier's name, lower-case; an empty or non-text name is a ConfigError at `where`."""
    name = carrier.strip().lower() if isinstance(carrier, str) else ""
    if not name:
        raise ConfigError(f"{where}: empty carrier name")
    return name


def _route_name(carrier: str, route: object) -> str:
    """The route's name; an empty or non-text one is a ConfigError naming the carrier."""
    name = route.strip() if isinstance(route, str) else ""
    if not name:
        raise ConfigError(f"sms route {_shown(carrier)}: empty route name")
    return name


def _shown(key: object) -> str:
    """A config key fit for an error message: one with many digits may be a number, so mask it."""
    text = repr(key)
    if sum(char.isdigit() for char in text) < _MASK_FROM_DIGITS:
        return text
    return text[:7] + "…'"
