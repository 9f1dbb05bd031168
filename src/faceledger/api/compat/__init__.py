"""Compatible front ends: Rekognition's JSON protocol (``rekognition``) and CompreFace's REST API (``compreface``).

Each maps its clients' requests onto the operations layer and the answers (and refusals) back to the shapes
those clients parse; the gallery, guardrails and audit log are the ones every other front end uses.
"""
