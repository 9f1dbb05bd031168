"""The ``faceledger`` command line: a front end of the operations layer (``faceledger.service``).

Commands map their arguments to ``Faceledger`` calls as the local operator and print the
results as JSON; the service checks scopes and guardrails, decides and audits. Evaluation
commands call ``faceledger.evaluation`` directly.

    common      console, JSON output, errors (exit 2), settings, the service per command
    engine      detect, compare, models, serve
    gallery     collections, subjects, enroll, enroll-dir, identify, verify, index
    video       watch (files, live streams), webhooks
    admin       keys, tenants, templates, retention, audit
    evaluation  eval lfw / lfw-identify / calibrate, report
"""

from __future__ import annotations

import typer

from faceledger.cli import admin, engine, evaluation, gallery, video

app = typer.Typer(help="faceledger: accountable face recognition.", no_args_is_help=True, pretty_exceptions_enable=False)
for module in (engine, gallery, video, admin, evaluation):
    module.register(app)

__all__ = ["app"]
