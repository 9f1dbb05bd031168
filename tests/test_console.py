"""The web console, end to end in a real browser (Playwright driving Debian's chromium): sign in, create a collection,
enrol two people from real photos, identify one (boxes and decision drawn), erase one (receipt shown), verify the
audit chain; axe-core finds no serious or critical accessibility violation on any page; keyboard-only enrolment and
erasure; no request leaves the host. And the security rules: cookie flags, CSRF, tenant isolation, escaped names."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import os
import re
import tarfile
import urllib.request
from pathlib import Path

import httpx
import pytest

from conftest import REQUIRE_DATA, ROOT
from faceledger.api.app import create_app
from faceledger.service import Actor, Faceledger
from inprocess import served
from realserver import chromium

AXE_VERSION = "4.14.1"
AXE_TARBALL = f"https://registry.npmjs.org/axe-core/-/axe-core-{AXE_VERSION}.tgz"
AXE_SHA512 = "FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
ARTIFACTS = Path(os.environ.get("FACELEDGER_ARTIFACTS", ROOT / "reports" / "tmp")) / "console"
XSS = "<script>alert('owned')</script>"


def _missing(message: str):
    if REQUIRE_DATA:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core from the npm registry (checked against its published SHA-512), cached in .cache/."""
    path = ROOT / ".cache" / f"axe-core-{AXE_VERSION}" / "axe.min.js"
    if not path.is_file():
        try:
            data = urllib.request.urlopen(AXE_TARBALL, timeout=60).read()
        except OSError as exc:
            _missing(f"axe-core could not be fetched from the npm registry: {exc}")
        if base64.b64encode(hashlib.sha512(data).digest()).decode() != AXE_SHA512:
            pytest.fail("the axe-core tarball does not match its published SHA-512")
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            script = tar.extractfile("package/axe.min.js").read()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(script)
    return path.read_text()


@pytest.fixture(scope="module")
def site(settings, engine, tmp_path_factory):
    home = tmp_path_factory.mktemp("console")
    fl = Faceledger(settings.model_copy(update={"home": home}), engine)
    keys = {"acme": fl.create_key(Actor.local(), "acme", ["admin"], "security office, console")[0],
            "globex": fl.create_key(Actor.local(), "globex", ["admin"], "globex oversight")[0]}
    with served(create_app(faceledger=fl)) as url:
        yield {"url": url, "fl": fl, "keys": keys}


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    path = chromium()
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu",
                                                          "--use-fake-ui-for-media-stream",
                                                          "--use-fake-device-for-media-stream"])
        yield b
        b.close()


class Visit:
    """A browser page that records every request, runs axe-core on each page it checks and saves screenshots."""

    def __init__(self, browser, site, axe: str) -> None:
        self.context = browser.new_context()
        self.context.add_init_script(axe)  # injected by the browser itself: the page's CSP allows no inline script
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.site, self.axe = site, axe
        self.checked: dict[str, list] = {}
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def go(self, path: str) -> None:
        self.page.goto(self.site["url"] + path)

    def check(self, name: str) -> None:
        """Screenshot, and axe-core's serious and critical violations of this page (none expected)."""
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        violations = self.page.evaluate("""async () => {
            const r = await axe.run(document, {resultTypes: ['violations']});
            return r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
                               .map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' '))}));
        }""")
        self.checked[name] = violations

    def sign_in(self, tenant: str = "acme") -> None:
        self.go("/console/")
        assert self.page.url.endswith("/console/sign-in")
        self.check("sign-in")
        self.page.fill("#api_key", self.site["keys"][tenant])
        self.page.click("button[type=submit]")
        self.page.wait_for_url(self.site["url"] + "/console/")


def test_an_operator_runs_the_service_from_the_browser(site, browser, axe_source, people):
    v = Visit(browser, site, axe_source)
    fl = site["fl"]
    bbt = people / "bbt"
    v.sign_in()
    v.check("overview-empty")

    # a collection
    v.page.click("nav >> text=Collections")
    v.check("collections")
    v.page.fill("#name", "staff")
    v.page.click("button:text('Create collection')")
    v.page.wait_for_url("**/console/collections/staff")
    v.check("collection-new")

    # two people, from real photos; one display name is an attempted script
    for subject, name, photo in [("amy", "Amy Farrah Fowler", bbt / "amy" / "amy1.png"),
                                 ("sheldon", XSS, bbt / "sheldon" / "sheldon1.png")]:
        v.go("/console/collections/staff")
        v.page.fill("#subject_id", subject)
        v.page.fill("#display_name", name)
        v.page.set_input_files("#images", str(photo))
        v.page.fill("#consent_reference", f"form {subject}")
        v.page.click("form[action$='/subjects'] button[type=submit]")
        v.page.wait_for_url(f"**/console/collections/staff/subjects/{subject}")
    assert XSS in v.page.inner_text("dl")  # shown as text
    assert v.dialogs == []  # and never run
    v.check("subject")
    v.go("/console/collections/staff")
    assert v.page.locator("#subjects-table tbody tr").count() == 2
    v.check("collection-two")

    # identify: the boxes, the decision and what it means
    v.page.click("nav >> text=Try it")
    v.check("try")
    v.page.set_input_files("#image", str(bbt / "amy" / "amy3.png"))
    v.page.click("button:text('Run')")
    v.page.wait_for_selector("#h-result")
    assert v.page.locator("svg.photo rect.box").count() == 1
    assert v.page.locator("svg.photo circle.point").count() == 5
    assert v.page.locator("h3 .decision").inner_text() == "match"
    assert "amy" in v.page.locator("h3").inner_text()
    v.check("identified")

    # erase one, with the receipt
    v.go("/console/collections/staff/subjects/sheldon")
    v.page.click("button:text('Erase sheldon')")
    v.page.wait_for_selector("text=Erasure receipt")
    receipt = v.page.inner_text("main")
    assert "Erased subject sheldon: 1 faces left the database" in receipt and "Audit record" in receipt
    v.check("receipt")

    # the audit chain, checked from the browser
    v.page.click("nav >> text=Audit")
    v.check("audit")
    v.page.click("button:text('Verify the chain')")
    assert "The chain is intact" in v.page.inner_text("main")
    v.check("audit-verified")
    for name, path in [("keys", "/console/keys"), ("reviews", "/console/reviews"), ("report", "/console/report"),
                       ("streams", "/console/streams"), ("overview", "/console/")]:
        v.go(path)
        v.check(name)

    assert {k: x for k, x in v.checked.items() if x} == {}, "axe-core: serious or critical violations"
    assert len(v.checked) >= 15
    outside = [u for u in v.requests if not u.startswith(site["url"]) and not u.startswith(("data:", "blob:"))]
    assert outside == [], outside
    # the console's operations are the service's, recorded with the key's purpose and the console as client
    records = [r for r in fl.audit.query(limit=10000) if r["tenant"] == "acme"]
    ops = [r["operation"] for r in records if r["outcome"] == "ok"]
    for op in ("console.sign_in", "collection.create", "enroll", "identify", "erase", "audit.verify"):
        assert op in ops, op
    enrol = [r for r in records if r["operation"] == "enroll"]
    assert all(r["purpose"] == "security office, console" and r["client"].startswith("console") for r in enrol)
    v.context.close()


def test_keyboard_only_enrolment_and_erasure(site, browser, axe_source, people):
    """Tab and Enter only (the file is handed to the focused file input: headless browsers have no file dialog)."""
    v = Visit(browser, site, axe_source)
    fl = site["fl"]
    fl.create_collection(Actor.local("acme"), "keyboard", require_consent=False)
    v.sign_in()
    v.go("/console/collections/keyboard")
    page = v.page

    def tab_to(selector: str, limit: int = 80) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate(f"document.activeElement === document.querySelector({selector!r})"):
                return
        raise AssertionError(f"Tab never reached {selector}")

    tab_to("#subject_id")
    page.keyboard.type("penny")
    tab_to("#images")
    page.locator("#images").set_input_files(str(people / "bbt" / "penny" / sorted(
        os.listdir(people / "bbt" / "penny"))[0]))
    tab_to("form[action$='/subjects'] button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/collections/keyboard/subjects/penny")
    tab_to("form[action$='/erase'] button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Erasure receipt")
    v.check("keyboard-receipt")
    assert v.checked["keyboard-receipt"] == []
    assert fl.list_subjects(Actor.local("acme"), "keyboard") == []
    v.context.close()


# ------------------------------------------------------------------ security, without a browser
def signed_in(site, tenant: str, **headers) -> tuple[httpx.Client, str]:
    http = httpx.Client(base_url=site["url"], follow_redirects=False, headers=headers)
    r = http.post("/console/sign-in", data={"api_key": site["keys"][tenant]})
    assert r.status_code == 303
    page = http.get("/console/collections")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    return http, csrf


def test_session_cookie_flags(site):
    r = httpx.post(site["url"] + "/console/sign-in", data={"api_key": site["keys"]["acme"]})
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP here; behind TLS (below) the cookie is Secure
    r = httpx.post(site["url"] + "/console/sign-in", data={"api_key": site["keys"]["acme"]},
                   headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in r.headers["set-cookie"]
    refused = httpx.post(site["url"] + "/console/sign-in", data={"api_key": "fl_nope_nope"})
    assert refused.status_code == 401 and "set-cookie" not in refused.headers
    page = httpx.get(site["url"] + "/console/sign-in")
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert page.headers["x-frame-options"] == "DENY"


def test_state_changes_need_the_csrf_token(site):
    fl = site["fl"]
    http, csrf = signed_in(site, "acme")
    before = len(fl.list_collections(Actor.local("acme")))
    r = http.post("/console/collections", data={"name": "forged"})
    assert r.status_code == 403 and "CSRF" in r.text
    r = http.post("/console/collections", data={"name": "forged", "csrf": "x" * 43})
    assert r.status_code == 403
    assert len(fl.list_collections(Actor.local("acme"))) == before
    assert fl.audit.query(limit=10000)[-1]["operation"] == "console.csrf"
    assert http.post("/console/collections", data={"name": "genuine", "csrf": csrf}).status_code == 303
    # sign-out ends the session; the cookie no longer works
    assert http.post("/console/sign-out", data={"csrf": csrf}).status_code == 303
    assert http.get("/console/collections").headers["location"].endswith("/console/sign-in")


def test_a_tenant_never_sees_another(site, people):
    fl = site["fl"]
    fl.create_collection(Actor.local("acme"), "acme-secret-collection", require_consent=False)
    fl.enroll(Actor.local("acme"), "acme-secret-collection", "acme-secret-person",
              [people / "bbt" / "amy" / "amy2.png"])
    http, csrf = signed_in(site, "globex")
    for path in ("/console/", "/console/collections", "/console/audit", "/console/keys", "/console/reviews",
                 "/console/streams", "/console/try"):
        r = http.get(path)
        assert r.status_code == 200 and "acme-secret" not in r.text and "security office" not in r.text, path
    assert http.get("/console/collections/acme-secret-collection").status_code == 404
    assert http.get("/console/collections/acme-secret-collection/subjects/acme-secret-person").status_code == 404
    r = http.post("/console/collections/acme-secret-collection/subjects/acme-secret-person/erase",
                  data={"csrf": csrf})
    assert r.status_code == 404
    assert fl.get_subject(Actor.local("acme"), "acme-secret-collection", "acme-secret-person").face_count == 1


def test_a_revoked_key_ends_its_sessions(site):
    fl = site["fl"]
    key, info = fl.create_key(Actor.local(), "acme", ["admin"], "temporary")
    site["keys"]["temporary"] = key
    http, _ = signed_in(site, "temporary")
    assert http.get("/console/collections").status_code == 200
    fl.revoke_key(Actor.local(), info["key_id"])
    assert http.get("/console/collections").headers["location"].endswith("/console/sign-in")


def until(page, condition: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` with page.evaluate (Playwright's wait_for_function evaluates strings with eval, which the
    console's CSP forbids)."""
    import time

    deadline = time.time() + timeout
    while not page.evaluate(condition):
        assert time.time() < deadline, f"never true: {condition}"
        time.sleep(0.1)


def test_webcam_capture_fills_the_enrolment_form(site, browser, axe_source):
    """Chromium's fake camera stands in for a webcam: the captured frame becomes a file of the enrolment form."""
    v = Visit(browser, site, axe_source)
    site["fl"].create_collection(Actor.local("acme"), "webcam", require_consent=False)
    v.context.grant_permissions(["camera"], origin=site["url"])
    v.sign_in()
    v.go("/console/collections/webcam")
    v.page.click("button:text('Use the webcam')")
    v.page.wait_for_selector("[data-webcam-capture]:not([hidden])")
    until(v.page, "document.querySelector('[data-webcam-video]').videoWidth > 0")
    v.page.click("button:text('Take the photo')")
    until(v.page, "document.getElementById('images').files.length === 1")
    assert v.page.evaluate("document.getElementById('images').files[0].type") == "image/jpeg"
    v.context.close()


def test_the_review_queue(site, people):
    """Under the tenant's human-review rule every identification waits for a person: the console lists it, a
    reviewer accepts a candidate (audited with a reference to the identification), and the queue empties."""
    fl = site["fl"]
    key, _ = fl.create_key(Actor.local(), "initech", ["admin"], "initech reviewers")
    site["keys"]["initech"] = key
    local = Actor.local("initech")
    fl.create_collection(local, "doors", require_consent=False)
    fl.enroll(local, "doors", "amy", [people / "bbt" / "amy" / "amy1.png"])
    fl.set_tenant_policy(Actor.local(), "initech", human_review=True)
    fl.identify(local, "doors", people / "bbt" / "amy" / "amy3.png")
    seq = fl.audit.query(limit=100000)[-1]["seq"]
    http, csrf = signed_in(site, "initech")
    page = http.get("/console/reviews")
    assert f"Identification #{seq}" in page.text and "amy" in page.text
    assert http.post(f"/console/reviews/{seq}", data={"verdict": "accept", "subject_id": "amy"}).status_code == 403
    r = http.post(f"/console/reviews/{seq}", data={"verdict": "accept", "subject_id": "amy", "csrf": csrf})
    assert r.status_code == 303
    verdict = fl.audit.query(limit=100000)[-1]
    assert (verdict["operation"], verdict["reference"], verdict["decision"], verdict["subject_ids"]) == (
        "review.decide", f"audit:{seq}", "accepted: amy", ["amy"])
    assert f"Identification #{seq}" not in http.get("/console/reviews").text
    again = http.post(f"/console/reviews/{seq}", data={"verdict": "reject", "csrf": csrf})
    assert again.status_code == 409  # decided once


def test_keys_audit_export_collection_deletion_and_expiry(site):
    fl = site["fl"]
    http, csrf = signed_in(site, "acme")
    r = http.post("/console/keys", data={"csrf": csrf, "scopes": ["identify", "detect"], "purpose": "lobby kiosk"})
    shown = re.search(r'id="new-key" readonly value="(fl_[^"]+)"', r.text).group(1)
    assert fl.authenticate(shown).purpose == "lobby kiosk"
    assert shown not in http.get("/console/keys").text  # shown once
    key_id = shown.split("_")[1]
    assert http.post(f"/console/keys/{key_id}/revoke", data={"csrf": csrf}).status_code == 303
    with pytest.raises(Exception):
        fl.authenticate(shown)

    http.post("/console/collections", data={"name": "short-lived", "csrf": csrf, "require_consent": "on"})
    wrong = http.post("/console/collections/short-lived/delete", data={"csrf": csrf, "confirm": "nope"})
    assert wrong.status_code == 422 and "short-lived" in [c.name for c in fl.list_collections(Actor.local("acme"))]
    gone = http.post("/console/collections/short-lived/delete", data={"csrf": csrf, "confirm": "short-lived"})
    assert gone.status_code == 200 and "Erasure receipt" in gone.text

    export = http.get("/console/audit/export?format=jsonl")
    assert export.status_code == 200 and "attachment" in export.headers["content-disposition"]
    lines = [json.loads(x) for x in export.text.splitlines()]
    assert lines and {x["tenant"] for x in lines} == {"acme"}
    assert any(x["operation"] == "collection.delete" and x["collection"] == "short-lived" for x in lines)
    found = http.get("/console/audit", params={"operation": "key.revoke"})
    assert key_id in found.text

    saved = fl.sessions.lifetime
    fl.sessions.lifetime = dt.timedelta(seconds=-1)  # a session that has already expired
    try:
        expired, _ = signed_in_raw(site, "acme")
        assert expired.get("/console/").headers["location"].endswith("/console/sign-in")
    finally:
        fl.sessions.lifetime = saved


def signed_in_raw(site, tenant: str) -> tuple[httpx.Client, httpx.Response]:
    http = httpx.Client(base_url=site["url"], follow_redirects=False)
    return http, http.post("/console/sign-in", data={"api_key": site["keys"][tenant]})


def test_the_report_page_shows_the_summary_and_plots(site, settings):
    """The page renders the report the running model's `faceledger report` wrote (here a minimal one: the report's
    own figures are tested in test_report.py), with its plots served only by name."""
    import json as _json

    from PIL import Image

    fl = site["fl"]
    folder = fl._report_dir()
    http, _ = signed_in(site, "acme")
    assert "faceledger report" in http.get("/console/report").text  # no report yet: says how to make one
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(_json.dumps({
        "model_id": fl.engine.model_id, "profile": "fast", "generated_at": "2026-11-27T00:00:00+00:00",
        "summary": {"sentences": [{"topic": "verification", "text": "On 6,000 pairs the model decided <well>."}]},
        "glossary": {"FMR": {"name": "false match rate", "meaning": "how often two people are taken for one."}}}))
    Image.new("RGB", (20, 10), (200, 10, 10)).save(folder / "roc_det.png")
    page = http.get("/console/report")
    assert "decided &lt;well&gt;." in page.text and "false match rate" in page.text
    assert 'src="/console/report/plots/roc_det.png"' in page.text
    plot = http.get("/console/report/plots/roc_det.png")
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    assert http.get("/console/report/plots/..%2Freport.json").status_code == 404
    assert http.get("/console/report/plots/report.json").status_code == 404


def test_sign_in_only_from_the_console_and_bound_keys_stay_in_their_collection(site):
    """A form on another site cannot sign a visitor in (login CSRF); a key bound to one collection does not reach
    the tenant's audit log or keys from the console."""
    fl = site["fl"]
    for header in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        r = httpx.post(site["url"] + "/console/sign-in", data={"api_key": site["keys"]["acme"]}, headers=header)
        assert r.status_code == 403 and "set-cookie" not in r.headers
        assert fl.audit.query(limit=100000)[-1]["outcome"] == "FORBIDDEN"
    fl.create_collection(Actor.local("acme"), "bound-only", require_consent=False)
    key, _ = fl.create_key(Actor.local(), "acme", ["admin"], "bound admin", collection="bound-only")
    site["keys"]["bound"] = key
    http, _ = signed_in(site, "bound")
    assert http.get("/console/audit").status_code == 403
    assert http.get("/console/keys").status_code == 403
    assert http.get("/console/audit/export?format=jsonl").status_code == 403
    page = http.get("/console/collections")
    assert "bound-only" in page.text and "staff" not in page.text
