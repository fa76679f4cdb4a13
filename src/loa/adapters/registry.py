"""Finding adapters by name: the built-in ones and those registered under `loa.adapters`."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from loa.adapters.base import Adapter, AdapterFactory
from loa.errors import AdapterNotFound, ConfigError
from loa.settings import describe_errors

ENTRY_POINT_GROUP = "loa.adapters"
OptionsT = TypeVar("OptionsT", bound=BaseModel)


def _builtins() -> dict[str, AdapterFactory]:
    from loa.adapters.console import ConsoleAdapter
    from loa.adapters.file import FileAdapter
    from loa.adapters.null import NullAdapter

    return {
        "null": NullAdapter.create,
        "file": FileAdapter.create,
        "console": ConsoleAdapter.create,
    }


def available() -> dict[str, AdapterFactory]:
    """Every adapter factory by name; a plug-in may not shadow a built-in."""
    factories: dict[str, AdapterFactory] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        factories[point.name] = point.load()
    factories.update(_builtins())
    return factories


def create_adapter(route: str, adapter: str, options: Mapping[str, Any]) -> Adapter:
    """Build the adapter named `adapter` for `route`; unknown names and bad options are refused."""
    factories = available()
    if adapter not in factories:
        known = ", ".join(sorted(factories))
        raise AdapterNotFound(
            f"routes.{route}.adapter: no adapter named {adapter!r} (available: {known})"
        )
    return factories[adapter](route, options)


def parse_options(model: type[OptionsT], route: str, options: Mapping[str, Any]) -> OptionsT:
    """Validate a route's adapter options, naming the route and key in the error."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        raise ConfigError(f"routes.{route}.options: {describe_errors(exc)}") from None
