"""The SMPP codec: PDUs both ways (checked against smpp34), text codings and parts, receipts."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import smpp34
from hypothesis import given, settings
from hypothesis import strategies as st

from loa.adapters.smpp.coding import (
    GSM7,
    LATIN1,
    PART_LIMIT,
    SINGLE_LIMIT,
    UCS2,
    choose_coding,
    decode_gsm7,
    decode_text,
    encode_parts,
    encode_text,
    udh,
)
from loa.adapters.smpp.pdu import (
    HEADER,
    Command,
    MessageState,
    Pdu,
    Status,
    SubmitEncoder,
    Tag,
    decode,
    encode,
    generic_nack,
    read_length,
    response,
    status_name,
    tlv_int,
    tlv_text,
)
from loa.adapters.smpp.receipt import (
    canonical_id,
    is_receipt,
    parse_receipt,
    parse_receipt_text,
)
from loa.errors import PduError
from loa.sms import BASIC_CODES, EXTENSION_CODES, analyse

# --- PDUs: every kind loa encodes, both ways ------------------------------------------------

SUBMIT_FIELDS: dict[str, Any] = {
    "service_type": "CMT",
    "source_addr_ton": 5,
    "source_addr_npi": 0,
    "source_addr": "BoYTe",
    "dest_addr_ton": 1,
    "dest_addr_npi": 1,
    "destination_addr": "84912345678",
    "esm_class": 0x40,
    "protocol_id": 0,
    "priority_flag": 1,
    "schedule_delivery_time": "",
    "validity_period": "000001000000000R",
    "registered_delivery": 1,
    "replace_if_present_flag": 0,
    "data_coding": 8,
    "sm_default_msg_id": 0,
    "short_message": udh(0x42, 2, 1) + "Xin chào".encode("utf-16-be"),
}
BIND_FIELDS: dict[str, Any] = {
    "system_id": "loa-test",
    "password": "secret",
    "system_type": "VMA",
    "interface_version": 0x34,
    "addr_ton": 1,
    "addr_npi": 1,
    "address_range": "^849",
}

EVERY_KIND = [
    pytest.param(Pdu(Command.BIND_TRANSCEIVER, 1, fields=dict(BIND_FIELDS)), id="bind_trx"),
    pytest.param(Pdu(Command.BIND_TRANSMITTER, 2, fields=dict(BIND_FIELDS)), id="bind_tx"),
    pytest.param(Pdu(Command.BIND_RECEIVER, 3, fields=dict(BIND_FIELDS)), id="bind_rx"),
    pytest.param(
        Pdu(
            Command.BIND_TRANSCEIVER_RESP,
            1,
            fields={"system_id": "SMSC"},
            tlvs={Tag.SC_INTERFACE_VERSION: b"\x34"},
        ),
        id="bind_trx_resp",
    ),
    pytest.param(Pdu(Command.BIND_TRANSMITTER_RESP, 2, fields={"system_id": "S"}), id="bind_tx_r"),
    pytest.param(Pdu(Command.BIND_RECEIVER_RESP, 3, fields={"system_id": "S"}), id="bind_rx_r"),
    pytest.param(
        Pdu(
            Command.SUBMIT_SM,
            0x7FFFFFFF,
            fields=dict(SUBMIT_FIELDS),
            tlvs={Tag.SAR_MSG_REF_NUM: b"\x00\x42", Tag.SAR_TOTAL_SEGMENTS: b"\x02", 0x1403: b""},
        ),
        id="submit_sm",
    ),
    pytest.param(
        Pdu(
            Command.SUBMIT_SM,
            9,
            fields={**SUBMIT_FIELDS, "short_message": b"", "esm_class": 0},
            tlvs={Tag.MESSAGE_PAYLOAD: "dài ".encode("utf-16-be") * 200},
        ),
        id="submit_sm_payload",
    ),
    pytest.param(response(Pdu(Command.SUBMIT_SM, 7), message_id="0A1B2C"), id="submit_sm_resp"),
    pytest.param(
        Pdu(
            Command.DELIVER_SM,
            11,
            fields={
                **SUBMIT_FIELDS,
                "esm_class": 0x04,
                "data_coding": 0,
                "short_message": b"id:0A1B2C sub:001 dlvrd:001 stat:DELIVRD err:000 text:",
            },
            tlvs={Tag.RECEIPTED_MESSAGE_ID: b"0A1B2C\0", Tag.MESSAGE_STATE: b"\x02"},
        ),
        id="deliver_sm",
    ),
    pytest.param(response(Pdu(Command.DELIVER_SM, 11), message_id=""), id="deliver_sm_resp"),
    pytest.param(
        Pdu(
            Command.DATA_SM,
            12,
            fields={
                "service_type": "",
                "source_addr_ton": 1,
                "source_addr_npi": 1,
                "source_addr": "84912345678",
                "dest_addr_ton": 3,
                "dest_addr_npi": 0,
                "destination_addr": "1022",
                "esm_class": 0,
                "registered_delivery": 0,
                "data_coding": 8,
            },
            tlvs={Tag.MESSAGE_PAYLOAD: "Chào".encode("utf-16-be")},
        ),
        id="data_sm",
    ),
    pytest.param(
        Pdu(Command.DATA_SM_RESP, 12, fields={"message_id": "x"}, tlvs={0x0425: b"\x01"}),
        id="data_sm_resp",
    ),
    pytest.param(
        Pdu(Command.OUTBIND, 13, fields={"system_id": "S", "password": "p"}), id="outbind"
    ),
    pytest.param(Pdu(Command.ENQUIRE_LINK, 14), id="enquire_link"),
    pytest.param(Pdu(Command.ENQUIRE_LINK_RESP, 14), id="enquire_link_resp"),
    pytest.param(Pdu(Command.UNBIND, 15), id="unbind"),
    pytest.param(Pdu(Command.UNBIND_RESP, 15), id="unbind_resp"),
    pytest.param(generic_nack(16, Status.RINVCMDID), id="generic_nack"),
    pytest.param(
        Pdu(Command.SUBMIT_SM_RESP, 17, Status.RTHROTTLED, fields={"message_id": ""}),
        id="submit_sm_resp_error",
    ),
]


def as_bytes(value: Any) -> Any:
    """A field as decode gives it back: C-Octet Strings as bytes."""
    return value.encode("latin-1") if isinstance(value, str) else value


@pytest.mark.parametrize("pdu", EVERY_KIND)
def test_round_trip_of_every_kind(pdu: Pdu) -> None:
    wire = encode(pdu)
    assert read_length(wire[:4]) == len(wire)
    back = decode(wire)
    assert (back.command_id, back.sequence, back.status) == (
        pdu.command_id,
        pdu.sequence,
        pdu.status,
    )
    expected = {name: as_bytes(value) for name, value in pdu.fields.items()}
    if "short_message" in expected:
        expected["sm_length"] = len(expected["short_message"])
    assert back.fields == expected
    assert back.tlvs == pdu.tlvs
    assert encode(back) == wire, "re-encoding the decoded PDU gives the same bytes"


@pytest.mark.parametrize("pdu", EVERY_KIND)
def test_every_kind_frames_and_decodes_in_smpp34(pdu: Pdu) -> None:
    # smpp34 is a Rust implementation we did not write: its framing must agree with ours
    wire = encode(pdu)
    theirs = smpp34.decode(wire)
    assert theirs.command_id == pdu.command_id
    assert theirs.sequence_number == pdu.sequence
    if isinstance(theirs, smpp34.RawPdu):
        assert theirs.command_status == pdu.status
        assert theirs.command_length == len(wire)
        assert theirs.body == wire[16:]


def test_header_layout() -> None:
    wire = encode(Pdu(Command.ENQUIRE_LINK, 0x01020304))
    assert wire == bytes.fromhex("00000010 00000015 00000000 01020304")
    wire = encode(response(Pdu(Command.SUBMIT_SM, 5), message_id="ab"))
    assert wire == HEADER.pack(19, 0x80000004, 0, 5) + b"ab\0"


def test_status_names() -> None:
    assert status_name(0x58) == "ESME_RTHROTTLED"
    assert status_name(0x14) == "ESME_RMSGQFUL"
    assert status_name(0x400) == "0x00000400"


def test_tlv_helpers() -> None:
    assert tlv_int(b"\x02") == 2
    assert tlv_int(b"\x01\x00") == 256
    assert tlv_int(b"") == 0
    assert tlv_text(b"abc\0") == "abc"
    assert tlv_text(b"abc") == "abc"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"destination_addr": "8" * 21}, "destination_addr is 21 bytes; SMPP allows 20"),
        ({"destination_addr": "84\x0012"}, "destination_addr must not contain NUL"),
        ({"short_message": b"x" * 255}, "short_message is 255 bytes; at most 254"),
        ({"esm_class": 256}, "esm_class must be an integer 0..255"),
        ({"data_coding": -1}, "data_coding must be an integer 0..255"),
    ],
)
def test_encode_names_the_field_that_does_not_fit(fields: dict[str, Any], problem: str) -> None:
    pdu = Pdu(Command.SUBMIT_SM, 1, fields={**SUBMIT_FIELDS, **fields})
    with pytest.raises(PduError, match=problem):
        encode(pdu)


def test_encode_refuses_a_tlv_over_64k() -> None:
    pdu = Pdu(Command.SUBMIT_SM, 1, fields=dict(SUBMIT_FIELDS), tlvs={0x0424: b"x" * 65536})
    with pytest.raises(PduError, match="TLV 0x0424 is 65536 bytes"):
        encode(pdu)


# --- malformed input: refused with a PduError that says what is wrong --------------------------


def submit_wire() -> bytes:
    return encode(Pdu(Command.SUBMIT_SM, 3, fields=dict(SUBMIT_FIELDS)))


def with_length(body: bytes, command_id: int = Command.SUBMIT_SM) -> bytes:
    return HEADER.pack(16 + len(body), command_id, 0, 3) + body


def test_decode_short_frame() -> None:
    with pytest.raises(PduError, match="at least 16 bytes, got 10"):
        decode(b"\x00\x00\x00\x10" + b"\0" * 6)


def test_decode_length_mismatch() -> None:
    wire = submit_wire()
    with pytest.raises(PduError, match=f"command_length says {len(wire)} bytes but the frame has"):
        decode(wire + b"\0")
    with pytest.raises(PduError, match=f"command_length says {len(wire)} bytes but the frame has"):
        decode(wire[:-1])


def test_decode_unterminated_c_string() -> None:
    # a service_type of 6 letters and no NUL: the field allows 5 plus its NUL
    with pytest.raises(PduError, match="service_type is not NUL-terminated within 6 bytes"):
        decode(with_length(b"ABCDEFGH" + b"\0" * 20))
    # a system_id that runs to the end of the frame
    with pytest.raises(PduError, match="system_id is not NUL-terminated"):
        decode(with_length(b"SMSC", Command.BIND_TRANSCEIVER_RESP))


def test_decode_sm_length_past_the_end() -> None:
    wire = bytearray(
        encode(Pdu(Command.SUBMIT_SM, 3, fields={**SUBMIT_FIELDS, "short_message": b"hi"}))
    )
    wire[-3] = 200  # sm_length: 200 bytes announced, 2 present
    with pytest.raises(PduError, match="sm_length 200 runs past the end of the PDU"):
        decode(bytes(wire))


def test_decode_pdu_ending_before_a_field() -> None:
    body = submit_wire()[16:20]  # service_type "CMT\0", then the frame ends
    with pytest.raises(PduError, match="PDU ends before source_addr_ton"):
        decode(with_length(body))
    with pytest.raises(PduError, match="PDU ends before sm_length"):
        decode(with_length(submit_wire()[16 : -len(SUBMIT_FIELDS["short_message"]) - 1]))


def test_decode_tlv_cut_short() -> None:
    wire = encode(Pdu(Command.SUBMIT_SM, 3, fields=dict(SUBMIT_FIELDS)))
    head_cut = wire + b"\x04\x24\x00"  # three bytes of a four-byte TLV header
    with pytest.raises(PduError, match="a TLV header is cut short"):
        decode(struct.pack(">I", len(head_cut)) + head_cut[4:])
    value_cut = wire + b"\x04\x24\x00\x10" + b"only five"[:5]
    with pytest.raises(PduError, match="TLV 0x0424 of 16 bytes runs past the end of the PDU"):
        decode(struct.pack(">I", len(value_cut)) + value_cut[4:])


@pytest.mark.parametrize("length", [0, 3, 15, 70_001, 10**9, 0xFFFFFFFF])
def test_read_length_refuses_unframeable_lengths(length: int) -> None:
    with pytest.raises(PduError, match=f"command_length {length} is outside 16..70000"):
        read_length(struct.pack(">I", length))


@pytest.mark.parametrize("length", [3, 10**9])
def test_decode_refuses_absurd_command_length(length: int) -> None:
    frame = struct.pack(">IIII", length, Command.ENQUIRE_LINK, 0, 1)
    with pytest.raises(PduError, match=f"command_length says {length} bytes but the frame has 16"):
        decode(frame)


def test_error_response_may_omit_its_body() -> None:
    pdu = decode(HEADER.pack(16, Command.SUBMIT_SM_RESP, Status.RTHROTTLED, 9))
    assert pdu.status == Status.RTHROTTLED
    assert pdu.fields == {}
    assert pdu.text("message_id") == ""


def test_unknown_command_decodes_as_header_only() -> None:
    pdu = decode(HEADER.pack(20, 0x00000999, 0, 4) + b"abcd")
    assert pdu.name == "0x00000999"
    assert not pdu.is_response
    assert pdu.fields == {}


# --- SubmitEncoder: the fast path gives exactly the bytes of encode ---------------------------

c_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
byte = st.integers(0, 255)
tlv_tags = st.integers(0x0001, 0xFFFF)


@settings(max_examples=300, deadline=None)
@given(
    fixed=st.fixed_dictionaries(
        {
            "service_type": st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", max_size=5),
            "source_addr_ton": byte,
            "source_addr_npi": byte,
            "source_addr": c_text,
            "dest_addr_ton": byte,
            "dest_addr_npi": byte,
        },
        optional={
            "protocol_id": byte,
            "priority_flag": byte,
            "schedule_delivery_time": st.text(alphabet="0123456789R+-", max_size=16),
            "validity_period": st.text(alphabet="0123456789R+-", max_size=16),
            "registered_delivery": byte,
            "replace_if_present_flag": byte,
            "sm_default_msg_id": byte,
        },
    ),
    destination=c_text,
    esm_class=byte,
    data_coding=byte,
    message=st.binary(max_size=254),
    tlvs=st.dictionaries(tlv_tags, st.binary(max_size=300), max_size=4),
    sequence=st.integers(1, 0x7FFFFFFF),
    as_bytes_destination=st.booleans(),
)
def test_submit_encoder_gives_the_bytes_of_encode(
    fixed: dict[str, Any],
    destination: str,
    esm_class: int,
    data_coding: int,
    message: bytes,
    tlvs: dict[int, bytes],
    sequence: int,
    as_bytes_destination: bool,
) -> None:
    per_message = {
        "destination_addr": destination.encode() if as_bytes_destination else destination,
        "esm_class": esm_class,
        "data_coding": data_coding,
        "short_message": message,
    }
    slow = encode(Pdu(Command.SUBMIT_SM, sequence, fields={**fixed, **per_message}, tlvs=tlvs))
    fast = SubmitEncoder(fixed)(Pdu(Command.SUBMIT_SM, sequence, fields=per_message, tlvs=tlvs))
    assert fast == slow


def test_submit_encoder_checks_what_it_is_given() -> None:
    encoder = SubmitEncoder({"source_addr": "BoYTe", "source_addr_ton": 5})
    with pytest.raises(PduError, match="destination_addr is 25 bytes; SMPP allows 20"):
        encoder(Pdu(Command.SUBMIT_SM, 1, fields={"destination_addr": "8" * 25}))
    with pytest.raises(PduError, match="short_message is 300 bytes; at most 254"):
        encoder(
            Pdu(Command.SUBMIT_SM, 1, fields={"destination_addr": "1", "short_message": b"x" * 300})
        )
    with pytest.raises(PduError, match="source_addr is 30 bytes"):
        SubmitEncoder({"source_addr": "x" * 30})


# --- the same bytes through smpp34, an implementation we did not write ------------------------


def smpp34_fields(pdu: Any) -> dict[str, Any]:
    names = [name for name in SUBMIT_FIELDS if name != "short_message"]
    values = {name: getattr(pdu, name) for name in names}
    values["short_message"] = bytes(pdu.short_message)
    return values


def ours_as_text(pdu: Pdu) -> dict[str, Any]:
    return {
        name: value.decode("latin-1")
        if isinstance(value, bytes) and name != "short_message"
        else value
        for name, value in pdu.fields.items()
        if name != "sm_length"
    }


@settings(max_examples=100, deadline=None)
@given(
    command=st.sampled_from([Command.SUBMIT_SM, Command.DELIVER_SM]),
    source=c_text,
    destination=c_text,
    esm_class=byte,
    data_coding=byte,
    registered=byte,
    message=st.binary(max_size=254),
    tlvs=st.dictionaries(
        st.sampled_from([0x0204, 0x020C, 0x0424, 0x1403, 0x001E]),
        st.binary(max_size=64),
        max_size=3,
    ),
)
def test_our_bytes_decode_the_same_in_smpp34(
    command: int,
    source: str,
    destination: str,
    esm_class: int,
    data_coding: int,
    registered: int,
    message: bytes,
    tlvs: dict[int, bytes],
) -> None:
    fields = {
        **SUBMIT_FIELDS,
        "source_addr": source,
        "destination_addr": destination,
        "esm_class": esm_class,
        "data_coding": data_coding,
        "registered_delivery": registered,
        "short_message": message,
    }
    wire = encode(Pdu(command, 77, fields=fields, tlvs=tlvs))
    theirs = smpp34.decode(wire)
    assert isinstance(
        theirs, smpp34.DeliverSm if command == Command.DELIVER_SM else smpp34.SubmitSm
    )
    assert theirs.sequence_number == 77
    assert smpp34_fields(theirs) == fields
    assert theirs.sm_length == len(message)
    assert {tlv.tag: bytes(tlv.value) for tlv in theirs.tlvs} == tlvs


@settings(max_examples=100, deadline=None)
@given(
    kind=st.sampled_from([smpp34.SubmitSm, smpp34.DeliverSm]),
    source=c_text,
    destination=c_text,
    ton=byte,
    esm_class=byte,
    data_coding=byte,
    message=st.binary(max_size=254),
    payload=st.one_of(st.none(), st.binary(max_size=500)),
    sequence=st.integers(1, 0x7FFFFFFF),
)
def test_smpp34_bytes_decode_the_same_with_ours(
    kind: Any,
    source: str,
    destination: str,
    ton: int,
    esm_class: int,
    data_coding: int,
    message: bytes,
    payload: bytes | None,
    sequence: int,
) -> None:
    tlvs = [] if payload is None else [smpp34.Tlv(Tag.MESSAGE_PAYLOAD, payload)]
    theirs = kind(
        source,
        destination,
        message,
        service_type="WAP",
        source_addr_ton=ton,
        dest_addr_ton=1,
        dest_addr_npi=1,
        esm_class=esm_class,
        data_coding=data_coding,
        registered_delivery=1,
        validity_period="000001000000000R",
        tlvs=tlvs,
        sequence_number=sequence,
    )
    ours = decode(theirs.encode())
    expected_command = Command.SUBMIT_SM if kind is smpp34.SubmitSm else Command.DELIVER_SM
    assert (ours.command_id, ours.sequence) == (expected_command, sequence)
    assert ours_as_text(ours) == smpp34_fields(theirs)
    assert ours.fields["source_addr"] == source.encode()
    assert ours.fields["source_addr_ton"] == ton
    assert ours.tlvs == ({} if payload is None else {Tag.MESSAGE_PAYLOAD: payload})


# --- coding: which alphabet, and parts that never split a character -----------------------------

EXTENSIONS = "€[]{}~^|\\"
GSM_ALPHABET = "".join(BASIC_CODES) + "".join(EXTENSION_CODES)


def test_gsm7_extension_characters_count_two_bytes() -> None:
    assert choose_coding("Giá: 10€ [ưu đãi]", "auto") == UCS2  # ư, đ, ã are not GSM
    assert choose_coding("Gia: 10€ [uu dai] {~^|\\}", "auto") == GSM7
    data = encode_text(EXTENSIONS, GSM7)
    assert len(data) == 2 * len(EXTENSIONS)
    assert data == bytes(
        [
            0x1B,
            0x65,
            0x1B,
            0x3C,
            0x1B,
            0x3E,
            0x1B,
            0x28,
            0x1B,
            0x29,
            0x1B,
            0x3D,
            0x1B,
            0x14,
            0x1B,
            0x40,
            0x1B,
            0x2F,
        ]
    )
    assert decode_gsm7(data) == EXTENSIONS


def test_gsm7_basic_characters_use_their_03_38_codes() -> None:
    assert encode_text("@£$¥èé\nÅ_ΔΦ¡¿äà", GSM7) == bytes(
        [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x0A, 0x0E, 0x11, 0x10, 0x12, 0x40, 0x60, 0x7B, 0x7F]
    )


@pytest.mark.parametrize("shift", range(4))
def test_escape_pair_is_never_split_at_a_part_boundary(shift: int) -> None:
    # the escape of a € lands on the last byte of the first part (byte 153) for shift 0
    text = "a" * (152 + shift) + "€" + "b" * 100
    encoded = encode_parts(text, GSM7)
    first = encoded.parts[0]
    assert first[-1] != 0x1B
    assert len(first) == (152 if shift == 0 else 153)
    assert b"".join(encoded.parts) == encoded.data
    assert "".join(decode_gsm7(part) for part in encoded.parts) == text


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=GSM_ALPHABET, min_size=150, max_size=700))
def test_gsm7_parts_fit_and_decode_alone(text: str) -> None:
    encoded = encode_parts(text, GSM7)
    assert b"".join(encoded.parts) == encoded.data == encode_text(text, GSM7)
    if len(encoded.data) <= SINGLE_LIMIT[GSM7]:
        assert encoded.parts == [encoded.data]
        return
    for part in encoded.parts:
        assert 0 < len(part) <= PART_LIMIT[GSM7] == 153
        run = len(part) - len(part.rstrip(b"\x1b"))
        assert run % 2 == 0, "a part ends with an escape whose character is in the next part"
    assert "".join(decode_gsm7(part) for part in encoded.parts) == text
    assert len(encoded.parts) == analyse(text).parts, "the adapter sends as many parts as billed"


def test_two_escape_pairs_on_the_boundary() -> None:
    text = "a" * 151 + "€€" + "z" * 10  # bytes 152..155 are ESC e ESC e
    parts = encode_parts(text, GSM7).parts
    assert parts[0] == b"a" * 151 + b"\x1b\x65"
    assert decode_gsm7(parts[1]) == "€" + "z" * 10


VIETNAMESE = (
    "Bộ Y tế khuyến cáo: tiêm vắc-xin đầy đủ 💉, diệt muỗi 🦟 phòng Zika; gia đình 👨‍👩‍👧 an toàn. "
)


@pytest.mark.parametrize("shift", range(0, 6))
def test_ucs2_surrogate_pair_is_never_split(shift: int) -> None:
    # 66 BMP characters then an emoji: its high surrogate is the 67th unit (bytes 132..133)
    text = "ệ" * (66 + shift) + "🦟" + "ạ" * 80
    encoded = encode_parts(text, UCS2)
    for part in encoded.parts:
        assert len(part) % 2 == 0
        assert len(part) <= PART_LIMIT[UCS2] == 134
        part.decode("utf-16-be")  # strict: a lone surrogate would raise
    assert "".join(part.decode("utf-16-be") for part in encoded.parts) == text
    assert len(encoded.parts[0]) == (132 if shift == 0 else 134)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([*VIETNAMESE, "🇻🇳", "✅", "\n"]), min_size=60, max_size=400))
def test_ucs2_vietnamese_and_emoji_parts(pieces: list[str]) -> None:
    text = "".join(pieces)
    coding = choose_coding(text, "auto")
    encoded = encode_parts(text, coding)
    assert b"".join(encoded.parts) == encoded.data
    limit = SINGLE_LIMIT[coding] if len(encoded.parts) == 1 else PART_LIMIT[coding]
    for part in encoded.parts:
        assert len(part) <= limit
        if coding == UCS2:
            part.decode("utf-16-be")  # strict: a lone surrogate would raise
    assert "".join(decode_text(part, coding) for part in encoded.parts) == text
    assert len(encoded.parts) == analyse(text).parts


@pytest.mark.parametrize(
    ("text", "coding", "parts"),
    [
        ("x" * 160, GSM7, 1),
        ("x" * 161, GSM7, 2),
        ("x" * 306, GSM7, 2),
        ("x" * 307, GSM7, 3),
        ("€" * 80, GSM7, 1),
        ("€" * 81, GSM7, 2),
        ("đ" * 70, UCS2, 1),
        ("đ" * 71, UCS2, 2),
        ("đ" * 134, UCS2, 2),
        ("đ" * 135, UCS2, 3),
        ("é" * 140, LATIN1, 1),
        ("é" * 141, LATIN1, 2),
    ],
)
def test_single_and_part_limits(text: str, coding: int, parts: int) -> None:
    assert len(encode_parts(text, coding).parts) == parts


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=GSM_ALPHABET, max_size=400))
def test_decode_gsm7_inverts_encode(text: str) -> None:
    assert decode_gsm7(encode_text(text, GSM7)) == text
    assert decode_text(encode_text(text, GSM7), GSM7) == text


def test_decode_gsm7_unknown_extension_is_a_space() -> None:
    assert decode_gsm7(b"a\x1b\x01b") == "a b"


def test_latin1_choice() -> None:
    assert choose_coding("Café à Hà Nội", "latin1") == UCS2  # ộ is not Latin-1
    assert choose_coding("Café crème ½ ©", "latin1") == LATIN1
    assert encode_text("Café ©", LATIN1) == "Café ©".encode("latin-1")
    assert decode_text("Café ©".encode("latin-1"), LATIN1) == "Café ©"
    assert choose_coding("Café crème", "auto") == GSM7  # é and è are in GSM 03.38
    assert choose_coding("plain", "ucs2") == UCS2
    assert choose_coding("Tiếng Việt", "gsm7") == UCS2, "a text that does not fit GSM goes UCS-2"


def test_encode_text_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match=r"not in the GSM 03\.38"):
        encode_text("Việt", GSM7)
    with pytest.raises(UnicodeEncodeError):
        encode_text("Việt", LATIN1)


def test_udh_is_the_8_bit_concatenation_header() -> None:
    assert udh(0x1FF, 3, 2) == bytes([0x05, 0x00, 0x03, 0xFF, 0x03, 0x02])


# --- receipts: the appendix-B text as carriers write it, and the TLVs ----------------------------

RECEIPT_TEXTS = [
    pytest.param(
        "id:0123456789 sub:001 dlvrd:001 submit date:2108151230 done date:2108151231 "
        "stat:DELIVRD err:000 text:Lich tiem cua ban",
        ("0123456789", "DELIVRD", "000", True),
        id="appendix-b",
    ),
    pytest.param(
        "ID:A1B2C3 SUB:001 DLVRD:001 SUBMIT DATE:2108151230 DONE DATE:2108151231 "
        "STAT:DELIVRD ERR:000 TEXT:",
        ("A1B2C3", "DELIVRD", "000", True),
        id="upper-case-keys",
    ),
    pytest.param(
        "id:77 sub:001 dlvrd:001 submit date:210815123059 done date:210815123101 "
        "stat:DELIVRD err:000 text:x",
        ("77", "DELIVRD", "000", True),
        id="dates-with-seconds",
    ),
    pytest.param(
        "id: 4242  sub:001   dlvrd:001 submit date: 2108151230 done date:2108151231  "
        "stat: DELIVRD   err: 000 text: ",
        ("4242", "DELIVRD", "000", True),
        id="extra-spaces",
    ),
    pytest.param(
        "id:4243 sub:001 dlvrd:001 submit date:2108151230 done date:2108151231 "
        "stat:DELIVRD err:000",
        ("4243", "DELIVRD", "000", True),
        id="no-text-field",
    ),
    pytest.param(
        "id:4244 sub:001 dlvrd:000 submit date:2108151230 done date:2108151231 "
        "stat:UNDELIV err:001 text:Bo Y te",
        ("4244", "UNDELIV", "001", False),
        id="undeliv",
    ),
    pytest.param("id:4245 stat:UNDELIV err:001", ("4245", "UNDELIV", "001", False), id="minimal"),
    pytest.param(
        "Id:4246 Sub:001 Dlvrd:001 Submit Date:2108151230 Done Date:2108151231 Stat:delivrd Err:0",
        ("4246", "DELIVRD", "0", True),
        id="title-case-and-lower-state",
    ),
    pytest.param(
        "id:4247 sub:001 dlvrd:000 submit date:2108151230 done date:2108161230 stat:EXPIRED "
        "err:000 text:",
        ("4247", "EXPIRED", "000", False),
        id="expired",
    ),
    pytest.param(
        "id:4248 sub:001 dlvrd:000 submit date:2108151230 done date:2108151230 stat:REJECTD "
        "err:0B text:",
        ("4248", "REJECTD", "0B", False),
        id="rejected",
    ),
]


def receipt_pdu(
    text: bytes = b"", tlvs: dict[int, bytes] | None = None, esm_class: int = 0x04
) -> Pdu:
    fields = {**SUBMIT_FIELDS, "esm_class": esm_class, "data_coding": 0, "short_message": text}
    return decode(encode(Pdu(Command.DELIVER_SM, 5, fields=fields, tlvs=tlvs or {})))


@pytest.mark.parametrize(("text", "expected"), RECEIPT_TEXTS)
def test_receipt_text_variants(text: str, expected: tuple[str, str, str, bool]) -> None:
    parsed = parse_receipt(receipt_pdu(text.encode("latin-1")))
    assert parsed is not None
    assert (parsed.message_id, parsed.state, parsed.error, parsed.delivered) == expected


def test_receipt_text_fields() -> None:
    fields = parse_receipt_text(
        "id:9 sub:001 dlvrd:001 submit date:2108151230 done date:2108151231 stat:DELIVRD "
        "err:000 text:Hello world"
    )
    assert fields == {
        "id": "9",
        "sub": "001",
        "dlvrd": "001",
        "submit date": "2108151230",
        "done date": "2108151231",
        "stat": "DELIVRD",
        "err": "000",
        "text": "Hello world",
    }


def test_receipt_tlvs_are_preferred_over_the_text() -> None:
    pdu = receipt_pdu(
        b"id:111 sub:001 dlvrd:001 stat:DELIVRD err:000 text:",
        {
            Tag.RECEIPTED_MESSAGE_ID: b"0A1B\0",
            Tag.MESSAGE_STATE: bytes([MessageState.UNDELIVERABLE]),
        },
    )
    parsed = parse_receipt(pdu)
    assert parsed is not None
    assert (parsed.message_id, parsed.state, parsed.delivered) == ("0A1B", "UNDELIV", False)
    assert parsed.error == "000", "the text still gives the error when no TLV does"


def test_receipt_from_tlvs_alone() -> None:
    pdu = receipt_pdu(
        b"",
        {
            Tag.RECEIPTED_MESSAGE_ID: b"abc",  # not NUL-terminated: some SMSCs omit it
            Tag.MESSAGE_STATE: bytes([MessageState.DELIVERED]),
            Tag.NETWORK_ERROR_CODE: b"\x03\x00\x00",
        },
    )
    parsed = parse_receipt(pdu)
    assert parsed is not None
    assert (parsed.message_id, parsed.state, parsed.delivered, parsed.error) == (
        "abc",
        "DELIVRD",
        True,
        "030000",
    )


def test_receipt_text_in_message_payload() -> None:
    pdu = receipt_pdu(b"", {Tag.MESSAGE_PAYLOAD: b"id:55 stat:DELIVRD err:000"})
    parsed = parse_receipt(pdu)
    assert parsed is not None
    assert (parsed.message_id, parsed.delivered) == ("55", True)


def test_receipt_unknown_state_code() -> None:
    pdu = receipt_pdu(b"", {Tag.RECEIPTED_MESSAGE_ID: b"x\0", Tag.MESSAGE_STATE: b"\x63"})
    parsed = parse_receipt(pdu)
    assert parsed is not None
    assert (parsed.state, parsed.delivered) == ("STATE99", False)


def test_receipt_naming_no_message_is_none() -> None:
    assert parse_receipt(receipt_pdu(b"stat:DELIVRD err:000")) is None


@pytest.mark.parametrize(
    ("esm_class", "expected"),
    [
        (0x00, False),
        (0x04, True),
        (0x08, True),
        (0x20, True),
        (0x40, False),
        (0x44, True),
        (0x10, False),
    ],
)
def test_is_receipt_by_esm_class(esm_class: int, expected: bool) -> None:
    assert is_receipt(receipt_pdu(b"id:1 stat:DELIVRD", esm_class=esm_class)) is expected


@pytest.mark.parametrize(
    ("raw", "form", "expected"),
    [
        ("0A1B2C", "hex", "662316"),
        ("0a1b2c", "hex", "662316"),
        ("662316", "decimal", "662316"),
        ("00662316", "decimal", "662316"),
        ("0A1B2C", "text", "0A1B2C"),
        ("not-an-id", "hex", "not-an-id"),
        ("12ab", "decimal", "12ab"),
    ],
)
def test_canonical_id(raw: str, form: str, expected: str) -> None:
    assert canonical_id(raw, form) == expected


def test_hex_submit_id_meets_decimal_receipt_id() -> None:
    # a carrier answering submit_sm in hex and writing receipts in decimal: both meet
    assert canonical_id("1A2B3C", "hex") == canonical_id(str(0x1A2B3C), "decimal")
