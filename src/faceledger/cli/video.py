"""Cameras and video at the command line: watch a file or live stream, webhook deliveries and dead letters."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from faceledger.cli.common import TenantOpt, console, local_actor, open_service, out


def register(app: typer.Typer) -> None:
    app.command()(watch)
    hooks = typer.Typer(help="Webhook deliveries of streams: list them, replay dead letters.", no_args_is_help=True)
    hooks.command("list")(webhooks_list)
    hooks.command("replay")(webhooks_replay)
    app.add_typer(hooks, name="webhooks")


def watch(
    source: Annotated[str, typer.Argument(help="A video file (MP4, MKV, AVI, MOV) or a live URL (rtsp://, http://).")],
    collection: Annotated[Optional[str], typer.Option(help="The collection searched (identify mode).")] = None,
    purpose: Annotated[str, typer.Option(help="Why these faces are watched (audited with every search).")] =
    "command-line watch",
    fps: Annotated[float, typer.Option(help="Frames sampled per second.")] = 10.0,
    mode: Annotated[str, typer.Option(help="identify, detect-only or count-only.")] = "identify",
    webhook: Annotated[Optional[str], typer.Option(help="POST each event here, signed (Standard Webhooks).")] = None,
    tenant: TenantOpt = "default",
) -> None:
    """Watch a video file or live stream: faces tracked, each person-track identified once; events printed as JSON
    lines on stdout, live counts on stderr. Ctrl-C stops a live stream."""
    from rich.live import Live

    from faceledger.service.streams import StreamService

    with open_service() as service:
        service.startup()
        streams = StreamService(service)
        actor = local_actor(tenant)
        counts = {"events": 0, "identified": 0, "unknown": 0}

        def printed(events: list[dict]) -> None:
            for e in events:
                counts["events"] += 1
                counts["identified"] += e["type"] == "track.identified"
                counts["unknown"] += e["type"] == "track.unknown"
                print(__import__("json").dumps(e), flush=True)

        runner = streams.watch(actor, source, purpose=purpose, collection=collection, mode=mode, fps=fps,
                               webhook_url=webhook, on_events=printed)
        if streams.sender is not None:
            streams.sender.start()
        started = time.monotonic()
        runner.thread.start()
        try:
            with Live(console=console, refresh_per_second=4, transient=True) as live:
                while runner.thread.is_alive():
                    s = runner.status()
                    elapsed = time.monotonic() - started
                    live.update(f"[bold]{s['state']}[/bold]  {s['frames_sampled']} frames "
                                f"({s['frames_sampled'] / max(elapsed, 1e-9):.1f}/s)  tracks {s['tracks']} "
                                f"(live {s['live_tracks']})  identified {counts['identified']}  "
                                f"unknown {counts['unknown']}  reconnects {s['reconnects']}")
                    runner.thread.join(0.25)
        except KeyboardInterrupt:
            runner.source.stop()
            runner.thread.join(15)
        if webhook and streams.sender is not None:  # give pending deliveries a moment before leaving
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and streams.store.deliveries(
                    stream_id=runner.info.stream_id, state="pending"):
                time.sleep(0.2)
        streams.close()
        info = streams.store.get(None, runner.info.stream_id)
        console.print(f"{info.state}: {info.status.get('tracks', 0)} tracks, {counts['identified']} identified, "
                      f"{counts['unknown']} unknown, stream {info.stream_id}")
        if info.state == "failed":
            raise typer.Exit(2)


def webhooks_list(
    stream: Annotated[Optional[str], typer.Option(help="Only this stream's deliveries.")] = None,
    state: Annotated[Optional[str], typer.Option(help="pending, delivered or dead.")] = None,
    tenant: TenantOpt = "default",
) -> None:
    """Webhook deliveries (dead letters with --state dead)."""
    from faceledger.service.streams import StreamService

    with open_service() as service:
        out(StreamService(service, deliver_webhooks=False).deliveries(local_actor(tenant), stream_id=stream,
                                                                      state=state))


def webhooks_replay(
    stream: Annotated[Optional[str], typer.Option(help="Only this stream's dead letters.")] = None,
    tenant: TenantOpt = "default",
) -> None:
    """Send dead letters again: they become pending, delivered by the running server (or the next watch)."""
    from faceledger.service.streams import StreamService

    with open_service() as service:
        out({"replayed": StreamService(service, deliver_webhooks=False).replay(local_actor(tenant), stream_id=stream)})
