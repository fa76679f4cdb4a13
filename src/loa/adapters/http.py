"""The generic HTTP adapter: brandname-SMS gateways and Kannel's sendsms, by request template."""

from __future__ import annotations

import contextlib
import re
import string
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

import aiohttp
import phonenumbers
from pydantic import AfterValidator, Field, SecretStr, ValidationInfo, field_validator

from loa.adapters.httpclient import (
    BadAnswer,
    HttpAdapterBase,
    HttpOptions,
    Reply,
    check_url,
    lookup,
    status_result,
)
from loa.adapters.registry import parse_options
from loa.errors import ConfigError
from loa.log import mask
from loa.message import Accepted, Failed, Message, RetryLater, SendResult

PLACEHOLDERS = ("to", "to_national", "to_digits", "body", "id", "parts", "extra")
KNOWN = "{to}, {to_national}, {to_digits}, {body}, {id}, {parts} and {extra[name]}"
_FIELD = re.compile(r"(?P<name>[A-Za-z_]\w*)(?:\[(?P<key>[^\[\]]+)\])?")
_LONE = re.compile(r"\{([A-Za-z_]\w*(?:\[[^\[\]{}]+\])?)\}")


def check_template(template: str) -> str:
    """Refuse a template that names an unknown placeholder, or uses attributes or conversions."""
    try:
        fields = [item[1:] for item in string.Formatter().parse(template) if item[1] is not None]
    except ValueError as exc:
        raise ValueError(
            f"not a template ({exc}); write {{{{ and }}}} for literal braces"
        ) from None
    for name, spec, conversion in fields:
        match = _FIELD.fullmatch(name or "")
        # only {extra[...]} takes an index; nothing takes an attribute (no {to.__class__})
        if (
            match is None
            or match["name"] not in PLACEHOLDERS
            or ((match["name"] == "extra") != bool(match["key"]))
        ):
            raise ValueError(f"unknown placeholder {{{name}}}; known: {KNOWN}")
        if conversion or (spec and "{" in spec):
            raise ValueError(f"placeholder {{{name}}}: no !conversions or nested fields")
    return template


Template = Annotated[str, AfterValidator(check_template)]


class HttpGatewayOptions(HttpOptions):
    """A gateway's request template and how to read its answer."""

    url: str
    method: Literal["GET", "POST"] = "POST"
    format: Literal["json", "form", "query"] | None = Field(
        default=None, description="how params travel; default query for GET, json for POST"
    )
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Template] = Field(min_length=1, description="field -> template")
    success_field: str | None = Field(default=None, min_length=1, description="JSON path")
    success_values: list[str | int | bool] = Field(default_factory=list, validate_default=True)
    success_regex: str | None = Field(
        default=None, min_length=1, description="the text of an accepting answer; (?P<id>) is kept"
    )
    id_field: str | None = Field(default=None, min_length=1, description="JSON path of the id")
    username: str | None = None
    password: SecretStr | None = Field(default=None, validate_default=True)
    token: SecretStr | None = Field(default=None, min_length=1, description="bearer token")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)

    @field_validator("success_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    # The checks across keys are field validators on the later key, so the error names a key.
    @field_validator("format")
    @classmethod
    def _get_in_query(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("method") == "GET" and value not in (None, "query"):
            raise ValueError("a GET request carries its params in the query: use format = query")
        return value

    @field_validator("success_values")
    @classmethod
    def _values_with_field(
        cls, value: list[str | int | bool], info: ValidationInfo
    ) -> list[str | int | bool]:
        if bool(info.data.get("success_field")) != bool(value):
            raise ValueError("success_field and success_values go together")
        return value

    @field_validator("password")
    @classmethod
    def _user_and_password(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        if (info.data.get("username") is None) != (value is None):
            raise ValueError("username and password go together (HTTP basic auth)")
        return value

    @field_validator("token")
    @classmethod
    def _one_auth(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and info.data.get("username") is not None:
            raise ValueError("use either username/password or token, not both")
        return value

    @property
    def body_format(self) -> str:
        """The format in effect."""
        return self.format or ("query" if self.method == "GET" else "json")


class _Extra(Mapping[str, Any]):
    """A message's extra fields; a missing one is a KeyError that names it."""

    def __init__(self, extra: Mapping[str, Any] | None) -> None:
        self._extra = extra if extra is not None else {}

    def __getitem__(self, key: object) -> Any:
        return self._extra[str(key)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._extra)

    def __len__(self) -> int:
        return len(self._extra)


class _Fields(Mapping[str, Any]):
    """The placeholders of one message, each computed only if a template asks for it."""

    def __init__(self, message: Message) -> None:
        self.message = message

    def __getitem__(self, key: str) -> Any:
        m = self.message
        if key == "extra":
            return _Extra(m.extra)
        if key in ("to_national", "to_digits"):
            return national(m.to) if key == "to_national" else m.to.lstrip("+")
        values = {"to": m.to, "body": m.body, "id": m.id, "parts": m.parts}
        return values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(PLACEHOLDERS)

    def __len__(self) -> int:
        return len(PLACEHOLDERS)


def national(e164: str) -> str:
    """+84912345678 -> 0912345678: the number as dialled at home, digits only."""
    if e164.startswith("+84"):  # nearly every number here: skip phonenumbers
        return "0" + e164[3:]
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164.lstrip("+")
    text = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    return "".join(ch for ch in text if ch.isdigit())


class _RenderError(Exception):
    """A template cannot be filled in for this message (a missing or odd extra field)."""


class HttpAdapter(HttpAdapterBase):
    """Sends each message as one request built from the route's template."""

    provider = "gateway"

    def __init__(self, route: str, options: HttpGatewayOptions) -> None:
        super().__init__(route, options)
        self.options = options
        self._regex = re.compile(options.success_regex) if options.success_regex else None
        self._accepted = {_canon(value) for value in options.success_values}
        self._headers = dict(options.headers)
        if options.username is not None:
            password = options.password.get_secret_value() if options.password else ""
            auth = aiohttp.encode_basic_auth(options.username, password)
            self._headers["Authorization"] = auth
        if options.token:
            self._headers["Authorization"] = f"Bearer {options.token.get_secret_value()}"
        self._check_render(route)

    @classmethod
    def create(cls, route: str, options: Mapping[str, Any]) -> HttpAdapter:
        """Factory for the registry."""
        return cls(route, parse_options(HttpGatewayOptions, route, options))

    def _check_render(self, route: str) -> None:
        """Render every template once on a sample, so a bad format spec fails at start-up."""
        sample = Message("sample", "+84912345678", "sample", 1, extra=_AnyExtra())
        for key, template in self.options.params.items():
            try:
                template.format_map(_Fields(sample))
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                raise ConfigError(
                    f"routes.{route}.options.params.{key}: {template!r} cannot be filled in: "
                    f"{type(exc).__name__}: {exc}"
                ) from None

    def render(self, message: Message) -> dict[str, Any]:
        """The request's fields for one message; a lone placeholder keeps its type in JSON."""
        fields = _Fields(message)
        keep_types = self.options.body_format == "json"
        rendered: dict[str, Any] = {}
        for key, template in self.options.params.items():
            lone = _LONE.fullmatch(template) if keep_types else None
            try:
                if lone is None:
                    rendered[key] = template.format_map(fields)
                elif "[" in lone[1]:  # {extra[name]}
                    rendered[key] = fields["extra"][lone[1][6:-1]]
                else:
                    rendered[key] = fields[lone[1]]
            except KeyError as exc:
                name = str(exc.args[0]) if exc.args else key
                raise _RenderError(
                    f"message has no extra field {name!r} for params.{key}"
                ) from None
            except (ValueError, TypeError) as exc:
                raise _RenderError(f"params.{key} cannot be filled in: {exc}") from None
        return rendered

    async def send_one(self, message: Message) -> SendResult:
        """Send one message and judge the gateway's answer."""
        try:
            fields = self.render(message)
        except _RenderError as exc:
            return Failed(f"gateway: {exc}")
        body_format = self.options.body_format
        reply = await self.client.request(
            self.options.method,
            self.options.url,
            json=fields if body_format == "json" else None,
            form={k: str(v) for k, v in fields.items()} if body_format == "form" else None,
            query={k: str(v) for k, v in fields.items()} if body_format == "query" else None,
            headers=self._headers,
        )
        return self.judge(reply) if isinstance(reply, Reply) else reply

    def judge(self, reply: Reply) -> SendResult:
        """Accepted, refused or unreadable, from the status, the regex and the JSON fields."""
        by_status = status_result(reply, self.provider)
        if by_status is not None:
            return by_status
        provider_id = ""
        if self._regex is not None:
            found = self._regex.search(reply.text())
            if found is None:  # refusals come with a 4xx; an unknown 2xx text is not one
                return RetryLater(f"gateway answer not recognised as accepted: {reply.snippet()!r}")
            provider_id = (found.groupdict().get("id") or "").strip()
        if self.options.success_field is None and self.options.id_field is None:
            return Accepted.one(provider_id)
        try:
            return self._judge_json(reply.json(), provider_id)
        except BadAnswer as exc:
            return RetryLater(f"gateway {exc}")

    def _judge_json(self, doc: Any, provider_id: str) -> SendResult:
        opts = self.options
        if opts.success_field is not None:
            try:
                value = lookup(doc, opts.success_field)
            except KeyError:
                return RetryLater(f"gateway answer has no field {opts.success_field!r}")
            if _canon(value) not in self._accepted:
                shown = mask(repr(value))[:80]
                return Failed(f"gateway refused the message ({opts.success_field}={shown})")
        if opts.id_field is not None:
            with contextlib.suppress(KeyError):  # accepted all the same, just not matchable
                provider_id = str(lookup(doc, opts.id_field))
        return Accepted.one(provider_id)


class _AnyValue:
    """A sample extra value: it takes any format spec, as the real value's type is unknown."""

    def __format__(self, spec: str) -> str:
        return "sample"


class _AnyExtra(dict[str, Any]):
    """A sample message's extra fields: every name is present."""

    def __missing__(self, key: str) -> _AnyValue:
        return _AnyValue()


def _canon(value: object) -> str:
    """One text form for a JSON scalar, so 0 matches "0" and true matches "true"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
