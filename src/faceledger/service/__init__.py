"""The operations layer: one ``Faceledger`` object under every front end, taking an ``Actor`` per call."""

from faceledger.service.actor import Actor
from faceledger.service.faceledger import Faceledger

__all__ = ["Actor", "Faceledger"]
