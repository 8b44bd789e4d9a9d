"""Drives the Tollgate web console in headless Chromium for tests/all/console.rs.

    drive.py SCENARIO < CONFIG_JSON

Runs one scenario (a person's session: sign in, click, read) against a gateway the Rust
test started, and prints one JSON line: what the page showed, the API paths the page
called, and the browser's console log. The Rust side holds the truth (the API, the
ledger) and asserts; this script only waits and reads. A step that does not happen in
time fails the script with the page's text and a screenshot.

The config is stdin's first line. A scenario may pause at a named step for the test to
act (send chats, say): it prints `{"paused": STEP, ...}` and goes on when the test writes
a line to stdin.

Uses Debian's /usr/bin/chromium and /usr/bin/chromedriver (passed in the config), never
Selenium Manager: there is no network to download a browser from.
"""

import json
import os
import sys
from urllib.parse import urlparse

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

# Every wait is bounded: the console answers from loopback in milliseconds, but a loaded
# two-core CI machine can stall a render for seconds.
WAIT_SECONDS = 30


def sel(test, **attrs):
    """CSS selector of `[data-test=test]` with extra `data-*` attribute matches."""
    extra = "".join(f'[data-{k.replace("_", "-")}="{v}"]' for k, v in attrs.items())
    return f'[data-test="{test}"]{extra}'


class Console:
    def __init__(self, config):
        self.config = config
        self.base = config["base_url"]
        self.shots = config["screenshot_dir"]
        self.prefix = config["scenario"]
        options = webdriver.ChromeOptions()
        options.binary_location = config["chromium"]
        for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000", "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions"]:
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(executable_path=config["chromedriver"]), options=options)
        self.driver.set_page_load_timeout(WAIT_SECONDS)
        self.logs = []

    # Waiting and reading

    def wait(self, condition, what):
        try:
            return WebDriverWait(self.driver, WAIT_SECONDS, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]).until(lambda d: condition())
        except TimeoutException:
            self.shot("failure")
            body = self.driver.find_element(By.TAG_NAME, "body").text
            raise AssertionError(f"timed out waiting for {what}; the page reads:\n{body}\nbrowser log: {self.drain_logs()}")

    def all(self, selector):
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def one(self, selector):
        return self.wait(lambda: (self.all(selector) or [None])[0], selector)

    def text(self, selector):
        return self.one(selector).text

    def click(self, selector):
        self.one(selector).click()

    def gone(self, selector):
        self.wait(lambda: not self.all(selector), f"{selector} to go away")

    def type(self, selector, value):
        field = self.one(selector)
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.DELETE)
        if value:
            field.send_keys(value)

    def body(self):
        return self.driver.find_element(By.TAG_NAME, "body").text

    def shot(self, name):
        os.makedirs(self.shots, exist_ok=True)
        self.driver.save_screenshot(os.path.join(self.shots, f"{self.prefix}-{name}.png"))

    def pause(self, step, report=None):
        """Stops at `step`, with what the page showed so far, until the test says go on."""
        print(json.dumps({"paused": step, **(report or {})}), flush=True)
        if not sys.stdin.readline():
            raise AssertionError(f"the test ended the scenario while it paused at {step}")

    def drain_logs(self):
        entries = self.driver.get_log("browser")
        self.logs.extend(entries)
        return entries

    def api_calls(self):
        """Every non-asset URL the page fetched (path and query), once each, in order."""
        names = self.driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        calls = []
        for name in names:
            url = urlparse(name)
            path = url.path + (f"?{url.query}" if url.query else "")
            if url.path.startswith("/console/") or path in calls:
                continue
            calls.append(path)
        return calls

    # Steps a person takes

    def open(self):
        # The bare path redirects to /console/, where relative asset links resolve.
        self.driver.get(f"{self.base}/console")
        self.one(sel("signin-form"))
        return urlparse(self.driver.current_url).path

    def sign_in(self, token):
        self.type(sel("signin-token"), token)
        self.click(sel("signin-submit"))

    def tab(self, name):
        self.click(sel(f"tab-{name}"))
        self.one(sel(name))
        self.wait(lambda: not self.all(f'{sel(name)} {sel("loading")}'), f"the {name} tab to load")

    def chart(self):
        """The spend chart's labels and datasets, as Chart.js holds them."""
        self.one(sel("spend-chart"))
        script = """
            const chart = Chart.getChart(document.querySelector('[data-test="spend-chart"]'));
            if (!chart) return null;
            return {days: chart.data.labels, datasets: chart.data.datasets.map(d => ({label: d.label, type: d.type, data: d.data}))};
        """
        return self.wait(lambda: self.driver.execute_script(script), "the spend chart to draw")

    def options(self, selector):
        """The values of a select's options, once the page has filled it in."""
        self.wait(lambda: self.all(f"{selector} option"), f"the options of {selector}")
        return [o.get_attribute("value") for o in self.all(f"{selector} option")]

    def routes(self):
        """The API tab's routes: method, path and tag, in the page's order."""
        self.wait(lambda: self.all(sel("api-route")), "the API tab's routes")
        rows = []
        for group in self.all(sel("api-group")):
            for r in group.find_elements(By.CSS_SELECTOR, sel("api-route")):
                rows.append({"tag": group.get_attribute("data-tag"), "method": r.get_attribute("data-method"), "path": r.get_attribute("data-path")})
        return rows

    def finish(self, result):
        result["api_calls"] = self.api_calls()
        # The console reads its API description once per page, however many views use it.
        result["description_fetches"] = self.driver.execute_script("return performance.getEntriesByType('resource').filter(e => new URL(e.name).pathname === '/openapi.json').length")
        self.drain_logs()
        result["browser_log"] = self.logs
        self.driver.quit()
        return result


def operator(c, cfg):
    """The operator: tenant list (paged), search, top spenders, a tenant's spend and requests,
    a budget change, creating a tenant."""
    out = {"landed_on": c.open()}
    c.sign_in(cfg["admin_token"])
    c.one(sel("operator-view"))
    c.wait(lambda: c.all(sel("tenant-row")), "tenant rows")
    out["signed_in_as"] = c.text(sel("signed-in-as"))
    out["listed"] = [r.get_attribute("data-tenant") for r in c.all(sel("tenant-row"))]
    out["total_text"] = c.text(sel("tenant-total"))
    c.wait(lambda: c.all(sel("top-row")), "top spenders")
    out["top"] = [{"tenant": r.get_attribute("data-tenant"), "spend": r.find_element(By.CSS_SELECTOR, sel("top-spend")).text} for r in c.all(sel("top-row"))]
    c.shot("home")
    c.click(sel("page-next"))
    c.wait(lambda: c.text(sel("page-number")) == "Page 2" and [r.get_attribute("data-tenant") for r in c.all(sel("tenant-row"))] != out["listed"], "the second page")
    out["page2"] = [r.get_attribute("data-tenant") for r in c.all(sel("tenant-row"))]
    out["page2_has_next"] = c.one(sel("page-next")).is_enabled()
    c.click(sel("page-prev"))
    c.wait(lambda: [r.get_attribute("data-tenant") for r in c.all(sel("tenant-row"))] == out["listed"], "the first page again")

    c.type(sel("tenant-search"), cfg["search"])
    c.wait(lambda: all(cfg["search"] in r.get_attribute("data-tenant") for r in c.all(sel("tenant-row"))) and c.all(sel("tenant-row")), "the search to narrow the list")
    out["searched"] = [r.get_attribute("data-tenant") for r in c.all(sel("tenant-row"))]
    out["searched_total_text"] = c.text(sel("tenant-total"))

    c.click(sel("tenant-row", tenant=cfg["open"]))
    c.one(sel("tenant-view", tenant=cfg["open"]))
    out["title"] = c.text(sel("tenant-title"))
    out["chart_by_model"] = c.chart()
    out["range"] = {"start": c.one(sel("spend-start")).get_attribute("value"), "end": c.one(sel("spend-end")).get_attribute("value")}
    out["spend_total_microdollars"] = int(c.one(sel("spend-total")).get_attribute("data-microdollars"))
    out["spend_total_text"] = c.text(sel("spend-total"))
    out["spend_requests_text"] = c.text(sel("spend-requests"))
    out["breakdown"] = [{"key": r.get_attribute("data-key"), "microdollars": int(r.find_element(By.CSS_SELECTOR, sel("spend-row-cost")).get_attribute("data-microdollars"))} for r in c.all(sel("spend-row"))]
    c.shot("tenant-spend")

    by_model = [d["label"] for d in out["chart_by_model"]["datasets"] if d["type"] == "bar"]
    c.click(sel("group-provider"))
    c.wait(lambda: [d["label"] for d in c.chart()["datasets"] if d["type"] == "bar"] != by_model, "the chart to stack by provider")
    out["chart_by_provider"] = c.chart()

    c.tab("requests")
    c.wait(lambda: c.all(sel("request-row")), "request rows")
    out["requests"] = {k: c.text(sel(f"requests-{k}")) for k in ["count", "errors", "p50", "p95", "cost"]}
    rows = c.all(sel("request-row"))
    out["request_ids"] = [r.get_attribute("data-request-id") for r in rows]
    rows[0].click()
    c.one(sel("trace"))
    out["trace"] = {k: c.text(sel(f"trace-{k}")) for k in ["request-id", "policy", "target", "outcome", "cost"]}
    c.shot("tenant-requests")

    c.tab("limits")
    out["limits_periods"] = c.options(sel("limits-period"))
    c.type(sel("limits-budget-usd"), cfg["new_budget_usd"])
    Select(c.one(sel("limits-period"))).select_by_visible_text("month")
    c.click(sel("limits-save"))
    c.one(sel("limits-saved"))
    c.wait(lambda: cfg["new_budget_text"] in c.text(sel("tenant-budget")), "the new budget in the header")
    out["budget_pill"] = c.text(sel("tenant-budget"))

    c.click(sel("back-to-tenants"))
    c.one(sel("operator-view"))
    out["create_periods"] = c.options(sel("create-tenant-period"))
    c.type(sel("create-tenant-id"), cfg["create_id"])
    c.type(sel("create-tenant-budget"), "5")
    c.click(sel("create-tenant-submit"))
    out["created_text"] = c.text(sel("create-tenant-done"))

    c.tab("api")
    out["routes"] = c.routes()
    c.shot("api")
    return c.finish(out)


def tenant(c, cfg):
    """A tenant's manage token: its own pages only; a credential and a session handled
    through the UI."""
    out = {}
    c.open()
    c.sign_in(cfg["wrong_token"])
    out["wrong_token_error"] = c.text(sel("error"))
    # The refused sign-in's own 401s are the only failures the page may log: kept apart.
    out["sign_in_refusal_log"] = c.driver.get_log("browser")
    c.driver.execute_script("performance.clearResourceTimings()")

    c.sign_in(cfg["manage_token"])
    c.one(sel("tenant-view"))
    out["signed_in_as"] = c.text(sel("signed-in-as"))
    out["operator_only"] = {name: len(c.all(sel(name))) for name in ["operator-view", "tenant-list", "top-tenants", "create-tenant", "back-to-tenants", "tab-limits"]}
    out["tabs"] = [t.get_attribute("data-test") for t in c.all('[role="tab"]')]
    out["pages"] = {}
    out["chart"] = c.chart()
    c.shot("spend")
    for name in ["spend", "requests", "tokens", "credentials", "policy", "sessions", "audit", "api"]:
        c.tab(name)
        out["pages"][name] = {"text": c.body(), "source_has_other": cfg["other_tenant"] in c.driver.page_source}
    out["routes"] = c.routes()
    c.shot("api")
    c.tab("tokens")
    out["scopes"] = c.options(sel("token-scope"))

    c.tab("credentials")
    c.type(sel("credential-name"), cfg["credential_name"])
    c.type(sel("credential-provider"), "demo")
    c.type(sel("credential-key"), cfg["credential_key"])
    c.click(sel("credential-save"))
    c.one(sel("credential-row", name=cfg["credential_name"]))
    out["credential_key_field_after"] = c.one(sel("credential-key")).get_attribute("value")
    out["credential_key_in_page"] = cfg["credential_key"] in c.driver.page_source
    out["credentials"] = [{"name": r.get_attribute("data-name"), "text": r.text} for r in c.all(sel("credential-row"))]

    c.tab("sessions")
    session = cfg["session"]
    c.click(f'{sel("session-row", session=session)} {sel("session-open")}')
    c.one(sel("session-view"))
    c.wait(lambda: c.all(".turn"), "the session's turns")
    out["session_turns"] = [t.text for t in c.all(".turn")]
    c.shot("session")
    c.click(f'{sel("session-row", session=session)} {sel("session-delete")}')
    c.click(f'{sel("session-row", session=session)} {sel("session-delete-confirm")}')
    c.gone(sel("session-row", session=session))
    out["sessions_after_delete"] = [r.get_attribute("data-session") for r in c.all(sel("session-row"))]

    c.tab("audit")
    c.wait(lambda: c.all(sel("audit-row")), "audit rows")
    out["audit_text"] = c.text(sel("audit-table"))

    c.click(sel("sign-out"))
    c.one(sel("signin-form"))
    out["after_sign_out"] = c.body()
    return c.finish(out)


def token_create(c, cfg):
    c.open()
    c.sign_in(cfg["token"])
    c.tab("tokens")
    # The options come from /openapi.json; Preact leaves out a `value` attribute equal to the text.
    c.options(sel("token-scope"))
    Select(c.one(sel("token-scope"))).select_by_visible_text("inference")
    c.click(sel("token-create"))
    out = {"token": c.one(sel("new-token-value")).get_attribute("value"), "warning": c.text(sel("new-token"))}
    c.wait(lambda: len(c.all(sel("token-row"))) == cfg["rows_before"] + 1, "the new token's row")
    out["ids"] = [r.get_attribute("data-token-id") for r in c.all(sel("token-row"))]
    c.shot("created")
    c.click(sel("new-token-done"))
    c.gone(sel("new-token"))
    return c.finish(out)


def token_revoke(c, cfg):
    c.open()
    c.sign_in(cfg["token"])
    c.tab("tokens")
    row = sel("token-row", token_id=cfg["revoke"])
    c.click(f'{row} {sel("token-revoke")}')
    c.click(f'{row} {sel("token-revoke-confirm")}')
    c.gone(row)
    return c.finish({"ids": [r.get_attribute("data-token-id") for r in c.all(sel("token-row"))]})


def policy_upload(c, cfg):
    c.open()
    c.sign_in(cfg["token"])
    c.tab("policy")
    c.one(sel("policy-file")).send_keys(cfg["wasm_path"])
    c.wait(lambda: c.one(sel("policy-upload")).is_enabled(), "the upload button")
    c.click(sel("policy-upload"))
    out = {"hash": c.text(sel("policy-uploaded-hash"))}
    c.one(sel("policy-upload-row", hash=out["hash"]))
    out["assign_field"] = c.one(sel("policy-hash")).get_attribute("value")
    c.type(sel("policy-config"), cfg["config"])
    c.click(sel("policy-assign"))
    c.wait(lambda: c.text(sel("policy-current-hash")) == out["hash"], "the upload to be the current policy")
    out["current"] = c.text(sel("policy-current-hash"))
    out["previous"] = c.text(sel("policy-previous-hash"))
    out["quota"] = c.text(sel("policy-quota"))
    c.shot("assigned")
    # A config that is not JSON is refused in the page, before any request.
    c.type(sel("policy-config"), "{not json")
    c.click(sel("policy-assign"))
    out["bad_config_error"] = c.text(f'{sel("policy-assign-form")} {sel("error")}')
    return c.finish(out)


def candidate_shown(c):
    """What the candidate panel shows of the candidate, or None for none."""
    c.wait(lambda: c.all(sel("candidate-current")) or c.all(sel("candidate-none")), "the candidate panel")
    if c.all(sel("candidate-none")):
        return None
    return {
        "hash": c.one(sel("candidate-hash-shown")).get_attribute("data-hash"),
        "hash_text": c.text(sel("candidate-hash-shown")),
        "mode": c.text(sel("candidate-mode-shown")),
        "percent": c.text(sel("candidate-percent-shown")),
        "config": c.text(sel("candidate-config-shown")),
    }


def candidate_tally(c):
    return {k: c.text(sel(f"candidate-{k}")) for k in ["compared", "same", "different", "beside-failed", "canary-failed"]}


def policy_candidate(c, cfg):
    """A tenant tries a policy as a shadow candidate, reads how its decisions compared with
    the live ones after the test's chats, promotes it; then tries and drops another."""
    out = {}
    c.open()
    c.sign_in(cfg["token"])
    c.tab("policy")
    c.wait(lambda: not c.all(f'{sel("candidate")} {sel("loading")}'), "the candidate panel to load")
    out["before"] = candidate_shown(c)
    out["hash_choices"] = c.options(sel("candidate-hash-choice"))
    out["modes"] = c.options(sel("candidate-mode"))
    Select(c.one(sel("candidate-hash-choice"))).select_by_value(cfg["hash"])

    # A config that is not JSON is refused in the page, before any request.
    c.type(sel("candidate-config"), "{not json")
    c.click(sel("candidate-submit"))
    form_error = f'{sel("candidate-form")} {sel("error")}'
    out["bad_config_error"] = c.text(form_error)
    # A canary with no share is the gateway's refusal, shown as it words it.
    c.type(sel("candidate-config"), cfg["config"])
    Select(c.one(sel("candidate-mode"))).select_by_visible_text("canary")
    c.type(sel("candidate-percent"), "")
    c.click(sel("candidate-submit"))
    c.wait(lambda: c.all(form_error) and c.text(form_error) != out["bad_config_error"], "the gateway's refusal")
    out["canary_error"] = c.text(form_error)
    # Its refused PUT is the only failure the page may log: kept apart.
    out["refusal_log"] = c.driver.get_log("browser")

    Select(c.one(sel("candidate-mode"))).select_by_visible_text("shadow")
    c.click(sel("candidate-submit"))
    c.one(sel("candidate-current"))
    c.gone(form_error)
    out["assigned"] = candidate_shown(c)
    out["tally_assigned"] = candidate_tally(c)
    c.shot("assigned")

    c.pause("assigned", {"shown": out["assigned"]})
    # The test sent its chats and waited for their comparisons: the page shows them once asked.
    out["tally_before_refresh"] = candidate_tally(c)
    c.wait(lambda: c.one(sel("candidate-refresh")).is_enabled(), "the refresh button")
    c.click(sel("candidate-refresh"))
    c.wait(lambda: c.all(sel("candidate-comparison")), "comparison rows")
    out["tally"] = candidate_tally(c)
    out["comparisons"] = [
        {
            "request_id": r.get_attribute("data-request-id"),
            "result": r.get_attribute("data-result"),
            "acting": r.find_element(By.CSS_SELECTOR, sel("comparison-acting")).text,
            "beside": r.find_element(By.CSS_SELECTOR, sel("comparison-beside")).text,
            "highlight": r.get_attribute("class"),
        }
        for r in c.all(sel("candidate-comparison"))
    ]
    c.shot("compared")

    c.click(sel("candidate-promote"))
    c.click(sel("candidate-promote-confirm"))
    c.one(sel("candidate-none"))
    c.wait(lambda: c.text(sel("policy-current-config")) != cfg["live_config"], "the promoted config")
    out["after_promote"] = {"candidate": candidate_shown(c), "current_hash": c.text(sel("policy-current-hash")), "current_config": c.text(sel("policy-current-config")), "previous_config": c.text(sel("policy-previous-config"))}
    c.shot("promoted")

    c.click(sel("candidate-submit"))
    c.one(sel("candidate-current"))
    out["reassigned"] = candidate_shown(c)
    c.click(sel("candidate-drop"))
    c.click(sel("candidate-drop-cancel"))
    out["drop_cancelled"] = candidate_shown(c)
    c.click(sel("candidate-drop"))
    c.click(sel("candidate-drop-confirm"))
    c.one(sel("candidate-none"))
    out["after_drop"] = candidate_shown(c)
    return c.finish(out)


def description_unreadable(c, cfg):
    """The browser refuses to fetch /openapi.json: the forms and the API tab say so."""
    c.driver.execute_cdp_cmd("Network.enable", {})
    c.driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/openapi.json"]})
    c.open()
    c.sign_in(cfg["token"])
    c.one(sel("tenant-view"))
    c.tab("tokens")
    out = {"tokens_error": c.text(f'{sel("tokens")} {sel("error")}'), "scope_options": len(c.all(f'{sel("token-scope")} option'))}
    out["issue_enabled"] = c.one(sel("token-create")).is_enabled()
    c.tab("api")
    out["api_error"] = c.text(f'{sel("api")} {sel("error")}')
    out["api_routes"] = len(c.all(sel("api-route")))
    c.shot("unreadable")
    # The blocked fetches are the only failures the page may log: kept apart.
    out["blocked_log"] = c.driver.get_log("browser")
    return c.finish(out)


SCENARIOS = {f.__name__: f for f in [operator, tenant, token_create, token_revoke, policy_upload, policy_candidate, description_unreadable]}


def main():
    scenario, config = sys.argv[1], json.loads(sys.stdin.readline())
    config["scenario"] = scenario
    console = Console(config)
    try:
        result = SCENARIOS[scenario](console, config)
    except BaseException:
        console.driver.quit()
        raise
    print(json.dumps(result))


if __name__ == "__main__":
    main()
