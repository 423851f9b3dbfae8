"""The dashboard in headless Chromium, against a real `defsync serve`.

Started by the Rust test `dashboard::browser_end_to_end` (tests/all/dashboard.rs), which starts
serve, the GitHub stand-in and the Git side, and gives this script:

  DEFSYNC_URL          the dashboard's base URL
  DEFSYNC_KEY          a write key to log in with
  DEFSYNC_HTML_NAME    the name of a definition whose name holds HTML
  DEFSYNC_CHROMIUM     the Chromium to drive (Debian's /usr/bin/chromium; never downloaded)
  DEFSYNC_SCREENSHOTS  where to write the screenshots (docs/screenshots to regenerate them)

When a step needs the world outside the browser to move (a signed webhook, GitHub answering 404
for the workflow), it prints one JSON line `{"request": ...}` on stdout and waits for the test's
answer line on stdin. Every check failing raises, so the script exits non-zero.
"""

import json
import os
import re
import sys
import time

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright

URL = os.environ["DEFSYNC_URL"].rstrip("/")
KEY = os.environ["DEFSYNC_KEY"]
HTML_NAME = os.environ["DEFSYNC_HTML_NAME"]
CHROMIUM = os.environ.get("DEFSYNC_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("DEFSYNC_SCREENSHOTS", "")
PROJECT = "p1"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def step(text):
    print(f"# {text}", file=sys.stderr, flush=True)


def ask(request, **fields):
    """Asks the Rust test to do something outside the browser; returns its answer."""
    print(json.dumps({"request": request, **fields}), flush=True)
    line = sys.stdin.readline()
    if not line:
        raise SystemExit(f"the test closed stdin while {request} was asked")
    answer = json.loads(line)
    if answer.get("error"):
        raise SystemExit(f"{request}: {answer['error']}")
    return answer


def shot(page, name):
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=False)


def through_refresh(page, call, cut_short):
    """`call()`, tried again (at most three times) when the page's own refresh (dashboard.js
    reloads it while a pull is queued or running) cut it short with an error saying `cut_short`."""
    for attempt in range(3):
        try:
            return call()
        except PlaywrightError as e:
            if cut_short not in str(e) or attempt == 2:
                raise
            page.wait_for_load_state()


def goto(page, url):
    """Loads `url` afresh."""
    if page.url.split("#")[0] == url.split("#")[0]:
        # A navigation that changes only the fragment scrolls the page it is on: it loads nothing.
        page.goto("about:blank")
    through_refresh(page, lambda: page.goto(url), "interrupted by another navigation")


def evaluate(page, script):
    """`page.evaluate`, on a page that may refresh itself."""
    return through_refresh(page, lambda: page.evaluate(script), "Execution context was destroyed")


def wait_for_status(page, seq, status, timeout=90):
    """Reloads the project page until commit `seq`'s pull shows `status`."""
    deadline = time.time() + timeout
    seen = None
    while time.time() < deadline:
        goto(page, f"{URL}/projects/{PROJECT}#commit-{seq}")
        cell = page.locator(f"#commit-{seq} .dispatch .status")
        seen = cell.get_attribute("data-status") if cell.count() else None
        if seen == status:
            return
        time.sleep(0.5)
    state = evaluate(
        page,
        """() => ({url: location.href, loaded_ms_ago: Math.round(performance.now()),
                  focus: document.activeElement && document.activeElement.outerHTML.slice(0, 200),
                  visibility: document.visibilityState})""",
    )
    raise AssertionError(f"commit seq {seq}: the pull shows {seen!r}, not {status!r}, after {timeout}s; the page: {state}")


def edit(page, name, old, new):
    """Opens a definition from the project page, edits its text and saves; the new seq."""
    goto(page, f"{URL}/projects/{PROJECT}#definitions")
    page.locator("#definitions a.name", has_text=name).first.click()
    area = page.get_by_label("Definition (YAML: kind, name, spec)")
    text = area.input_value()
    assert old in text, text
    area.fill(text.replace(old, new))
    page.get_by_role("button", name="Save").click()
    notice = page.locator("p.notice")
    expect(notice).to_contain_text("Saved as dashboard commit seq")
    return int(re.search(r"seq (\d+)", notice.inner_text()).group(1))


def main():
    # CI runs this beside the whole test suite on two cores: a page may take seconds to answer.
    expect.set_options(timeout=20_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        # Any script error or CSP violation on a page fails the run.
        problems = []
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        # (The refused save below answers 422 on purpose: the browser logs that one.)
        page.on(
            "console",
            lambda m: problems.append(f"console: {m.text}")
            if m.type == "error" and "status of 422" not in m.text
            else None,
        )

        step("log in")
        goto(page, URL + "/")
        expect(page).to_have_url(URL + "/login")
        expect(page.locator("html")).to_have_attribute("lang", "en")
        shot(page, "login")
        page.get_by_label("API key").fill(KEY)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="Projects")).to_be_visible()
        page.get_by_role("link", name="Project one").click()
        expect(page.get_by_role("heading", level=1)).to_contain_text("Project one")

        step("a name with HTML in it is shown as text")
        cell = page.locator("#definitions a.name", has_text="alert")
        expect(cell).to_have_text(HTML_NAME)
        assert evaluate(page, "() => window.__defsync_xss === undefined"), "a name ran as script"
        expect(page.locator("#definitions b"), "a name became markup").to_have_count(0)
        shot(page, "project")

        step("a conflict reported by the last pull, both versions side by side")
        conflict = page.locator("#conflicts .conflict").first
        expect(conflict).to_contain_text("notify-on-deal")
        expect(conflict.locator(".side-by-side > div").nth(0)).to_contain_text("retries: 7")
        expect(conflict.locator(".side-by-side > div").nth(1)).to_contain_text("retries: 9")
        page.locator("#conflicts").scroll_into_view_if_needed()
        shot(page, "conflicts")

        step("edit a definition and see the commit in the history")
        seq = edit(page, "salesforce", "api_version: '61.0'", "api_version: '62.0'")
        shot(page, "definition")
        goto(page, f"{URL}/projects/{PROJECT}#history")
        first = page.locator("ol.history > li").first
        expect(first).to_have_id(f"commit-{seq}")
        expect(first).to_contain_text("dashboard")
        expect(first).to_contain_text("Edit connection/salesforce in the dashboard")
        expect(first.locator("ul.changes")).to_contain_text("modified connection/salesforce")

        step("the pull goes to succeeded when a signed workflow_run webhook arrives")
        ask("run-completed", seq=seq, conclusion="success")
        wait_for_status(page, seq, "succeeded")
        expect(page.locator(f"#commit-{seq} .dispatch a", has_text="run")).to_have_attribute(
            "href", re.compile(r"/actions/runs/\d+$")
        )
        page.locator("#history").scroll_into_view_if_needed()
        shot(page, "history")

        step("the pull fails when the workflow is missing")
        ask("workflow-missing")
        seq = edit(page, "salesforce", "api_version: '62.0'", "api_version: '63.0'")
        wait_for_status(page, seq, "failed")
        failed = page.locator(f"#commit-{seq} .dispatch")
        expect(failed).to_contain_text("404")
        expect(failed).to_contain_text("--dispatch-workflow")
        expect(failed.get_by_role("button", name="Retry")).to_be_visible()
        failed.scroll_into_view_if_needed()
        shot(page, "failed-dispatch")

        step("retry the failed dispatch, then Sync now")
        failed.get_by_role("button", name="Retry").click()
        expect(page.locator("p.notice")).to_contain_text("The dispatch is queued again")
        # GitHub accepts it this time: the run it started shows up, queued.
        deadline = time.time() + 90
        while True:
            goto(page, f"{URL}/projects/{PROJECT}#commit-{seq}")
            cell = page.locator(f"#commit-{seq} .dispatch")
            if cell.locator(".status").get_attribute("data-status") == "queued" and cell.get_by_role("link", name="run").count():
                break
            assert time.time() < deadline, cell.inner_text()
            time.sleep(0.5)
        step("a page with a pull queued refreshes itself, also after a link opened in another tab")
        with page.context.expect_page() as opened:
            page.locator("#definitions a.name").first.click(modifiers=["Control"])
        opened.value.close()
        with page.expect_event("load", timeout=30_000):
            pass
        page.get_by_role("button", name="Sync now").click()
        expect(page.locator("p.notice")).to_contain_text("A pull is queued")

        step("a refused save shows the error at its line and keeps the text")
        goto(page, f"{URL}/projects/{PROJECT}/definition")
        area = page.get_by_label("Definition (YAML: kind, name, spec)")
        area.fill("kind: workflow\nname: new-one\nspec:\n  a: 1\n  a: 2\n")
        page.get_by_role("button", name="Save").click()
        expect(page.locator("#form-error")).to_contain_text("Line 5")
        expect(page.locator("ol.listing li.bad")).to_contain_text("a: 2")
        assert "a: 2" in page.get_by_label("Definition (YAML: kind, name, spec)").input_value()
        shot(page, "invalid")

        step("keyboard: the skip link comes first, and keeps the focus")
        goto(page, f"{URL}/projects/{PROJECT}")
        page.keyboard.press("Tab")
        assert evaluate(page, "() => document.activeElement.textContent") == "Skip to content"
        # A pull is queued, so the page refreshes itself, but not under the keyboard's focus.
        page.wait_for_timeout(7_000)
        assert evaluate(page, "() => document.activeElement.textContent") == "Skip to content", "a refresh took the focus"

        assert not problems, problems
        browser.close()
    print(json.dumps({"done": True}), flush=True)


if __name__ == "__main__":
    main()
