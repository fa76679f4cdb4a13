"""Carrier lookup by prefix, operator overrides and ported numbers, and SMS route selection."""

from __future__ import annotations

import phonenumbers
import pytest
from phonenumbers import carrier as pn_carrier

from loa.campaigns.carriers import DEFAULT_PREFIXES, CarrierTable, Routes, SmsRouting
from loa.errors import ConfigError
from loa.phone import normalize

SAMPLES = {
    "viettel": ["0961234567", "0971234567", "0981234567", "0861234567", "0321234567", "0391234567"],
    "vinaphone": ["0911234567", "0941234567", "0881234567", "0811234567", "0851234567"],
    "mobifone": ["0901234567", "0931234567", "0896123456", "0701234567", "0761234567"],
    "vietnamobile": ["0921234567", "0522123456", "0561234567", "0581234567"],
    "gmobile": ["0993123456", "0591234567"],
    "itel": ["0871234567"],
    "reddi": ["0559123456"],
}


@pytest.fixture(scope="module")
def table() -> CarrierTable:
    return CarrierTable.default()


@pytest.mark.parametrize(
    ("national", "expected"),
    [(number, name) for name, numbers in SAMPLES.items() for number in numbers],
)
def test_default_table_knows_each_carrier(
    table: CarrierTable, national: str, expected: str
) -> None:
    assert table.carrier_of(normalize(national)) == expected


def test_old_numbers_land_on_their_carrier(table: CarrierTable) -> None:
    assert table.carrier_of(normalize("01681234567")) == "viettel"
    assert table.carrier_of(normalize("01221234567")) == "mobifone"
    assert table.carrier_of(normalize("01271234567")) == "vinaphone"
    assert table.carrier_of(normalize("01881234567")) == "vietnamobile"
    assert table.carrier_of(normalize("01991234567")) == "gmobile"


# libphonenumber's names, and the prefixes where we knowingly differ from its carrier data.
PN_NAMES = {
    "Viettel": "viettel",
    "Vinaphone": "vinaphone",
    "MobiFone": "mobifone",
    "Vietnamobile": "vietnamobile",
    "G-Mobile": "gmobile",
    "Reddi": "reddi",
}
ITEL_ON_VINAPHONE = "087"  # iTel is an MVNO on Vinaphone's network; libphonenumber says Vinaphone


@pytest.mark.parametrize("prefix", sorted(DEFAULT_PREFIXES))
def test_defaults_agree_with_libphonenumber_carrier_data(prefix: str) -> None:
    valid = [
        number
        for number in (phonenumbers.parse(f"+84{prefix[1:]}{d}234567") for d in range(10))
        if phonenumbers.is_valid_number(number)
    ]
    assert valid, f"no valid mobile number in {prefix}"
    if prefix == ITEL_ON_VINAPHONE:
        assert pn_carrier.name_for_number(valid[0], "en") == "Vinaphone"
        return
    names = {PN_NAMES.get(pn_carrier.name_for_number(n, "en")) for n in valid} - {None}
    assert names <= {DEFAULT_PREFIXES[prefix]}


@pytest.mark.parametrize(
    "e164", ["+66812345678", "+16502530000", "+84", "", "+8424", "+84112345678", "0961234567"]
)
def test_foreign_and_unknown_numbers_have_no_carrier(table: CarrierTable, e164: str) -> None:
    assert table.carrier_of(e164) is None


def test_a_ported_number_wins_over_its_prefix(table: CarrierTable) -> None:
    ported = table.extended({"0961234567": "vinaphone"})
    assert ported.carrier_of("+84961234567") == "vinaphone"
    assert ported.carrier_of("+84961234568") == "viettel"  # the neighbour still on Viettel
    assert table.carrier_of("+84961234567") == "viettel"  # the original table is unchanged


def test_override_accepts_e164_and_national_keys() -> None:
    table = CarrierTable.default(
        {"+84961234567": "MobiFone", "0301": "Viettel", "+8431": "viettel"}
    )
    assert table.carrier_of("+84961234567") == "mobifone"  # names are case-insensitive
    assert table.carrier_of("+84301234567") == "viettel"
    assert table.carrier_of("+84311234567") == "viettel"
    assert table.carrier_of("+84302234567") is None


def test_override_replaces_a_default_prefix() -> None:
    table = CarrierTable.default({"+8487": "vinaphone"})
    assert table.carrier_of("+84871234567") == "vinaphone"
    assert len(table) == len(DEFAULT_PREFIXES)


def test_a_sub_block_beats_its_block_and_the_longest_prefix_wins() -> None:
    table = CarrierTable({"099": "gmobile", "0998": "itel", "09981": "other"})
    assert table.carrier_of("+84993123456") == "gmobile"
    assert table.carrier_of("+84998123456") == "other"
    assert table.carrier_of("+84998223456") == "itel"


def test_a_custom_table_holds_only_what_it_is_given() -> None:
    table = CarrierTable({"+8496": "viettel"})
    assert table.carrier_of("+84961234567") == "viettel"
    assert table.carrier_of("+84911234567") is None
    assert table.carriers == {"viettel"}
    assert table.prefixes == {"+8496": "viettel"}


def test_default_table_lists_the_seven_carriers(table: CarrierTable) -> None:
    assert table.carriers == {
        "viettel",
        "vinaphone",
        "mobifone",
        "vietnamobile",
        "gmobile",
        "itel",
        "reddi",
    }
    assert "viettel" in repr(table)


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("09x", "'09x'"),
        ("+84ab", "'+84ab'"),
        ("96", "'96'"),  # neither +84 nor a trunk zero
        ("+66", "'+66'"),  # not Vietnamese
        ("0", "'0'"),
        ("+84", "'+84'"),
        ("00", "'00'"),
        ("", "''"),
    ],
)
def test_a_bad_prefix_is_a_config_error_naming_the_key(key: str, shown: str) -> None:
    with pytest.raises(ConfigError) as caught:
        CarrierTable({key: "viettel"})
    assert shown in str(caught.value)


def test_a_long_carrier_name_is_shown_whole_in_the_error() -> None:
    with pytest.raises(ConfigError, match="'vietnamobile'"):
        SmsRouting(CarrierTable.default(), {"vietnamobile": ""}, default="sms-default")


def test_a_long_bad_key_is_masked_in_the_error() -> None:
    with pytest.raises(ConfigError) as caught:
        CarrierTable.default({"+849612345678": "viettel"})  # one digit too many
    assert "'+84961…'" in str(caught.value)
    assert "12345678" not in str(caught.value)


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_carrier_name_is_a_config_error_naming_the_key(name: str) -> None:
    with pytest.raises(ConfigError, match=r"'096'.*empty carrier name"):
        CarrierTable.default({"096": name})


def test_sms_routing_picks_the_carrier_route_or_the_default(table: CarrierTable) -> None:
    routing = SmsRouting(
        table,
        {"viettel": "sms-viettel", "Vinaphone": "sms-vinaphone", "itel": "sms-vinaphone"},
        default="sms-default",
    )
    assert routing.route_for("+84961234567") == "sms-viettel"
    assert routing.route_for("+84911234567") == "sms-vinaphone"
    assert routing.route_for("+84871234567") == "sms-vinaphone"  # the MVNO rides its host
    assert routing.route_for("+84901234567") == "sms-default"  # carrier without a route
    assert routing.route_for("+66812345678") == "sms-default"  # foreign
    assert routing.unrouted() == {"mobifone", "vietnamobile", "gmobile", "reddi"}


def test_routing_follows_a_ported_number(table: CarrierTable) -> None:
    routing = Routes(
        table.extended({"0961234567": "vinaphone"}),
        {"viettel": "sms-viettel", "vinaphone": "sms-vinaphone"},
        default="sms-default",
    )
    assert routing.route_for("+84961234567") == "sms-vinaphone"
    assert routing.route_for("+84961234568") == "sms-viettel"


@pytest.mark.parametrize(
    ("routes", "default", "named"),
    [
        ({"": "sms-x"}, "sms-default", "sms route ''"),
        ({"viettel": ""}, "sms-default", "'viettel'"),
        ({"viettel": "sms-viettel"}, " ", "'default'"),
    ],
)
def test_bad_routes_are_config_errors_naming_the_key(
    table: CarrierTable, routes: dict[str, str], default: str, named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        SmsRouting(table, routes, default=default)
    assert named in str(caught.value)
