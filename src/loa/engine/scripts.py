"""Every Lua script of loa, one table per package: loaded from its lua/ folder, run by SHA.

A package keeps its scripts in `lua/*.lua` beside its modules; `scripts(redis, package)` is
the table of all of them by name ("take" for take.lua). A folder's `common.lua`, when it has
one, holds keys and helpers the other scripts of that folder share: it is put in front of each
of them and is no script of its own.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

from loa.engine.connection import RedisClient, text

COMMON = "common"
ScriptArg = str | int | float | bytes


@functools.cache
def sources(package: str) -> Mapping[str, str]:
    """The text of every script of `package`'s lua/ folder, by name without `.lua`."""
    folder = resources.files(package).joinpath("lua")
    found = {
        entry.name.removesuffix(".lua"): entry.read_text()
        for entry in folder.iterdir()
        if entry.name.endswith(".lua")
    }
    common = found.pop(COMMON, None)
    if common is None:
        return found
    return {name: common + "\n" + body for name, body in found.items()}


class Script:
    """One script on one client: one call (loaded on first use), or many in one round trip."""

    def __init__(self, redis: RedisClient, source: str) -> None:
        self.redis = redis
        self.source = source
        self._call = redis.register_script(source)
        self.sha = ""

    async def __call__(self, keys: Sequence[str] = (), args: Sequence[ScriptArg] = ()) -> Any:
        """Run it once; a server that forgot the script (a restart) is given it again."""
        return await self._call(keys=list(keys), args=list(args))

    async def run_many(
        self, calls: Sequence[tuple[Sequence[str], Sequence[ScriptArg]]]
    ) -> list[Any]:
        """Run it once per (keys, args) call in one pipelined round trip; the replies in order.

        Each call is atomic, the round trip is not. Retrying after NOSCRIPT is safe: a server
        without the script ran none of the calls.
        """
        if not self.sha:
            self.sha = text(await self.redis.script_load(self.source))
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(self.sha, len(keys), *keys, *args)
            try:
                return list(await pipe.execute())
            except NoScriptError:  # the server restarted and forgot its scripts
                if attempt == 2:
                    raise
                self.sha = text(await self.redis.script_load(self.source))
        raise AssertionError("unreachable")


class Scripts:
    """Every script of one package on one client, by name."""

    def __init__(self, redis: RedisClient, package: str) -> None:
        self.package = package
        self._table = {name: Script(redis, body) for name, body in sources(package).items()}

    def __getitem__(self, name: str) -> Script:
        try:
            return self._table[name]
        except KeyError:
            raise KeyError(f"{self.package} has no script {name}.lua") from None


def scripts(redis: RedisClient, package: str = "loa.engine") -> Scripts:
    """The table of `package`'s scripts on `redis`."""
    return Scripts(redis, package)
