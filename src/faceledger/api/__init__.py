"""The HTTP API: a thin FastAPI front end over the operations layer (``faceledger.service.Faceledger``)."""
