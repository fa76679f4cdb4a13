"""Delivery receipts in deliver_sm: the TLVs first, else the receipt text of SMPP 3.4 appendix B."""

from __future__ import annotations

import re
from dataclasses import dataclass

from loa.adapters.smpp.pdu import MessageState, Pdu, Tag, tlv_int, tlv_text

RECEIPT_TYPE_MASK = 0x3C  # esm_class bits 5..2: the message type of a deliver_sm
SMSC_DELIVERY_RECEIPT = 0x04
SME_DELIVERY_ACK = 0x08
INTERMEDIATE_NOTIFICATION = 0x20
RECEIPT_TYPES = frozenset({SMSC_DELIVERY_RECEIPT, SME_DELIVERY_ACK, INTERMEDIATE_NOTIFICATION})

# id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm[ss] done date:YYMMDDhhmm[ss]
# stat:DDDDDDD err:E text:... — carriers vary in case, padding and which fields they send
_FIELD = re.compile(
    r"(?P<key>id|sub|dlvrd|submit date|done date|stat|err|text)\s*:\s*"
    r"(?P<value>.*?)(?=\s+(?:id|sub|dlvrd|submit date|done date|stat|err|text)\s*:|$)",
    re.IGNORECASE | re.DOTALL,
)
DELIVERED_STATES = frozenset({"DELIVRD", "DELIVERED"})
STATE_NAMES: dict[int, str] = {
    MessageState.ENROUTE: "ENROUTE",
    MessageState.DELIVERED: "DELIVRD",
    MessageState.EXPIRED: "EXPIRED",
    MessageState.DELETED: "DELETED",
    MessageState.UNDELIVERABLE: "UNDELIV",
    MessageState.ACCEPTED: "ACCEPTD",
    MessageState.UNKNOWN: "UNKNOWN",
    MessageState.REJECTED: "REJECTD",
}


@dataclass(frozen=True, slots=True)
class ParsedReceipt:
    """What a receipt says: which message (the SMSC's id, as sent) and its final state."""

    message_id: str
    state: str
    error: str = ""

    @property
    def delivered(self) -> bool:
        """True when the handset got it."""
        return self.state in DELIVERED_STATES


def is_receipt(pdu: Pdu) -> bool:
    """True for a deliver_sm (or data_sm) that reports on an earlier message.

    The message type is a 4-bit number, not a set of flags: 0x20 (intermediate notification)
    and 0x08 (SME acknowledgement) do not have the 0x04 bit, and are reports all the same, not
    text from a person.
    """
    return (int(pdu.fields.get("esm_class", 0)) & RECEIPT_TYPE_MASK) in RECEIPT_TYPES


def is_intermediate(pdu: Pdu, parsed: ParsedReceipt) -> bool:
    """True for a report that a message is still on its way: the final receipt follows."""
    esm_class = int(pdu.fields.get("esm_class", 0))
    intermediate = (esm_class & RECEIPT_TYPE_MASK) == INTERMEDIATE_NOTIFICATION
    return intermediate or parsed.state == "ENROUTE"


def parse_receipt(pdu: Pdu) -> ParsedReceipt | None:
    """The receipt in a deliver_sm, or None when it names no message."""
    fields = parse_receipt_text(_text(pdu))
    message_id = ""
    state = ""
    if Tag.RECEIPTED_MESSAGE_ID in pdu.tlvs:
        message_id = tlv_text(pdu.tlvs[Tag.RECEIPTED_MESSAGE_ID])
    if Tag.MESSAGE_STATE in pdu.tlvs:
        code = tlv_int(pdu.tlvs[Tag.MESSAGE_STATE])
        state = STATE_NAMES.get(code, f"STATE{code}")
    message_id = message_id or fields.get("id", "")
    state = state or fields.get("stat", "UNKNOWN").upper()
    if not message_id:
        return None
    error = fields.get("err", "")
    if not error and Tag.NETWORK_ERROR_CODE in pdu.tlvs:
        error = pdu.tlvs[Tag.NETWORK_ERROR_CODE].hex()
    return ParsedReceipt(message_id.strip(), state.strip(), error.strip())


def parse_receipt_text(text: str) -> dict[str, str]:
    """The fields of a receipt text, keys lower case: `{"id": ..., "stat": "DELIVRD", ...}`."""
    return {match["key"].lower(): match["value"].strip() for match in _FIELD.finditer(text.strip())}


def _text(pdu: Pdu) -> str:
    raw = pdu.tlvs.get(Tag.MESSAGE_PAYLOAD) or pdu.fields.get("short_message") or b""
    return bytes(raw).decode("latin-1")


def canonical_id(message_id: str, form: str) -> str:
    """One spelling for an SMSC message id, whether written in hex or decimal.

    Carriers answer submit_sm in one base and write receipts in another; with `form` "hex" or
    "decimal" the id is read in that base and given back as a decimal number, so both sides
    meet. "text" keeps it as it is. An id that does not parse stays as it is.
    """
    if form == "text":
        return message_id
    try:
        return str(int(message_id, 16 if form == "hex" else 10))
    except ValueError:
        return message_id
