"""`loa sim ...`: simulated carriers and providers for demos, tests and benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from loa.settings import read_toml

app = typer.Typer(
    help="Simulated providers that speak the real protocols (loopback by default).",
    no_args_is_help=True,
)

HostOption = Annotated[str, typer.Option("--host", help="Address to listen on.")]
OptionsFile = Annotated[
    Path | None, typer.Option("--options", "-o", help="TOML file of simulator options.")
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of every random fault.")]
LatencyOption = Annotated[float, typer.Option("--latency", min=0, help="Seconds per answer.")]
ErrorOption = Annotated[
    float, typer.Option("--error-ratio", min=0, max=1, help="Share answered with an error.")
]
TpsOption = Annotated[float, typer.Option("--tps", min=0, help="Cap per second; 0: none.")]


def _options(path: Path | None, **flags: Any) -> dict[str, Any]:
    """Options from the file, with the command-line flags that were given on top."""
    options: dict[str, Any] = read_toml(path, "simulator options") if path else {}
    options.update({key: value for key, value in flags.items() if value})
    return options


@app.command("http")
def http(
    host: HostOption = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="0 picks a free port.")] = 8090,
    options_file: OptionsFile = None,
    seed: SeedOption = 0,
    latency: LatencyOption = 0.0,
    error_ratio: ErrorOption = 0.0,
    tps: TpsOption = 0.0,
    no_zalo_ratio: Annotated[
        float, typer.Option("--no-zalo-ratio", min=0, max=1, help="Phones without Zalo.")
    ] = 0.0,
) -> None:
    """Zalo-ZNS-, FCM- and SMS-gateway-shaped endpoints; GET /_sim/stats tells what came in."""
    from loa.sim.http import HttpSimulator, run_http_simulator

    options = _options(
        options_file,
        seed=seed,
        latency=latency,
        error_ratio=error_ratio,
        tps=tps,
        no_zalo_ratio=no_zalo_ratio,
    )

    def ready(sim: HttpSimulator) -> None:
        typer.echo(f"http simulator on {sim.url} (stats: {sim.url}/_sim/stats)")

    run_http_simulator(host, port, options, on_ready=ready)


@app.command("smsc")
def smsc(
    host: HostOption = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="0 picks a free port.")] = 2775,
    options_file: Annotated[
        Path | None,
        typer.Option(
            "--options",
            "-o",
            help="TOML file of options; a [carriers.NAME] table with a `port` each runs "
            "one simulated SMSC per carrier.",
        ),
    ] = None,
    seed: SeedOption = 0,
    latency: LatencyOption = 0.0,
    error_ratio: ErrorOption = 0.0,
    tps: TpsOption = 0.0,
    receipt_delay: Annotated[
        float, typer.Option("--receipt-delay", min=0, help="Seconds before each receipt.")
    ] = 0.0,
    undelivered_ratio: Annotated[
        float, typer.Option("--undelivered-ratio", min=0, max=1, help="Receipts saying UNDELIV.")
    ] = 0.0,
    stats_interval: Annotated[
        float, typer.Option("--stats-interval", min=0, help="Seconds between stats lines.")
    ] = 10.0,
) -> None:
    """An SMPP 3.4 SMSC: binds, a TPS cap, receipts, replies, faults; JSON stats lines on stdout."""
    from loa.sim.smsc import run_smsc_simulators

    options = _options(
        options_file,
        seed=seed,
        latency=latency,
        error_ratio=error_ratio,
        tps=tps,
        receipt_delay=receipt_delay,
        undelivered_ratio=undelivered_ratio,
    )
    carriers: dict[str, Any] = options.pop("carriers", {})
    if not carriers:
        run_smsc_simulators([("smsc", port, options)], host, stats_interval)
        return
    simulators = []
    for name, table in carriers.items():
        own = dict(table)
        simulators.append((name, int(own.pop("port", 0)), {**options, **own}))
    run_smsc_simulators(simulators, host, stats_interval)
