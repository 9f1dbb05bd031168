"""faceledger: an open, self-hosted, accountable face recognition service."""

__version__ = "0.1.0"
