"""`python -m fleetstream`: the same as the `fleetstream` command."""

from fleetstream.cli import app

app()
