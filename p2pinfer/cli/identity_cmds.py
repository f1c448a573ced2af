"""`p2pinfer init` and `p2pinfer id`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from p2pinfer import identity
from p2pinfer.config import resolve_home

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Node state directory (default: $P2PINFER_HOME, else the platform data dir).",
    ),
]


def init(home: HomeOption = None) -> None:
    """Create the node's Ed25519 key (mode 0600) and print its PeerID."""
    h = resolve_home(home)
    ident = identity.create(h)
    typer.echo(f"created {identity.key_path(h)}")
    typer.echo(ident.peer_id)


def show_id(home: HomeOption = None) -> None:
    """Print the node's PeerID."""
    typer.echo(identity.load(resolve_home(home)).peer_id)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("id")(show_id)
