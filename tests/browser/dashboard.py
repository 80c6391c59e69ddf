"""Drives the dashboard in headless Chromium (Debian's chromium and chromedriver, through
Selenium) against a live DistriQueue gateway, and checks what a user sees against the API.

Usage:
  dashboard.py serve GATEWAY_URL SCREENSHOT_DIR
      every view against a `serve`;
  dashboard.py cluster GATEWAY_URL SCREENSHOT_DIR SIGNAL_DIR
      the cluster view of a three-node cluster: writes the leader's node id it shows to
      SIGNAL_DIR/leader, waits for SIGNAL_DIR/killed (the test kills that node), then waits for
      another leader to be marked;
  dashboard.py keys GATEWAY_URL SCREENSHOT_DIR CLIENT_KEY
      a gateway with API keys and public reads: without a key the page shows jobs but no
      action; with the client key it offers them.

Run by tests/dashboard.rs, which starts the servers and stops them. Exits non-zero with the
first failed check. Pages are screenshotted into SCREENSHOT_DIR (at 1280x800, and the job list
at 390x844, a phone's width).
"""

import json
import os
import sys
import time
import urllib.parse

import requests
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

MODE = sys.argv[1]
GATEWAY = sys.argv[2].rstrip("/")
SHOTS = sys.argv[3]
DEADLINE = 60
HEADERS = {}


def api(method, path, body=None):
    response = requests.request(method, GATEWAY + path, json=body, headers=HEADERS, timeout=30)
    assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
    return response.json()


def wait_api(what, check, deadline=DEADLINE):
    end = time.time() + deadline
    while time.time() < end:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def terminal(job_id):
    job = api("GET", f"/api/jobs/{job_id}")
    return job if job["jobStatus"] in ("COMPLETED", "FAILED", "TIMEOUT", "CANCELLED") else None


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--window-size=1280,800",
        # Names outside 127.0.0.1 do not resolve: a page that needed them would break.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)


def wait(driver, what, check, deadline=DEADLINE):
    # Views re-render as events arrive: an element read a moment ago may be gone; look again.
    return WebDriverWait(
        driver, deadline, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
    ).until(
        lambda d: check(d), message=f"timed out waiting for {what}"
    )


def text_of(driver, css):
    elements = driver.find_elements(By.CSS_SELECTOR, css)
    return elements[0].text if elements else None


def shot(driver, name):
    driver.save_screenshot(f"{SHOTS}/{name}.png")


def open_view(driver, hash_path):
    driver.get(f"{GATEWAY}/dashboard#{hash_path}")


def check_console_and_network(driver):
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, f"console errors: {errors}"
    origin = urllib.parse.urlsplit(GATEWAY)
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") != "Network.requestWillBeSent":
            continue
        url = message["params"]["request"]["url"]
        if url.startswith("data:"):
            continue
        host = urllib.parse.urlsplit(url).hostname
        assert host == origin.hostname == "127.0.0.1", f"a request left 127.0.0.1: {url}"


def overview_counts_match_the_api(driver):
    ids = [api("POST", "/api/jobs", {"type": "echo", "jobPriority": ["LOW", "MEDIUM", "HIGH"][n % 3], "payload": {"n": n}})["id"] for n in range(200)]
    for job_id in ids:
        wait_api(f"job {job_id} to finish", lambda: terminal(job_id))
    stats = api("GET", "/api/jobs/statistics")
    open_view(driver, "/overview")
    def shown(d):
        cell = d.find_elements(By.CSS_SELECTOR, '#status-counts [data-status="COMPLETED"] .n')
        return cell and cell[0].text == str(stats["completedJobs"])
    wait(driver, "the overview's COMPLETED count", shown)
    total = text_of(driver, '#status-counts [data-status="ALL"] .n')
    assert total == str(stats["totalJobs"]), f"overview shows {total} jobs, the API {stats['totalJobs']}"
    for priority, count in stats["jobsByPriority"].items():
        cell = text_of(driver, f'[data-priority="{priority}"]')
        assert cell == str(count), f"{priority}: overview {cell}, API {count}"
    waiting = api("GET", "/api/jobs/timeline")["waitingByPriority"]
    for priority in ("CRITICAL", "HIGH", "MEDIUM", "LOW"):
        cell = text_of(driver, f'[data-waiting="{priority}"]')
        assert cell == str(waiting.get(priority, 0)), f"{priority} waiting: overview {cell}, API {waiting}"
    shot(driver, "overview")


def submitted_job_completes_on_its_page(driver):
    open_view(driver, "/submit")
    wait(driver, "the submit form", lambda d: d.find_elements(By.ID, "s-type"))
    driver.find_element(By.ID, "s-type").clear()
    driver.find_element(By.ID, "s-type").send_keys("sleep")
    Select(driver.find_element(By.ID, "s-priority")).select_by_value("HIGH")
    payload = driver.find_element(By.ID, "s-payload")
    payload.clear()
    payload.send_keys('{"ms": 1500}')
    shot(driver, "submit")
    driver.find_element(By.CSS_SELECTOR, "#submit-form button[type=submit]").click()
    wait(driver, "the job's page", lambda d: "#/jobs/" in d.current_url)
    job_id = driver.current_url.split("#/jobs/")[1]
    wait(driver, "RUNNING or COMPLETED on the page", lambda d: (text_of(d, "#job-status") or "") in ("RUNNING", "COMPLETED"))
    wait(driver, "COMPLETED without a reload", lambda d: text_of(d, "#job-status") == "COMPLETED")
    assert api("GET", f"/api/jobs/{job_id}")["jobStatus"] == "COMPLETED"
    shot(driver, "job")
    return job_id


def bad_payload_is_refused_in_the_form(driver):
    open_view(driver, "/submit")
    wait(driver, "the submit form", lambda d: d.find_elements(By.ID, "s-payload"))
    payload = driver.find_element(By.ID, "s-payload")
    payload.clear()
    payload.send_keys("{not json")
    driver.find_element(By.CSS_SELECTOR, "#submit-form button[type=submit]").click()
    wait(driver, "a validation message", lambda d: "Payload" in (text_of(d, "#submit-error") or ""))


def failed_job_retried_from_its_page_runs_again(driver):
    job_id = api("POST", "/api/jobs", {"type": "flaky", "jobPriority": "HIGH", "maxRetries": 0, "payload": {"failTimes": 1}})["id"]
    wait_api("the flaky job to fail", lambda: (terminal(job_id) or {}).get("jobStatus") == "FAILED")
    open_view(driver, f"/jobs/{job_id}")
    wait(driver, "the Retry button", lambda d: d.find_elements(By.ID, "retry"))
    shot(driver, "job-failed")
    driver.find_element(By.ID, "retry").click()
    wait(driver, "COMPLETED after the retry", lambda d: text_of(d, "#job-status") == "COMPLETED")
    rows = driver.find_elements(By.CSS_SELECTOR, "#attempts tbody tr")
    assert len(rows) == 2, f"{len(rows)} attempts shown"


def dead_letter_group_retry_reruns_every_job(driver):
    ids = [api("POST", "/api/jobs", {"type": "flaky", "jobPriority": "LOW", "maxRetries": 0, "payload": {"failTimes": 1}, "tags": ["group"]})["id"] for _ in range(5)]
    for job_id in ids:
        wait_api("a flaky job to fail", lambda: (terminal(job_id) or {}).get("jobStatus") == "FAILED")
    open_view(driver, "/dead-letters")
    wait(driver, "the dead-letter groups", lambda d: d.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr"))
    shot(driver, "dead-letters")
    row = [r for r in driver.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr") if r.find_elements(By.TAG_NAME, "td")[0].text == "flaky"][0]
    row.find_element(By.TAG_NAME, "button").click()
    for job_id in ids:
        job = wait_api("a retried job to complete", lambda: (lambda j: j if j and j["jobStatus"] == "COMPLETED" else None)(terminal(job_id)))
        assert job["attempt"] == 2, job
    wait(driver, "the group to leave the view", lambda d: not [r for r in d.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr") if r.text.startswith("flaky")])


def filters_and_paging_show_what_the_api_shows(driver):
    query = {"jobStatus": "COMPLETED", "type": "echo", "size": "20", "sortBy": "createdAt", "sortDirection": "desc"}
    open_view(driver, "/jobs?" + urllib.parse.urlencode(query))
    wait(driver, "the job list", lambda d: d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr"))
    page0 = api("GET", "/api/jobs?" + urllib.parse.urlencode(query))
    total = driver.find_element(By.ID, "total").get_attribute("data-total")
    assert total == str(page0["page"]["totalElements"]), f"list shows {total}, API {page0['page']['totalElements']}"
    shown = [r.get_attribute("data-id") for r in driver.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")]
    assert shown == [job["id"] for job in page0["content"]], "page 1 differs from the API"
    shot(driver, "jobs")
    driver.find_element(By.XPATH, "//nav[@aria-label='Pages']/button[text()='Next']").click()
    page1 = api("GET", "/api/jobs?" + urllib.parse.urlencode({**query, "page": "1"}))
    wait(driver, "page 2", lambda d: [r.get_attribute("data-id") for r in d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")] == [job["id"] for job in page1["content"]])
    # The filter form: FAILED jobs of any type.
    open_view(driver, "/jobs")
    wait(driver, "the filter form", lambda d: d.find_elements(By.ID, "f-jobStatus"))
    Select(driver.find_element(By.ID, "f-jobStatus")).select_by_value("COMPLETED")
    driver.find_element(By.ID, "f-type").send_keys("sleep")
    driver.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    expected = api("GET", "/api/jobs?jobStatus=COMPLETED&type=sleep")["page"]["totalElements"]
    wait(driver, "the filtered total", lambda d: (d.find_elements(By.ID, "total") or [None])[0] is not None and d.find_element(By.ID, "total").get_attribute("data-total") == str(expected))
    # A phone's width.
    driver.set_window_size(390, 844)
    open_view(driver, "/jobs")
    wait(driver, "the job list", lambda d: d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr"))
    shot(driver, "jobs-phone")
    driver.set_window_size(1280, 800)


def retry_every_match_of_a_filter(driver):
    ids = [api("POST", "/api/jobs", {"type": "flaky", "jobPriority": "MEDIUM", "maxRetries": 0, "payload": {"failTimes": 1}})["id"] for _ in range(3)]
    for job_id in ids:
        wait_api("a flaky job to fail", lambda: (terminal(job_id) or {}).get("jobStatus") == "FAILED")
    open_view(driver, "/jobs?jobStatus=FAILED&type=flaky")
    wait(driver, "the 3 FAILED jobs", lambda d: d.find_element(By.ID, "total").get_attribute("data-total") == "3")
    driver.find_element(By.ID, "retry-all").click()
    wait(driver, "the confirmation", lambda d: "again" in d.find_element(By.ID, "retry-all").text)
    driver.find_element(By.ID, "retry-all").click()
    for job_id in ids:
        job = wait_api("a job retried by the filter to complete", lambda: (lambda j: j if j and j["jobStatus"] == "COMPLETED" else None)(terminal(job_id)))
        assert job["attempt"] == 2, job


CONTRAST = """
const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
const luminance = (c) => 0.2126 * channel(c[0]) + 0.7152 * channel(c[1]) + 0.0722 * channel(c[2]);
const rgba = (text) => { const n = text.match(/[\d.]+/g).map(Number); return n.length === 3 ? [...n, 1] : n; };
const background = (element) => {
  for (let e = element; e; e = e.parentElement) {
    const c = rgba(getComputedStyle(e).backgroundColor);
    if (c[3] > 0) return c;
  }
  return [255, 255, 255, 1];
};
const low = [];
for (const element of document.querySelectorAll("body *")) {
  if (!element.getClientRects().length || element.closest("[hidden], dialog:not([open])")) continue;
  if (![...element.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
  if (element.closest(":disabled")) continue;
  const style = getComputedStyle(element);
  const size = parseFloat(style.fontSize);
  const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
  const a = luminance(rgba(style.color)), b = luminance(background(element));
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  if (ratio < (large ? 3 : 4.5)) low.push(`${element.tagName} "${element.textContent.trim().slice(0, 30)}": ${ratio.toFixed(2)}`);
}
return low;
"""


def text_contrast_passes_wcag_aa(driver):
    for view in ("/overview", "/jobs", "/dead-letters", "/workers", "/cluster", "/submit"):
        open_view(driver, view)
        wait(driver, f"{view} to render", lambda d: not d.find_elements(By.XPATH, "//main//p[text()='Loading…']"))
        low = driver.execute_script(CONTRAST)
        assert not low, f"text below WCAG AA contrast on {view}: {low}"


def keyboard_reaches_every_section(driver):
    """Each view puts the focus on its content; Shift+Tab from there walks back through the
    navigation to the skip link, and Enter on a section's link opens it."""
    open_view(driver, "/overview")
    wait(driver, "the page", lambda d: d.find_elements(By.ID, "status-counts"))
    seen = []
    for _ in range(20):
        ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
        seen.append(driver.switch_to.active_element.text)
        if seen[-1] == "Skip to content":
            break
    for section in ("Overview", "Jobs", "Dead letters", "Workers", "Cluster", "Submit", "Skip to content"):
        assert section in seen, f"Shift+Tab never reached {section!r}: {seen}"
    for _ in range(12):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        if driver.switch_to.active_element.text == "Dead letters":
            break
    assert driver.switch_to.active_element.text == "Dead letters", "Tab does not reach the navigation"
    ActionChains(driver).send_keys(Keys.ENTER).perform()
    wait(driver, "the dead-letter view by keyboard", lambda d: d.current_url.endswith("#/dead-letters"))


def workers_and_cluster_show(driver):
    open_view(driver, "/workers")
    wait(driver, "a worker", lambda d: d.find_elements(By.CSS_SELECTOR, "#workers tbody tr"))
    shot(driver, "workers")
    open_view(driver, "/cluster")
    wait(driver, "the leader", lambda d: "leader" in (text_of(d, "#cluster tbody") or ""))


def leader_shown(driver):
    rows = driver.find_elements(By.CSS_SELECTOR, "#cluster tbody tr")
    leaders = [row.get_attribute("data-node") for row in rows if row.find_elements(By.CSS_SELECTOR, ".leader")]
    return leaders[0] if len(leaders) == 1 else None


def cluster_marks_the_new_leader(driver, signals):
    open_view(driver, "/cluster")
    old = wait(driver, "a leader marked", leader_shown)
    shot(driver, "cluster")
    with open(f"{signals}/leader", "w") as out:
        out.write(old)
    end = time.time() + DEADLINE
    while not os.path.exists(f"{signals}/killed"):
        assert time.time() < end, "the test did not kill the leader"
        time.sleep(0.1)
    killed_at = time.time()
    new = wait(driver, "another leader marked", lambda d: (lambda n: n if n and n != old else None)(leader_shown(d)), deadline=30)
    print(f"dashboard: leader {old} killed, {new} marked after {time.time() - killed_at:.1f} s")
    wait(driver, "the old leader unreachable", lambda d: d.find_elements(By.CSS_SELECTOR, "#cluster tbody tr:not([data-node])"))
    shot(driver, "cluster-failover")


def keys_decide_what_the_page_offers(driver, client_key):
    """A gateway with keys and public reads: without a key the page reads but offers no action;
    with a client key it offers them, and they work."""
    job_id = requests.post(f"{GATEWAY}/api/jobs", json={"type": "flaky", "jobPriority": "HIGH", "maxRetries": 0, "payload": {"failTimes": 1}},
                           headers={"Authorization": f"Bearer {client_key}"}, timeout=30).json()["id"]
    wait_api("the flaky job to fail", lambda: (terminal(job_id) or {}).get("jobStatus") == "FAILED")
    open_view(driver, f"/jobs/{job_id}")
    wait(driver, "the job, FAILED", lambda d: text_of(d, "#job-status") == "FAILED")
    assert not driver.find_elements(By.ID, "retry"), "without a key the page offers Retry"
    assert "no key" in (text_of(driver, "#roles") or ""), text_of(driver, "#roles")
    open_view(driver, "/submit")
    wait(driver, "the submit view", lambda d: "may not submit" in d.find_element(By.ID, "main").text)
    driver.find_element(By.ID, "key-button").click()
    wait(driver, "the key dialog", lambda d: d.find_element(By.ID, "key-dialog").is_displayed())
    shot(driver, "key")
    driver.find_element(By.ID, "key-input").send_keys(client_key)
    driver.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
    wait(driver, "the dialog to close", lambda d: not d.find_element(By.ID, "key-dialog").is_displayed())
    assert "client" in (text_of(driver, "#roles") or ""), text_of(driver, "#roles")
    open_view(driver, f"/jobs/{job_id}")
    wait(driver, "Retry for a client key", lambda d: d.find_elements(By.ID, "retry"))
    driver.find_element(By.ID, "retry").click()
    wait(driver, "COMPLETED after the retry", lambda d: text_of(d, "#job-status") == "COMPLETED")


def main():
    driver = browser()
    try:
        if MODE == "serve":
            open_view(driver, "/overview")
            wait(driver, "the page", lambda d: d.find_elements(By.TAG_NAME, "h1"))
            overview_counts_match_the_api(driver)
            submitted_job_completes_on_its_page(driver)
            bad_payload_is_refused_in_the_form(driver)
            failed_job_retried_from_its_page_runs_again(driver)
            dead_letter_group_retry_reruns_every_job(driver)
            filters_and_paging_show_what_the_api_shows(driver)
            retry_every_match_of_a_filter(driver)
            workers_and_cluster_show(driver)
            text_contrast_passes_wcag_aa(driver)
            keyboard_reaches_every_section(driver)
        elif MODE == "cluster":
            cluster_marks_the_new_leader(driver, sys.argv[4])
        elif MODE == "keys":
            HEADERS["Authorization"] = f"Bearer {sys.argv[4]}"
            keys_decide_what_the_page_offers(driver, sys.argv[4])
        else:
            raise SystemExit(f"unknown mode {MODE}")
        check_console_and_network(driver)
    finally:
        driver.quit()
    print("dashboard: every check passed")


if __name__ == "__main__":
    main()
