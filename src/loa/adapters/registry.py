"""Finding adapters by name: the built-in ones and those registered under `loa.adapters`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ValidationError

from loa.adapters.base import (
    DEFAULT_CAPABILITIES,
    Adapter,
    AdapterFactory,
    Capabilities,
    EmitsEvents,
)
from loa.adapters.inbound import LoaWebhook, Webhook
from loa.errors import AdapterContractError, AdapterNotFound, ConfigError
from loa.settings import Settings, describe_errors

ENTRY_POINT_GROUP = "loa.adapters"
OptionsT = TypeVar("OptionsT", bound=BaseModel)

log = logging.getLogger(__name__)


def _builtins() -> dict[str, AdapterFactory]:
    from loa.adapters.console import ConsoleAdapter
    from loa.adapters.fcm import FcmAdapter
    from loa.adapters.file import FileAdapter
    from loa.adapters.http import HttpAdapter
    from loa.adapters.null import NullAdapter
    from loa.adapters.smpp.adapter import SmppAdapter
    from loa.adapters.smtp import SmtpAdapter
    from loa.adapters.zalo.adapter import ZaloAdapter

    return {
        "null": NullAdapter.create,
        "smpp": SmppAdapter.create,
        "http": HttpAdapter.create,
        "zalo": ZaloAdapter.create,
        "fcm": FcmAdapter.create,
        "smtp": SmtpAdapter.create,
        "file": FileAdapter.create,
        "console": ConsoleAdapter.create,
    }


def _plugins() -> dict[str, EntryPoint]:
    """The entry points of the `loa.adapters` group, not loaded yet."""
    return {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}


def _load(point: EntryPoint, key: str = "") -> AdapterFactory:
    """Import a plug-in's factory; a plug-in that cannot be imported is a ConfigError."""
    where = f"{point.value}" + (f" from {point.dist.name}" if point.dist else "")
    head = f"{key}: " if key else ""
    try:
        factory = point.load()
    except (ImportError, AttributeError, SyntaxError) as exc:
        raise ConfigError(
            f"{head}adapter plug-in {point.name!r} ({where}) cannot be loaded: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not callable(factory):
        raise ConfigError(f"{head}adapter plug-in {point.name!r} ({where}) is not callable")
    return cast(AdapterFactory, factory)


def webhook_formats() -> dict[str, Webhook]:
    """Every callback format by name: a provider's own beside its adapter, and loa's."""
    from loa.adapters.zalo.webhook import ZaloWebhook

    return {"zalo": ZaloWebhook(), "loa": LoaWebhook()}


def capabilities(adapter: str) -> Capabilities:
    """What the adapter named `adapter` declares it can do, without building one."""
    factory = _builtins().get(adapter)
    if factory is None:
        point = _plugins().get(adapter)
        if point is None:
            return DEFAULT_CAPABILITIES
        factory = _load(point)
    owner = getattr(factory, "__self__", factory)  # a classmethod's class, or the factory
    declared = getattr(owner, "capabilities", DEFAULT_CAPABILITIES)
    return declared if isinstance(declared, Capabilities) else DEFAULT_CAPABILITIES


def webhook(adapter: str) -> Webhook:
    """The callback format of the adapter named `adapter`'s provider."""
    name = capabilities(adapter).webhook
    found = webhook_formats().get(name)
    if found is None:
        raise ConfigError(f"adapter {adapter!r} declares webhook format {name!r}, which loa lacks")
    return found


def receives_receipts(settings: Settings, route: str, adapter: Adapter) -> bool:
    """True when receipts come back for the route's messages: on its adapter's own connection,
    or by its provider's webhook, which a secret for the route turns on."""
    declared = getattr(adapter, "capabilities", DEFAULT_CAPABILITIES)
    if isinstance(adapter, EmitsEvents) or (
        isinstance(declared, Capabilities) and declared.receipts
    ):
        return True
    return route in settings.api.webhook_secrets


def names() -> list[str]:
    """The names of every adapter, built in or registered, without importing any plug-in."""
    return sorted(set(_plugins()) | set(_builtins()))


def available() -> dict[str, AdapterFactory]:
    """Every adapter factory by name; a plug-in may not shadow a built-in.

    A plug-in that cannot be imported is left out (and logged), so one broken distribution
    does not take the others down; `create_adapter` reports it when a route asks for it.
    """
    builtins = _builtins()
    factories: dict[str, AdapterFactory] = {}
    for name, point in _plugins().items():
        if name in builtins:
            continue
        try:
            factories[name] = _load(point)
        except ConfigError as exc:
            log.warning("adapter plug-in skipped", extra={"adapter": name, "error": str(exc)})
    factories.update(builtins)
    return factories


def create_adapter(route: str, adapter: str, options: Mapping[str, Any]) -> Adapter:
    """Build the adapter named `adapter` for `route`; unknown names and bad options are refused."""
    builtins = _builtins()
    factory = builtins.get(adapter)
    if factory is None:
        plugins = _plugins()
        if adapter not in plugins:
            known = ", ".join(sorted(set(plugins) | set(builtins)))
            raise AdapterNotFound(
                f"routes.{route}.adapter: no adapter named {adapter!r} (available: {known})"
            )
        factory = _load(plugins[adapter], f"routes.{route}.adapter")
    built = factory(route, options)
    if not isinstance(built, Adapter):
        raise AdapterContractError(
            f"routes.{route}.adapter: the {adapter!r} factory returned a "
            f"{type(built).__name__}, which has no async send() and aclose()"
        )
    return built


def check_routes(settings: Settings, routes: Sequence[str] | None = None) -> None:
    """Build and close the adapter of each route once, before any worker process starts.

    A wrong adapter name or option is then refused up front with a ConfigError, instead of
    crashing every worker process as it starts. Not for use inside a running event loop.
    """

    async def build_and_close() -> None:
        for name in routes or list(settings.routes):
            limits = settings.route(name)
            await create_adapter(name, limits.adapter, limits.options).aclose()

    asyncio.run(build_and_close())


def parse_options(model: type[OptionsT], route: str, options: Mapping[str, Any]) -> OptionsT:
    """Validate a route's adapter options, naming the route and key in the error."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        message = describe_errors(exc, prefix=f"routes.{route}.options", model=model)
        raise ConfigError(message) from None
