"""Signed CAP alerts: an enveloped XML signature (XMLDSig) checked against its sender's certificate.

The settings name the senders loa trusts (`[cap.senders."sender@example.gov.vn"]`), each with
the PEM certificate its signatures must verify against; the certificate is pinned, so no chain
or trust store is consulted. What a verified alert becomes is exactly what was signed: the
signed content is read again as the alert, so nothing outside the signature (an element added
beside it, a second alert wrapped around it) is ever acted on.

The document has already been parsed by `parse.parse_alert` before this runs: a DOCTYPE or an
entity is refused there, before the signature library reads anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loa.cap.model import Alert
from loa.errors import CapError
from loa.settings import CapSenderSettings, CapSettings


@dataclass(frozen=True, slots=True)
class Signer:
    """A named sender whose signature on an alert verified."""

    sender: str
    auto_approve: bool  # its alerts need no second person (cap.senders.*.auto_approve)


@dataclass(frozen=True, slots=True)
class Verified:
    """The alert's signed content (the bytes to act on), and who signed it (None: unsigned)."""

    data: bytes
    signer: Signer | None


def verify_alert(data: bytes, alert: Alert, settings: CapSettings) -> Verified:
    """Check `alert`'s signature as the settings ask; CapError (one line, the path first) if not.

    An unsigned alert passes unless `cap.require_signature`; a signed one from a sender the
    settings do not name passes unverified (and unsigned in effect) unless the same setting.
    """
    named = settings.senders.get(alert.sender)
    if not alert.signed or named is None:
        if settings.require_signature:
            raise CapError([_unverifiable(alert, named)], code="unsigned", status=403)
        return Verified(data, None)
    signed = _verified_content(data, alert.sender, named)
    return Verified(signed, Signer(alert.sender, named.auto_approve))


def _unverifiable(alert: Alert, named: CapSenderSettings | None) -> str:
    if named is None:
        return (
            f"alert/sender: {alert.sender!r} is not a named sender (cap.senders), and "
            "cap.require_signature takes only alerts signed by one"
        )
    return "alert/Signature: the alert is unsigned; cap.require_signature takes only signed ones"


def _verified_content(data: bytes, sender: str, named: CapSenderSettings) -> bytes:
    # here, not above: signxml loads lxml and cryptography, which every `loa` command would
    # otherwise pay for as it starts
    from signxml.exceptions import SignXMLException
    from signxml.verifier import XMLVerifier

    certificate = _certificate(named.certificate, sender)
    try:
        result = XMLVerifier().verify(data, x509_cert=certificate)
    except SignXMLException as exc:
        raise CapError(
            [f"alert/Signature: does not verify against the certificate of {sender!r} ({exc})"],
            code="bad_signature",
            status=403,
        ) from None
    signed = result if not isinstance(result, list) else result[0]
    return bytes(signed.signed_data)  # canonical, after the transforms: the signature left out


def _certificate(path: Path, sender: str) -> str:
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise CapError(
            [f"settings: cap.senders.{sender!r}.certificate {path} cannot be read ({exc})"],
            code="settings",
            status=500,
        ) from None
