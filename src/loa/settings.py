"""Settings: one validated object built from a TOML file plus LOA_* environment variables."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from loa.errors import ConfigError
from loa.log import hide_userinfo

ENV_PREFIX = "LOA_"
ROUTE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}\Z")
MIN_SECRET = 12  # characters of a webhook secret
# keys whose values are never shown in an error: passwords, tokens, keys, secrets
SECRET_KEY = re.compile(r"pass|secret|token|key|auth|credential|signature", re.IGNORECASE)


def default_data_dir() -> Path:
    """Where the embedded server keeps its data when LOA_DATA_DIR is not set."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "loa"


class ConfigModel(BaseModel):
    """Base of every settings table (and of adapter options): typos and odd values are refused.

    Unknown keys, NaN and infinity, and `true`/`false` where a number or text is expected are
    errors rather than being read as something else (`concurrency = true` is not 1).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            allowed = {annotation, *get_args(annotation)}
            if bool not in allowed and Any not in allowed:
                kind = "a number" if allowed & {int, float} else "text" if str in allowed else None
                raise ValueError(f"expected {kind or 'a table'}, not true/false")
        return value


class RouteSettings(ConfigModel):
    """One delivery path: an adapter instance plus its limits."""

    adapter: str = Field(min_length=1)
    rate: float = Field(default=0.0, ge=0, description="per second; 0 means unlimited")
    unit: Literal["parts", "messages"] = "parts"
    burst: float = Field(default=0.05, gt=0, le=10, description="seconds of rate sent at once")
    concurrency: int = Field(default=4, ge=1, le=1024, description="batches in flight per process")
    shards: int = Field(default=4, ge=1, le=1024)
    chunk: int = Field(default=50, ge=1, le=10_000, description="messages per adapter call")
    timeout: float = Field(default=10.0, gt=0, description="seconds one adapter call may take")
    max_attempts: int = Field(default=5, ge=1, le=100)
    backoff: float = Field(default=2.0, ge=0, description="seconds before the first retry")
    backoff_max: float = Field(default=600.0, ge=0)
    throttle_floor: float = Field(default=0.05, gt=0, le=1)
    throttle_recovery: float = Field(
        default=0.05, gt=0, le=1, description="fraction of the rate regained per second"
    )
    options: dict[str, Any] = Field(default_factory=dict)


class WorkerSettings(ConfigModel):
    """How worker processes run."""

    processes: int = Field(default=0, ge=0, le=512, description="0 means one per core")
    claim_idle: float = Field(default=30.0, gt=0, description="seconds before a batch is claimed")
    drain_timeout: float = Field(default=30.0, gt=0)
    max_deliveries: int = Field(
        default=5, ge=2, le=1000, description="workers a batch may outlive before it is dead"
    )
    idle_block: float = Field(
        default=0.25, gt=0, le=5, description="seconds an idle sender waits on one shard"
    )
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9750, ge=0, le=65535, description="0 turns /metrics off")

    def process_count(self) -> int:
        """The configured number of processes, or one per core."""
        return self.processes or (os.cpu_count() or 1)


class ChannelSettings(ConfigModel):
    """Which route carries a channel: per carrier for SMS, else the default route."""

    default: str | None = Field(default=None, description="route when no carrier route fits")
    carriers: dict[str, str] = Field(default_factory=dict, description="carrier -> route (SMS)")
    prefixes: dict[str, str] = Field(
        default_factory=dict, description="number prefix -> carrier, over the built-in table"
    )


class PlanningSettings(ConfigModel):
    """Whom campaigns reached (frequency caps), the longest SMS planned, pinned audiences."""

    frequency_memory: float = Field(
        default=7 * 86_400,
        ge=0,
        description=(
            "seconds each person a campaign reached (the provider accepted the message) is "
            "remembered; 0 remembers nobody"
        ),
    )
    pin_copy_limit_mb: float = Field(
        default=16_384,
        ge=0,
        description="audiences up to this size (MiB) are copied into the data directory at "
        "create; a larger one is pinned by its size, mtime and SHA-256 and read in place",
    )
    pinned_retention_days: float | None = Field(
        default=None,
        ge=0,
        description="former name of retention.audiences_days; when set, it wins",
    )
    max_sms_parts: int = Field(
        default=10,
        ge=1,
        le=255,
        description="an SMS longer than this many parts is an invalid row, not a message",
    )
    columnar: bool = Field(
        default=True,
        description="plan single-channel SMS campaigns a column batch at a time (false: always "
        "row by row, the reference planner)",
    )
    partitions: int = Field(
        default=0,
        ge=0,
        le=256,
        description="processes one launch plans a partitionable campaign in (a single-channel "
        "SMS plan without send times), each a partition of the audience by number; 0: one per "
        "core",
    )
    partition_min_mb: float = Field(
        default=32,
        ge=0,
        description="an audience file smaller than this (MiB) is planned in one process: "
        "starting more costs about what they would save",
    )


class EventSettings(ConfigModel):
    """What comes back from providers: delivery receipts and people's replies."""

    receipt_ttl: float = Field(
        default=72 * 3600, gt=0, description="seconds a sent message waits for its receipt"
    )
    inbound_max: int = Field(
        default=1_000_000, ge=1000, description="replies kept in the inbound stream"
    )
    optout_keywords: list[str] = Field(
        default_factory=lambda: ["STOP", "TU CHOI", "HUY"],
        description="a reply that is one of these (any case, diacritics ignored) opts out",
    )
    dedupe_ttl: float = Field(
        default=3600,
        gt=0,
        description="seconds a receipt or reply is remembered by its provider id, so that a "
        "repeat of it is acknowledged and not stored again",
    )


class InboxSettings(ConfigModel):
    """The hotline: what a citizen is told when they opt out, or back in."""

    optout_confirmation: bool = Field(
        default=True, description="answer an opt-out, so the person knows it worked"
    )
    optout_text: str = Field(
        default="Bo Y te: ban se khong nhan tin nhan nua. Nhan BAT de nhan lai.",
        min_length=1,
        max_length=320,
    )
    optin_keywords: list[str] = Field(
        default_factory=lambda: ["BAT", "START"],
        description="a reply that is one of these (any case, diacritics ignored) opts back in",
    )
    optin_text: str = Field(
        default="Bo Y te: ban se nhan lai tin nhan. Nhan TU CHOI de dung.",
        min_length=1,
        max_length=320,
    )


class QueueSettings(ConfigModel):
    """How producers fill the queues."""

    batch_size: int = Field(default=200, ge=1, le=10_000)
    max_depth: int = Field(default=5_000, ge=1, description="batches per shard before waiting")


class ApiSettings(ConfigModel):
    """The HTTP control API: where it listens, uploads, and the two-person rule."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    approval_threshold: int = Field(
        default=1000, ge=0, description="more recipients than this need a second person's approval"
    )
    test_numbers: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="a campaign sent only to these numbers skips approval (not on emergency)",
    )
    upload_limit_mb: float = Field(default=1024.0, gt=0, description="largest upload, in MiB")
    uploads_total_mb: float = Field(
        default=16_384, gt=0, description="uploads and pinned audiences together, in MiB"
    )
    concurrent_uploads: int = Field(default=4, ge=1, le=256, description="uploads at once")
    min_free_disk_mb: float = Field(
        default=1024, ge=0, description="uploads are refused when the data disk has less free"
    )
    launch_wait: float = Field(
        default=5.0, ge=0, le=60, description="seconds a launch request waits for planning"
    )
    webhook_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="route -> shared secret that signs its receipt webhooks (Zalo: OA secret key)",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="addresses of reverse proxies whose X-Forwarded-For is believed; none by "
        "default, so the audit log records the connecting address",
    )
    header_timeout: float = Field(
        default=10.0, gt=0, le=300, description="seconds a client has to send a request's headers"
    )
    auth_failures_per_minute: int = Field(
        default=30, ge=1, description="bad tokens one address may send a minute before 429"
    )
    token_max_days: float = Field(
        default=0, ge=0, description="tokens expire after this many days; 0: when revoked only"
    )
    audit_retention_days: float = Field(
        default=3650, ge=30, description="audit entries older than this are trimmed"
    )
    webhook_window: float = Field(
        default=300,
        gt=0,
        le=86_400,
        description="seconds a signed webhook's timestamp may be from this server's clock, "
        "either way; an older one is a replay and refused",
    )

    @field_validator("webhook_secrets")
    @classmethod
    def _long_secrets(cls, secrets: dict[str, SecretStr]) -> dict[str, SecretStr]:
        # checked on the whole table, so the error names the route but never echoes the secret
        for route, secret in secrets.items():
            if len(secret.get_secret_value()) < MIN_SECRET:
                raise ValueError(f"the secret of route {route!r} needs {MIN_SECRET}+ characters")
        return secrets


CapText = Literal[
    "event", "headline", "description", "instruction", "sender", "area", "expires", "web", "contact"
]


class CapZaloSettings(ConfigModel):
    """The Zalo ZNS template CAP alerts are sent with: its id, and which CAP text fills each
    of its parameters (`data = { title = "headline", content = "instruction" }`)."""

    template_id: str = Field(min_length=1)
    data: dict[str, CapText] = Field(min_length=1)


class CapSenderSettings(ConfigModel):
    """A sender whose CAP alerts loa trusts when signed: its certificate, and what it may do."""

    certificate: Path = Field(
        description="PEM X.509 certificate its XML signatures must verify against (pinned)"
    )
    auto_approve: bool = Field(
        default=False,
        description="its signed alerts are approved at once (audited), not by a second person",
    )


class CapSettings(ConfigModel):
    """CAP 1.2 alerts taken in (`loa cap submit`, `POST /api/v1/cap`): whom they reach, how."""

    audience: Path | None = Field(
        default=None,
        description="the standing audience file CAP alerts are sent to, by its `region` column "
        "(province code); a `lang` column chooses each person's language",
    )
    channels: list[Literal["sms", "zalo", "fcm", "email"]] | None = Field(
        default=None,
        description="in fallback order; unset: every channel that has a route (Zalo only with "
        "cap.zalo), SMS first",
    )
    language: str = Field(
        default="vi",
        pattern=r"^[A-Za-z]{2,8}$",
        description="the language of whoever has no `lang`, or one no <info> is written in",
    )
    geocode_names: list[str] = Field(
        default_factory=lambda: ["VN-PROVINCE"],
        min_length=1,
        description="<geocode> valueNames whose value is a province code",
    )
    sms_ascii: bool = Field(default=True, description="fold SMS text to ASCII: more per part")
    default_expires: float = Field(
        default=24 * 3600, gt=0, description="seconds an alert without <expires> stays current"
    )
    zalo: CapZaloSettings | None = None
    fallback_after: dict[Literal["zalo", "sms"], str] = Field(
        default_factory=dict,
        description='per channel: no delivered receipt within this long ("5m"), the alert '
        "goes on by the next channel (the plan's fallback_after; not for the last channel)",
    )
    senders: dict[str, CapSenderSettings] = Field(
        default_factory=dict,
        description="named senders (the alert's <sender>) whose XML signatures are verified",
    )
    require_signature: bool = Field(
        default=False, description="refuse every alert not signed by a named sender"
    )


class RetentionSettings(ConfigModel):
    """How long personal data is kept (docs/privacy.md); the server's clock deletes the rest.

    Receipts wait `events.receipt_ttl` (72 h) for their message and are then forgotten, and
    the frequency memory keeps `planning.frequency_memory`; both expire in Redis by themselves.
    """

    audiences_days: float = Field(
        default=30,
        ge=0,
        description="days a campaign's pinned audience and deduplication memory are kept after "
        "the campaign ended",
    )
    uploads_days: float = Field(
        default=30, ge=0, description="days an upload no campaign was made from is kept"
    )
    inbound_days: float = Field(
        default=180,
        ge=0,
        description="days inbound messages, replies and answers, and inbox cases (from their "
        "last change) are kept",
    )
    dead_letters_days: float = Field(
        default=30, ge=0, description="days a dead letter (who was not reached, why) is kept"
    )
    appointments_days: float = Field(
        default=30,
        ge=0,
        description="days a drive's appointment ledger is kept after its last session day",
    )


class BackupSettings(ConfigModel):
    """Scheduled backups that `loa server` makes, and where archives go."""

    every: float | None = Field(
        default=None,
        ge=0,
        description="seconds between scheduled backups; unset: daily with the embedded server, "
        "none with an external Redis; 0: none",
    )
    keep: int = Field(default=7, ge=1, le=10_000, description="archives kept in `dir`")
    dir: Path | None = Field(
        default=None, description="where archives go; default: the data directory's backups/"
    )
    verify: bool = Field(
        default=True, description="load each snapshot in a scratch server before trusting it"
    )

    def interval(self, embedded: bool) -> float:
        """Seconds between scheduled backups (0: none), with the unset default resolved."""
        if self.every is None:
            return 86_400.0 if embedded else 0.0
        return self.every


class Settings(ConfigModel):
    """Everything a loa process needs to know."""

    redis_url: str | None = Field(default=None, repr=False)  # it may hold a password
    data_dir: Path = Field(default_factory=default_data_dir)
    namespace: str = Field(default="loa", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    planning: PlanningSettings = Field(default_factory=PlanningSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    inbox: InboxSettings = Field(default_factory=InboxSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    cap: CapSettings = Field(default_factory=CapSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    routes: dict[str, RouteSettings] = Field(default_factory=dict)
    channels: dict[Literal["sms", "zalo", "fcm", "email"], ChannelSettings] = Field(
        default_factory=dict
    )

    @field_validator("routes")
    @classmethod
    def _route_names(cls, routes: dict[str, RouteSettings]) -> dict[str, RouteSettings]:
        for name in routes:
            if not ROUTE_NAME.fullmatch(name):
                raise ValueError(
                    f"route name {name!r} must be lower-case letters, digits, '-', '_' or '.'"
                )
        return routes

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str | None) -> str | None:
        if url is None or url == "":
            return None
        schemes = ("redis://", "rediss://", "unix://", "redis+cluster://")
        if not url.startswith(schemes):
            raise ValueError(f"must start with one of {', '.join(schemes)}")
        return url

    @model_validator(mode="after")
    def _channels_name_routes(self) -> Settings:
        for channel, spec in self.channels.items():
            named = [("default", spec.default)] if spec.default else []
            named += [(f"carriers.{carrier}", route) for carrier, route in spec.carriers.items()]
            for key, route in named:
                if route not in self.routes:
                    known = ", ".join(sorted(self.routes)) or "none"
                    raise ValueError(
                        f"channels.{channel}.{key}: no route named {route!r} (routes: {known})"
                    )
        return self

    @model_validator(mode="after")
    def _replays_within_the_window_are_known(self) -> Settings:
        # a webhook replayed inside its window is refused only by its remembered provider id
        if self.events.dedupe_ttl < self.api.webhook_window:
            raise ValueError(
                f"events.dedupe_ttl ({self.events.dedupe_ttl:g}s) must be at least "
                f"api.webhook_window ({self.api.webhook_window:g}s)"
            )
        return self

    @model_validator(mode="after")
    def _sends_end_before_claims(self) -> Settings:
        # a send that outlasts claim_idle looks like a dead worker: its batch would be sent twice
        for name, route in self.routes.items():
            if route.timeout >= self.worker.claim_idle:
                raise ValueError(
                    f"routes.{name}.timeout ({route.timeout:g}s) must be shorter than "
                    f"worker.claim_idle ({self.worker.claim_idle:g}s)"
                )
        return self

    @classmethod
    def load(
        cls,
        path: Path | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Build settings from `path` (or LOA_CONFIG), then LOA_* variables, then `overrides`."""
        env = os.environ if environ is None else environ
        if path is None and env.get(f"{ENV_PREFIX}CONFIG"):
            path = Path(env[f"{ENV_PREFIX}CONFIG"])
        data = read_toml(path) if path is not None else {}
        _deep_merge(data, _env_values(env))
        _deep_merge(data, dict(overrides or {}))
        return cls.from_mapping(
            data, source=str(path) if path else "settings", origins=_env_origins(env)
        )

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        *,
        source: str = "settings",
        origins: Mapping[tuple[str, ...], str] | None = None,
    ) -> Settings:
        """Validate a plain mapping, turning pydantic's errors into one ConfigError.

        `origins` maps a key path to the environment variable that set it, so an error in a
        value that came from the environment names that variable.
        """
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            message = describe_errors(exc, model=cls, origins=origins)
            raise ConfigError(f"{source}: {message}") from None

    def route(self, name: str) -> RouteSettings:
        """The named route, or a ConfigError listing the known ones."""
        try:
            return self.routes[name]
        except KeyError:
            known = ", ".join(sorted(self.routes)) or "none"
            raise ConfigError(f"unknown route {name!r} (configured routes: {known})") from None


def describe_errors(
    exc: ValidationError,
    *,
    prefix: str = "",
    model: type[BaseModel] | None = None,
    origins: Mapping[tuple[str, ...], str] | None = None,
) -> str:
    """One clause per problem: the dotted key, what is wrong and the value that was given.

    `prefix` is put before every key (`routes.sms.options`); with `model`, an unknown key gets
    a "did you mean" for the closest known one; `origins` names the environment variable a
    wrong value came from.
    """
    lines = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        key = ".".join((prefix, *loc) if prefix else loc)
        origin = next(
            (name for path, name in (origins or {}).items() if loc[: len(path)] == path), None
        )
        source = f" (from ${origin})" if origin else ""
        if error["type"] == "extra_forbidden":
            near = difflib.get_close_matches(loc[-1], _known_keys(model, loc), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            lines.append(f"{key}: unknown key{hint}{source}")
            continue
        message = error["msg"]
        if error["type"] == "value_error":
            message = str(error.get("ctx", {}).get("error", message.removeprefix("Value error, ")))
        given = error.get("input")
        secret = any(SECRET_KEY.search(part) for part in loc)
        shown = "" if secret or isinstance(given, dict | list) else f" (got {given!r})"
        shown = hide_userinfo(shown)
        # a check across keys names its keys itself
        lines.append(f"{key}: {message}{shown}{source}" if key else f"{message}{source}")
    return "; ".join(lines)


def _known_keys(model: type[BaseModel] | None, loc: tuple[str, ...]) -> list[str]:
    """The keys allowed in the table that holds the key at `loc` (empty if unknown)."""
    current: Any = model
    parts = list(loc[:-1])
    while parts:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(parts.pop(0))
        if field is None:
            return []
        current = field.annotation
        if get_origin(current) is dict:  # a table of named tables, like [routes.NAME]
            if not parts:
                return []
            parts.pop(0)
            current = get_args(current)[1]
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def read_toml(
    path: Path, what: str = "config file", error: type[ConfigError] = ConfigError
) -> dict[str, Any]:
    """Read a TOML file, turning a missing file or a syntax error into `error` naming `what`."""
    return parse_toml(read_bytes(path, what, error), f"{what} {path}", error)


def read_bytes(path: Path, what: str, error: type[ConfigError] = ConfigError) -> bytes:
    """A file's content, or `error` naming `what` when it cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a directory") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read: {exc.strerror or exc}") from None


def parse_toml(data: bytes, what: str, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """TOML text as a mapping, or `error` saying why `what` (a name for it) is not TOML."""
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not UTF-8 text: {exc.reason}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} is not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per level of nested arrays and tables
        raise error(f"{what} nests arrays or tables too deeply") from None


def _env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """LOA_REDIS_URL=x -> {"redis_url": "x"}; LOA_WORKER__PROCESSES=2 -> {"worker": {...}}."""
    values: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if path[0] not in Settings.model_fields:
            continue  # other LOA_* variables (tests, tools) are not settings
        node = values
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return values


def _env_origins(environ: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """The key path each LOA_* settings variable sets, mapped to the variable's name."""
    origins: dict[tuple[str, ...], str] = {}
    for name in environ:
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
            continue
        path = tuple(name[len(ENV_PREFIX) :].lower().split("__"))
        if path[0] in Settings.model_fields:
            origins[path] = name
    return origins


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = dict(value) if isinstance(value, Mapping) else value
