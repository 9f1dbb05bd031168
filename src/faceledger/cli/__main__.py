"""``python -m faceledger.cli``."""

from faceledger.cli import app

app()
