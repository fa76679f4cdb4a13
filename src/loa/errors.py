"""The one error tree of loa: every error the product raises on purpose is a LoaError."""

from __future__ import annotations


class LoaError(Exception):
    """Base of every error loa raises on purpose."""


class ConfigError(LoaError, ValueError):
    """A settings file, environment variable or option is wrong; the message names the key."""


class EnvelopeError(LoaError, ValueError):
    """A queue entry cannot be decoded: wrong version, truncated or not an envelope."""


class QueueError(LoaError):
    """A queue operation failed in a way the caller must know about."""


class QueueFull(QueueError):
    """A shard stayed at its maximum depth for longer than the producer was willing to wait."""


class EmbeddedServerError(LoaError, RuntimeError):
    """The embedded Redis-protocol server could not be found, started or stopped."""


class AdapterError(LoaError):
    """Base of errors raised by delivery adapters."""


class AdapterNotFound(ConfigError, LookupError):
    """No adapter is registered under the configured name."""


class AdapterContractError(AdapterError):
    """An adapter broke its contract (for example returned the wrong number of results)."""


class AdapterTimeout(AdapterError, TimeoutError):
    """An adapter call took longer than its route allows."""
