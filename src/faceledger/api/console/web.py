"""The console's plumbing: the signed-in actor from the session cookie, CSRF checks on every state change,
security headers, and page rendering (Jinja2, autoescaped: a stored name or metadata is text, never markup)."""

from __future__ import annotations

import functools
import hmac
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from starlette.datastructures import FormData, UploadFile

from faceledger.access.sessions import SignedIn
from faceledger.api.deps import get_faceledger, get_pool, in_thread
from faceledger.api.errors import status_of
from faceledger.errors import FaceledgerError, Forbidden, PayloadTooLarge, Unauthorized
from faceledger.service import Actor, Faceledger

HERE = Path(__file__).parent
COOKIE = "fl_console"
CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob: mediastream:; style-src 'self'; "
       "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
       "object-src 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-store",
                    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()"}
FORM_LIMIT = 64 * 1024 * 1024  # a console form with images: each image within the image limit, a few of them

templates = Jinja2Templates(env=Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True))


class Console:
    """One console request: the service, its caller and session, and how to answer."""

    def __init__(self, request: Request, actor: Actor | None = None, signed: SignedIn | None = None) -> None:
        self.request = request
        self.faceledger: Faceledger = get_faceledger(request)
        self.actor = actor
        self.signed = signed
        self._form: FormData | None = None

    @property
    def who(self) -> dict:
        return {"request_id": getattr(self.request.state, "request_id", None),
                "client": "console" + (f" ({self.request.client.host})" if self.request.client else "")}

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A service call in a worker thread (database work)."""
        return await in_thread(fn, *args, **kwargs)

    async def infer(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A service call in the inference pool (models)."""
        return await get_pool(self.request).run(functools.partial(fn, *args, **kwargs))

    async def form(self) -> FormData:
        if self._form is None:
            from faceledger.api.inputs import budget_of

            budget_of(self.request).allow(FORM_LIMIT)
            self._form = await self.request.form(max_files=20, max_fields=50)
        return self._form

    async def field(self, name: str, default: str = "") -> str:
        value = (await self.form()).get(name)
        return value.strip() if isinstance(value, str) else default

    async def files(self, name: str) -> list[bytes]:
        """The uploaded files of a field (empty file inputs left out), each within the image limit."""
        limit = self.faceledger.settings.max_image_bytes
        out = []
        for f in (await self.form()).getlist(name):
            if isinstance(f, UploadFile):
                data = await f.read(limit + 1)
                if len(data) > limit:
                    raise PayloadTooLarge(f"an image is larger than {limit} bytes")
                if data:
                    out.append(data)
        return out

    async def check_csrf(self) -> None:
        """Refuse (FORBIDDEN, audited) a state change without this session's CSRF token."""
        given = self.request.headers.get("x-csrf-token") or await self.field("csrf")
        if not (self.signed and given and hmac.compare_digest(given.encode(), self.signed.csrf.encode())):
            exc = Forbidden("this form has expired or did not come from the console (CSRF token missing or wrong): "
                            "reload the page and try again")
            await self.call(self.faceledger.refuse, "console.csrf", self.actor, exc)
            raise exc

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.update(request=self.request, actor=self.actor, csrf=self.signed.csrf if self.signed else "",
                       nav=NAV, admin=bool(self.actor and self.actor.has("admin")))
        return secure(templates.TemplateResponse(self.request, template, context, status_code=status))


NAV = [("Overview", "/console/"), ("Collections", "/console/collections"), ("Try it", "/console/try"),
       ("Review", "/console/reviews"), ("Keys", "/console/keys"), ("Audit", "/console/audit"),
       ("Report", "/console/report"), ("Streams", "/console/streams")]


def secure(response: Response) -> Response:
    for k, v in SECURITY_HEADERS.items():
        response.headers[k] = v
    return response


def redirect(url: str) -> Response:
    return secure(RedirectResponse(url, status_code=303))


def page(handler: Callable[..., Awaitable[Response]]):
    """A console page: the caller signed in (else to the sign-in page), refusals shown as an error page with the
    HTTP status of their code, and POSTs checked for the CSRF token first."""
    async def wrapper(request: Request, **kwargs: Any) -> Response:
        console = Console(request)
        try:
            console.actor, console.signed = await in_thread(
                console.faceledger.session_actor, request.cookies.get(COOKIE), **console.who)
        except Unauthorized:
            return redirect("/console/sign-in")
        try:
            if request.method == "POST":
                await console.check_csrf()
            return await handler(console, **kwargs)
        except FaceledgerError as exc:
            # a refusal of the page itself (a bad form) is recorded too; the service's own are recorded already
            await in_thread(console.faceledger.refuse, f"console.{handler.__name__}", console.actor, exc)
            return console.render("error.html", status=status_of(exc.code), error=exc)

    # FastAPI reads the route's parameters from this signature: the request, then the handler's path parameters
    sig = inspect.signature(handler)
    first = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)
    wrapper.__signature__ = sig.replace(parameters=[first, *list(sig.parameters.values())[1:]])
    wrapper.__name__, wrapper.__doc__ = handler.__name__, handler.__doc__
    return wrapper


def same_origin(request: Request) -> bool:
    """Whether a form came from this site (the browser's Sec-Fetch-Site or Origin; tools that send neither pass)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.url.netloc}"


def set_session(response: Response, request: Request, cookie: str, max_age: int) -> Response:
    response.set_cookie(COOKIE, cookie, max_age=max_age, path="/console", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response
