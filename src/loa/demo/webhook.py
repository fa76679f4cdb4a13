"""The demo's API in a thread of its own: where the Zalo simulator's citizens send their replies.

Only the second act needs it: a Zalo reply reaches loa as Zalo sends it, a signed webhook to
`POST /api/v1/webhooks/zalo-zns`. The route's secret is given to this API alone; the settings
file the demo writes for later commands does not hold it.
"""

from __future__ import annotations

import threading
import time

import uvicorn

from loa.api import create_app
from loa.demo.country import ZALO_ROUTE
from loa.demo.simulators import DemoError
from loa.engine.connection import connect
from loa.engine.embedded import free_port
from loa.settings import Settings

WEBHOOK_SECRET = "demo-zalo-oa-secret-key"  # the simulated official account's secret
START_TIMEOUT = 30.0


def webhook_url(port: int) -> str:
    """Where the Zalo route's webhook listens on `port`."""
    return f"http://127.0.0.1:{port}/api/v1/webhooks/{ZALO_ROUTE}"


class WebhookServer:
    """loa's API on loopback, serving the Zalo route's webhook while the second act runs."""

    def __init__(self, settings: Settings, redis_url: str, port: int | None = None) -> None:
        data = settings.model_dump(mode="python")
        data["api"] = {**data["api"], "webhook_secrets": {ZALO_ROUTE: WEBHOOK_SECRET}}
        self.settings = Settings.model_validate(data)
        self.port = port or free_port()
        app = create_app(self.settings, lambda: connect(redis_url))
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="demo-webhook", daemon=True)

    @property
    def url(self) -> str:
        """The Zalo route's webhook."""
        return webhook_url(self.port)

    def start(self) -> None:
        """Serve; DemoError when it does not listen within START_TIMEOUT seconds."""
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise DemoError(f"the demo's webhook API did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(10)
