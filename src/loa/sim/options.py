"""Simulator options from a model instance or a mapping, a wrong key a ConfigError."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from loa.errors import ConfigError
from loa.settings import describe_errors

ModelT = TypeVar("ModelT", bound=BaseModel)


def load_options(
    model: type[ModelT], value: ModelT | Mapping[str, Any] | None, what: str
) -> ModelT:
    """`value` validated as `model`; errors read "<what> simulator options: <key>: ..."."""
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(dict(value or {}))
    except ValidationError as exc:
        message = describe_errors(exc, model=model)
        # from None: the pydantic traceback says nothing the message does not
        raise ConfigError(f"{what} simulator options: {message}") from None
