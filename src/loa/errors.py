"""The one error tree of loa: every error the product raises on purpose is a LoaError."""

from __future__ import annotations


class LoaError(Exception):
    """Base of every error loa raises on purpose; `code` is its stable snake_case name."""

    code = "bad_request"


class ConfigError(LoaError, ValueError):
    """A settings file, environment variable or option is wrong; the message names the key."""

    code = "invalid_config"


class EnvelopeError(LoaError, ValueError):
    """A queue entry cannot be decoded: wrong version, truncated or not an envelope."""


class QueueError(LoaError):
    """A queue operation failed in a way the caller must know about."""

    code = "queue_unavailable"


class QueueFull(QueueError):
    """A shard stayed at its maximum depth for longer than the producer was willing to wait."""


class EmbeddedServerError(LoaError, RuntimeError):
    """The embedded Redis-protocol server could not be found, started or stopped."""

    code = "redis_unavailable"


class BackupError(LoaError):
    """A backup could not be made, or an archive cannot be restored where it was asked to."""

    code = "backup_failed"


class ArchiveDamaged(BackupError, ValueError):
    """A backup archive is truncated, altered or not one: its manifest and content disagree."""

    code = "archive_damaged"


class AdapterError(LoaError):
    """Base of errors raised by delivery adapters."""


class AdapterNotFound(ConfigError, LookupError):
    """No adapter is registered under the configured name."""


class AdapterContractError(AdapterError):
    """An adapter broke its contract (for example returned the wrong number of results)."""


class AdapterTimeout(AdapterError, TimeoutError):
    """An adapter call took longer than its route allows."""


class PlanError(ConfigError):
    """A campaign plan is wrong; the message names the key and the reason."""

    code = "invalid_plan"


class AudienceError(LoaError, ValueError):
    """An audience file cannot be read at all (empty, no phone column, not text, unknown format).

    A single bad row is not an error: it is reported with its line number and the rest goes on.
    """

    code = "invalid_audience"


class InvalidPhone(LoaError, ValueError):
    """A phone number that cannot be normalised to E.164; the message says why."""

    code = "invalid_address"


class TemplateError(PlanError):
    """A template does not compile, or names a field the audience does not have."""

    code = "invalid_template"


class CampaignError(LoaError):
    """A campaign operation is not allowed (unknown id, or a state that forbids it)."""

    code = "illegal_transition"


class ApprovalRequired(CampaignError):
    """A campaign cannot go on until it is approved (by a second person, when it needs one)."""

    code = "approval_required"


class CapError(LoaError, ValueError):
    """A CAP alert refused: `problems` holds one line per problem, each naming its element path.

    `status` is how the API answers it: 422 for an alert that is not valid, 409 for one that
    conflicts with what loa holds (submitted before, or referencing an alert it never had).
    """

    code = "invalid_cap"
    status = 422

    def __init__(
        self, problems: list[str], *, code: str | None = None, status: int | None = None
    ) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
class AppointmentError(LoaError):
    """An appointments operation is refused (an unknown drive, a bad horizon); says why."""

    code = "appointments_refused"


class SmppError(AdapterError):
    """An SMPP session failed: the peer refused the bind, broke the protocol or went away."""


class PduError(SmppError, ValueError):
    """Bytes that are not a valid SMPP 3.4 PDU, or a field that does not fit one; says which."""


class BindError(SmppError):
    """The SMSC refused the bind (wrong system id or password, or too many binds)."""


class SessionClosed(SmppError, ConnectionError):
    """The SMPP session closed before a response came back."""


class ApiError(LoaError):
    """An HTTP API request refused: `status` and a stable snake_case `code` say how and why."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class AuthError(ApiError, PermissionError):
    """No valid API token (401), or a token whose role or person may not do this (403)."""

    status = 401
    code = "unauthorized"
