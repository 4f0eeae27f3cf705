"""The web dashboard in a real browser: Debian's chromium, headless, driven through
chromium-driver by Selenium, logged in with the link `swarmlet dashboard` prints, and
looking at a live local cluster (1 manager, 2 workers, process runtime). It asserts
what a person sees: after a deploy, the service's row with 2/2; after a worker dies,
that node shown down and its task running again on another node.

The browser talks only to the manager's loopback address: host names resolve to
nothing (``--host-resolver-rules``), no proxy, no background services."""
from __future__ import annotations

import json
import shutil
import tempfile

import pytest

from ..conftest import running_in_ci
from .conftest import wait_until

pytestmark = pytest.mark.cluster

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PAGE_TIMEOUT = 45.0
STACK = {"services": {
    "web": {"image": "swarmlet-test/busybox:1", "command": ["sleep", "600"],
            "deploy": {"replicas": 2, "placement": {"max_replicas_per_node": 1}}},
    # No node has the label: its tasks stay pending with the scheduler's reason, shown as 0/2.
    "stuck": {"image": "swarmlet-test/busybox:1", "command": ["sleep", "600"],
              "deploy": {"replicas": 2, "placement": {"constraints": ["node.labels.swdb-nowhere == yes"]}}},
}}
SERVICE = "dash_web"
STUCK = "dash_stuck"


def browser_unavailable() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    return f"{' and '.join(missing)} missing (apt-get install chromium chromium-driver)" if missing else None


@pytest.fixture(scope="module")
def browser(dashboard_cluster):
    reason = browser_unavailable()
    if reason:
        if running_in_ci():
            pytest.fail(f"CI is set but {reason}; .ci/run installs them", pytrace=False)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="swdb-chromium-")
    manager_ip = dashboard_cluster.env["SWARMLET_HOST"].split(",")[0].rsplit(":", 1)[0]
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--user-data-dir={profile}", "--no-proxy-server", f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {manager_ip}",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-default-apps", "--no-first-run", "--window-size=1400,1000"):
        options.add_argument(argument)
    # The manager's certificate comes from the cluster's own CA, which this profile does not trust.
    options.accept_insecure_certs = True
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def dashboard_cluster(tmp_path_factory):
    from .conftest import FAST_SETTINGS, TestCluster, _ranges

    cluster = TestCluster(tmp_path_factory.mktemp("dash") / "cluster", f"127.0.{next(_ranges) % 250}.2")
    try:
        yield cluster.up(1, 2, FAST_SETTINGS)
    finally:
        cluster.down()


def cells(driver, selector: str) -> list[list[str]]:
    """The visible text of each table row that matches, cell by cell, read in one script
    run: the page redraws every second, and reading cell by cell over WebDriver (a round
    trip each) outlasted a redraw of the 26-row events table on a loaded machine, so
    every read of it ended on a stale element."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]),"
        " tr => Array.from(tr.querySelectorAll('td'), td => td.innerText));", selector)


def seen(driver, what: str, predicate):
    """Wait until the page shows what ``predicate`` looks for (the page redraws every second)."""
    from selenium.common.exceptions import StaleElementReferenceException

    def look():
        try:
            return predicate()
        except StaleElementReferenceException:  # redrawn while read: look again
            return None
    try:
        return wait_until(look, PAGE_TIMEOUT, f"the dashboard to show {what}", interval=0.25)
    except AssertionError as err:
        raise AssertionError(f"{err}; the page said: {page_state(driver)}") from None


def page_state(driver) -> dict:
    """What a failed wait saw: the page's notes, and the events answer as the page gets it."""
    state = {}
    for element_id in ("problem", "events-note", "updated"):
        try:
            state[element_id] = driver.find_element("id", element_id).get_attribute("textContent")
        except Exception as err:  # noqa: BLE001: evidence only
            state[element_id] = f"<{err}>"
    try:
        state["page"] = driver.execute_script(
            "return {now: new Date().toLocaleTimeString(), event_rows: document.querySelectorAll('#events tr').length,"
            " task_rows: document.querySelectorAll('#tasks tr').length, ready: document.readyState};")
    except Exception as err:  # noqa: BLE001: evidence only
        state["page"] = f"<{err}>"
    try:
        state["events answer"] = driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch('/v1/events?follow=0&limit=50', {credentials: 'same-origin', cache: 'no-store'})"
            ".then(r => r.text().then(t => done(r.status + ' ' + t.slice(0, 2000))))"
            ".catch(e => done('fetch failed: ' + e));")
    except Exception as err:  # noqa: BLE001: evidence only
        state["events answer"] = f"<{err}>"
    return state


def test_the_dashboard_shows_a_deploy_and_a_node_going_down(dashboard_cluster, browser, tmp_path):
    cluster = dashboard_cluster
    url = cluster.cli("dashboard").stdout.strip()
    assert url.startswith("https://127.") and "/dashboard/login?token=" in url
    browser.get(url)
    assert browser.current_url.endswith("/dashboard/")  # redirected, with the session cookie
    assert browser.get_cookie("swarmlet_dashboard")["httpOnly"] is True

    # Nodes and the Raft status, as a person reads them.
    nodes = seen(browser, "three ready nodes", lambda: (lambda rows: rows if len(rows) == 3
                 and all(r[4] == "ready" for r in rows) else None)(cells(browser, "#nodes tr")))
    assert sorted(r[0] for r in nodes) == ["manager-1", "worker-1", "worker-2"]
    seen(browser, "the Raft leader", lambda: "leader" in browser.find_element("id", "raft-summary").text
         and cells(browser, "#managers tr")[0][2] == "leader")

    compose = tmp_path / "stack.yml"
    compose.write_text(json.dumps(STACK))
    cluster.cli("stack", "deploy", "--detach", "-c", str(compose), "dash")
    row = seen(browser, f"{SERVICE} at 2/2", lambda: next((r for r in cells(browser, f'#services tr[data-service="{SERVICE}"]')
                                                          if r[3] == "2/2"), None))
    assert row[1] == "dash" and row[2] == "replicated"
    assert any(r == ["dash", "2"] for r in cells(browser, "#stacks tr"))
    assert [r[3] for r in cells(browser, f'#services tr[data-service="{STUCK}"]')] == ["0/2"]
    pending = seen(browser, f"the pending tasks of {STUCK} with the reason", lambda: (lambda rows: rows if len(rows) == 2
                   and all(r[4] == "pending" and r[5] for r in rows) else None)(cells(browser, f'#tasks tr[data-service="{STUCK}"]')))
    assert all("constraint" in r[5] or "node" in r[5] for r in pending), pending
    running = seen(browser, "two running tasks", lambda: (lambda rows: rows if len(rows) == 2 else None)(
        [r for r in cells(browser, f'#tasks tr[data-service="{SERVICE}"]') if r[4] == "running"]))

    # A worker that runs one of the tasks dies.
    victim = next(r[2] for r in running if r[2].startswith("worker-"))
    cluster.kill(victim)
    seen(browser, f"{victim} down", lambda: any(r[0] == victim and r[4] == "down" for r in cells(browser, "#nodes tr")))

    def rescheduled():
        rows = cells(browser, f'#tasks tr[data-service="{SERVICE}"]')
        live = [r for r in rows if r[4] == "running" and r[3] == "running"]
        return live if len(live) == 2 and victim not in {r[2] for r in live} else None
    live = seen(browser, f"the task of {victim} running elsewhere", rescheduled)
    assert len({r[2] for r in live}) == 2  # still one per node
    seen(browser, f"{SERVICE} back at 2/2", lambda: any(r[3] == "2/2" for r in cells(browser, f'#services tr[data-service="{SERVICE}"]')))

    # Recent events: listed when the manager has the events API, else said to be missing.
    try:
        cluster.client().call("GET", "/v1/events?follow=0&limit=1")
        seen(browser, "recent events", lambda: cells(browser, "#events tr"))
    except Exception as err:  # noqa: BLE001: an ApiError 404 means no events API
        assert getattr(err, "status", None) == 404, err
        seen(browser, "'events not available'", lambda: "events not available" in browser.find_element("id", "events-note").text)
    assert not browser.find_element("id", "problem").is_displayed()


def test_a_spent_login_link_and_no_session_are_refused(dashboard_cluster, browser):
    url = dashboard_cluster.cli("dashboard").stdout.strip()
    browser.get(url)
    browser.get(url)  # the same link again
    assert "unknown, used or expired" in browser.find_element("tag name", "body").text
    browser.delete_all_cookies()
    browser.get(url.split("/dashboard/")[0] + "/dashboard/")
    seen(browser, "the way to log in", lambda: "swarmlet dashboard" in browser.find_element("id", "problem").text)
