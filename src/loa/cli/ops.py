"""`loa backup` and `loa restore`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from loa.cli.common import ConfigOption, DataDirOption, JsonOption, print_json
from loa.errors import LoaError
from loa.ops.archive import Manifest, describe
from loa.settings import Settings


def _settings(config: Path | None, data_dir: Path | None, **values: Any) -> Settings:
    overrides: dict[str, Any] = {key: value for key, value in values.items() if value is not None}
    if data_dir:
        overrides["data_dir"] = str(data_dir)
    return Settings.load(config, overrides=overrides)


def backup(
    to: Annotated[
        Path | None,
        typer.Option(
            "--to",
            help="A directory (a new archive is named there) or a .tar / .tar.gz file. "
            "Default: backup.dir, else the data directory's backups/.",
        ),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Redis or redis+cluster:// URL to snapshot (every primary of a cluster). "
            "Default: redis_url, else the embedded server.",
        ),
    ] = None,
    no_verify: Annotated[
        bool,
        typer.Option("--no-verify", help="Skip loading each snapshot in a scratch server."),
    ] = False,
    keep: Annotated[
        int | None,
        typer.Option(
            "--keep", min=1, help="Then delete all but this many newest archives in the directory."
        ),
    ] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """An online, consistent snapshot of loa's state and data files, in one archive."""
    from loa.ops.backup import create_backup, prune

    settings = _settings(config, data_dir)
    if no_verify:
        settings = settings.model_copy(
            update={"backup": settings.backup.model_copy(update={"verify": False})}
        )
    made = create_backup(settings, to, source)
    if keep is not None:
        prune(made.path.parent, keep)
    if json_output:
        summary = {"archive": str(made.path), "seconds": round(made.seconds, 3)}
        print_json({**summary, **describe(made.manifest)})
        return
    size = made.path.stat().st_size
    typer.echo(f"backup written: {made.path} ({_mib(size)}, {made.seconds:.1f} s)")
    _print_summary(made.manifest)


def restore(
    archive: Annotated[Path, typer.Argument(help="The archive `loa backup` wrote.")],
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace the data of a non-empty data directory (or namespace)."
        ),
    ] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Only check the archive against its manifest.")
    ] = False,
    redis: Annotated[
        str | None,
        typer.Option("--redis", help="Restore into this Redis or Cluster, not the embedded one."),
    ] = None,
    serve: Annotated[
        bool, typer.Option("--serve", help="Then run `loa server` on what was restored.")
    ] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Check an archive against its manifest and restore it into an empty data directory."""
    from loa.ops.restore import check_archive
    from loa.ops.restore import restore as restore_archive

    if check:
        manifest = check_archive(archive)
        if json_output:
            print_json({"archive": str(archive), "intact": True, **describe(manifest)})
            return
        typer.echo(f"{archive}: intact, every member matches its manifest")
        _print_summary(manifest)
        return
    settings = _settings(config, data_dir, redis_url=redis)
    done = restore_archive(archive, settings, force=force)
    if json_output:
        restored = {"data_dir": str(done.data_dir), "keys": done.keys, "files": done.files}
        print_json({"archive": str(archive), "restored": restored, **describe(done.manifest)})
        return
    where = "the configured Redis" if settings.redis_url else "the embedded server"
    typer.echo(
        f"restored {archive} into {done.data_dir} and {where}: "
        f"{done.keys:,} keys, {done.files:,} files"
    )
    _print_summary(done.manifest)
    if serve:
        from loa.api.server import run_server

        if not settings.routes:
            raise LoaError("no routes configured: add [routes.NAME] tables to the settings file")
        raise typer.Exit(run_server(settings, settings.api.host, settings.api.port))
    start = f"loa server --data-dir {done.data_dir}"
    typer.echo(f"start it: {start}{' --config ...' if config else ''}")


def _print_summary(manifest: Manifest) -> None:
    typer.echo(
        f"  made {manifest.created} by loa {manifest.loa_version} from the "
        f"{manifest.source} server ({', '.join(manifest.nodes)}), namespace {manifest.namespace!r}"
    )
    files = [entry for entry in manifest.files if entry.name.startswith("data/")]
    typer.echo(f"  data files: {len(files):,} ({_mib(sum(entry.size for entry in files))})")
    contents = manifest.contents
    if contents is None:
        typer.echo("  contents: not counted (made with --no-verify)")
        return
    typer.echo(
        f"  redis: {contents.keys:,} keys, {contents.namespace_keys:,} of them loa's; "
        f"{len(contents.campaigns):,} campaigns; {contents.batches_waiting:,} batches waiting"
    )
    typer.echo(
        f"  in flight at the snapshot: {contents.batches_in_flight:,} batches holding "
        f"{contents.in_flight:,} messages without a recorded result. After a restore they "
        "are sent again at most once; so is whatever was sent after the snapshot."
    )


def _mib(size: int) -> str:
    return f"{size / (1 << 20):,.1f} MiB"




def register(app: typer.Typer) -> None:
    """Add `loa backup` and `loa restore` to the `loa` command."""
    app.command("backup")(backup)
    app.command("restore")(restore)
