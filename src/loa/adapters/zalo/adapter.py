"""The Zalo ZNS adapter: one templated notification per phone, error codes mapped to results."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from loa.adapters.base import Capabilities
from loa.adapters.httpclient import BadAnswer, HttpAdapterBase, HttpOptions, Reply, check_url
from loa.adapters.httpclient import status_result as http_status_result
from loa.adapters.registry import parse_options
from loa.errors import ConfigError
from loa.log import mask
from loa.message import (
    Accepted,
    Failed,
    Message,
    RetryLater,
    SendResult,
    Throttled,
    zalo_content,
)

log = logging.getLogger("loa.adapters.zalo")  # the package: what operators filter on

DEFAULT_BASE_URL = "https://business.openapi.zalo.me"
ACCESS_TOKEN_INVALID = -124

Action = Literal["fallback", "failed", "retry", "throttled"]

# What each ZNS error code means for the message, from Zalo's "handle error code" guide
# (zalo.cloud/zns/guidelines/handle-error-code). "fallback": this person cannot be reached on
# Zalo, so the campaign's next channel takes the message; "failed": our request is wrong and
# will stay wrong; "throttled": quota or rate; "retry": worth another attempt. Codes not listed
# are retried (a new code is more often a transient provider state than a refusal).
ERRORS: dict[int, tuple[Action, str]] = {
    -100: ("retry", "unknown error"),
    -101: ("failed", "application invalid"),
    -102: ("failed", "application does not exist"),
    -103: ("failed", "application not activated"),
    -104: ("failed", "application secret key invalid"),
    -105: ("failed", "application not linked to an official account"),
    -106: ("failed", "method unsupported"),
    -107: ("failed", "message id invalid"),
    -108: ("failed", "phone number invalid"),
    -109: ("failed", "template id invalid"),
    -110: ("fallback", "recipient's Zalo version unsupported"),
    -111: ("failed", "template data empty"),
    -112: ("failed", "template data invalid"),
    -113: ("failed", "button invalid"),
    -114: ("fallback", "recipient inactive, refused the message or uses an old Zalo"),
    -115: ("throttled", "out of quota"),
    -116: ("failed", "content invalid"),
    -117: ("failed", "official account or app has no permission for this template"),
    -118: ("fallback", "Zalo account does not exist"),
    -119: ("fallback", "account cannot receive ZNS"),
    -120: ("failed", "official account has no permission for this feature"),
    -121: ("failed", "message body empty"),
    -122: ("failed", "message body format invalid"),
    -124: ("retry", "access token invalid or expired"),
    -125: ("failed", "official account id invalid"),
    -130: ("failed", "content longer than the template allows"),
    -131: ("failed", "template not approved"),
    -132: ("failed", "parameter invalid"),
    -133: ("retry", "sending outside the hours ZNS allows"),
    -134: ("fallback", "recipient has not accepted ZNS from this official account"),
    -135: ("failed", "official account has no permission to send ZNS"),
    -138: ("failed", "application has no permission for this feature"),
    -139: ("fallback", "recipient refused this type of ZNS"),
    -140: ("fallback", "official account may not send this recipient after-sales ZNS"),
    -141: ("fallback", "recipient refused ZNS from this official account"),
    -144: ("throttled", "official account over its daily quota"),
}

# The "failed" codes that are the template's or the content's fault, the same for every
# recipient: such a message is never handed to the next channel (Failed.template). The other
# "failed" codes (the application or official account refused) are the channel's: with the
# plan's fallback_on_failure (the default) its messages go on to the next channel.
TEMPLATE_CODES = frozenset(
    {-107, -109, -111, -112, -113, -116, -117, -121, -122, -130, -131, -132}
)


class ZaloOptions(HttpOptions):
    """Where ZNS lives, the official account's access token and error-code overrides."""

    base_url: str = DEFAULT_BASE_URL
    access_token: SecretStr | None = Field(default=None, min_length=1)
    access_token_file: str | None = Field(
        default=None, min_length=1, description="read again when Zalo says the token expired"
    )
    template_id: str | None = Field(
        default=None, min_length=1, description="for messages whose extra names none"
    )
    errors: dict[str, Action] = Field(
        default_factory=dict, description="ZNS code -> fallback, failed, retry or throttled"
    )
    quota_retry_after: float = Field(
        default=60.0, ge=0, le=86_400, description="seconds to wait on a quota error code"
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)

    @field_validator("errors")
    @classmethod
    def _codes(cls, value: dict[str, Action]) -> dict[str, Action]:
        for code in value:
            try:
                int(code)
            except ValueError:
                raise ValueError(f'{code!r} is not a ZNS error code (write it as "-118")') from None
        return value

    @model_validator(mode="after")
    def _one_token(self) -> ZaloOptions:
        if (self.access_token is None) == (self.access_token_file is None):
            raise ValueError("give exactly one of access_token and access_token_file")
        return self


class ZaloAdapter(HttpAdapterBase):
    """POST {base_url}/message/template for each message; Message.to is the E.164 phone."""

    # receipts and replies come by Zalo's OA webhook (adapters/zalo/webhook.py)
    capabilities: ClassVar[Capabilities] = Capabilities(webhook="zalo")

    provider = "zalo"

    def __init__(self, route: str, options: ZaloOptions) -> None:
        super().__init__(route, options)
        self.options = options
        self.url = f"{options.base_url}/message/template"
        self.errors = {code: action for code, (action, _) in ERRORS.items()}
        self.errors.update({int(code): action for code, action in options.errors.items()})
        given = options.access_token.get_secret_value() if options.access_token else ""
        self._token = given or self._read_token(route)
        self._token_stale = False
        self._token_warned = False

    @classmethod
    def create(cls, route: str, options: Mapping[str, Any]) -> ZaloAdapter:
        """Factory for the registry."""
        return cls(route, parse_options(ZaloOptions, route, options))

    def _read_token(self, route: str) -> str:
        path = Path(self.options.access_token_file or "")
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"routes.{route}.options.access_token_file: cannot read {path}: "
                f"{getattr(exc, 'strerror', None) or exc}"
            ) from None
        if not token:
            raise ConfigError(f"routes.{route}.options.access_token_file: {path} is empty")
        return token

    def _access_token(self) -> str:
        """The token; after a -124 its file is read again (an operator may have renewed it)."""
        if self._token_stale and self.options.access_token_file:
            self._token_stale = False
            try:
                self._token = self._read_token(self.route)
            except ConfigError as exc:
                log.warning(
                    "zalo token file unreadable", extra={"route": self.route, "error": str(exc)}
                )
        return self._token

    def payload(self, message: Message) -> dict[str, Any] | Failed:
        """The ZNS request body, or Failed when the message lacks what ZNS needs."""
        try:
            content = zalo_content(message, self.options.template_id or "")
        except ValueError as exc:
            return Failed(f"zalo: {exc}", template=True)
        return {
            "phone": message.to.lstrip("+"),
            "template_id": content.template_id,
            "template_data": dict(content.data),
            "tracking_id": message.id,
        }

    async def send_one(self, message: Message) -> SendResult:
        """Send one notification and map ZNS's answer."""
        body = self.payload(message)
        if isinstance(body, Failed):
            return body
        headers = {"access_token": self._access_token()}
        reply = await self.client.request("POST", self.url, json=body, headers=headers)
        return self.judge(reply) if isinstance(reply, Reply) else reply

    def judge(self, reply: Reply) -> SendResult:
        """Accepted with ZNS's msg_id, or the result its error code stands for."""
        by_status = http_status_result(reply, self.provider)
        if by_status is not None:
            return by_status
        try:
            doc = reply.json_object()
        except BadAnswer as exc:
            return RetryLater(f"zalo {exc}")
        code = doc.get("error")
        if not isinstance(code, int) or isinstance(code, bool):
            return RetryLater(f"zalo answer has no error code: {reply.snippet()!r}")
        if code == 0:
            return self._accepted(doc, reply)
        return self._refused(code, str(doc.get("message", "")))

    def _accepted(self, doc: dict[str, Any], reply: Reply) -> SendResult:
        data = doc.get("data")
        msg_id = data.get("msg_id") if isinstance(data, dict) else None
        if msg_id is None:
            return RetryLater(f"zalo answer has no data.msg_id: {reply.snippet()!r}")
        self._token_warned = False
        return Accepted.one(str(msg_id))

    def _refused(self, code: int, text: str) -> SendResult:
        action = self.errors.get(code, "retry")
        meaning = ERRORS.get(code, ("retry", "unknown error code"))[1]
        reason = f"zalo {code}: {mask(text)[:120] or meaning}"
        if code == ACCESS_TOKEN_INVALID:
            self._token_problem()
        if action == "fallback":
            return Failed(reason, fallback=True)
        if action == "failed":
            return Failed(reason, template=code in TEMPLATE_CODES)
        if action == "throttled":
            return Throttled(self.options.quota_retry_after)
        return RetryLater(reason)

    def _token_problem(self) -> None:
        """Log the first -124 of a run of them (never the token), and re-read the token file."""
        self._token_stale = True
        if not self._token_warned:
            self._token_warned = True
            log.warning(
                "zalo access token invalid or expired; messages are retried until it is renewed",
                extra={
                    "route": self.route,
                    "token_from_file": bool(self.options.access_token_file),
                },
            )
