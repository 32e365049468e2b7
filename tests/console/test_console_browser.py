"""The console in a real browser: headless Chromium (Debian `chromium` + `chromium-driver`) driven by Selenium,
against the local stack. Calls are placed through the emulator's control API.

Screenshots of the main views go to `.artifacts/console/` (git-ignored) for CI to keep.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localrun.stack import ROOT
from tests.console.conftest import Console

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if not (CHROMIUM and DRIVER) and os.environ.get("CI"):
    # .ci/run installs both: in CI a missing browser is a broken install, not a reason to skip the browser tests.
    raise RuntimeError("CI: chromium or chromedriver is missing (.ci/run installs chromium and chromium-driver)")
if not (CHROMIUM and DRIVER):
    pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)

ARTIFACTS = ROOT / ".artifacts" / "console"
WAIT_S = 30  # generous: a loaded 2-core machine


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def shot(driver: webdriver.Chrome, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def wait(driver: webdriver.Chrome, condition, timeout: float = WAIT_S):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def sign_in(driver: webdriver.Chrome, console: Console) -> None:
    driver.get(console.base)
    driver.execute_script("sessionStorage.clear()")  # each test signs in from scratch
    driver.refresh()
    key = wait(driver, EC.visibility_of_element_located((By.ID, "key")))
    key.send_keys(console.stack.function_key)
    driver.find_element(By.CSS_SELECTOR, "#keyform button[type=submit]").click()
    wait(driver, EC.visibility_of_element_located((By.ID, "view-live")))


def test_a_wrong_key_shows_nothing(browser, console: Console) -> None:
    browser.get(console.base)
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    wait(browser, EC.visibility_of_element_located((By.ID, "key"))).send_keys("not-the-key")
    browser.find_element(By.CSS_SELECTOR, "#keyform button[type=submit]").click()
    wait(browser, lambda d: d.execute_script("return sessionStorage.length") == 0)
    assert browser.find_element(By.ID, "signin").is_displayed()
    assert not browser.find_element(By.ID, "view-live").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "#live-table tbody tr") == []
    shot(browser, "signin")


def test_watch_calls_follow_a_transcript_hang_up_and_find_it_in_history(browser, console: Console) -> None:
    sign_in(browser, console)
    ids = [console.place(caller=f"+1425555{n:04d}") for n in (1001, 1002)]
    # How long after the app lists a call the page shows it (the page polls every second; the issue asks <= 2 s).
    console.wait("the app lists both calls", lambda: set(ids) <= {c["call_id"] for c in console.get(
        "live")[1]["calls"]}, every=0.02)
    listed = time.monotonic()
    rows = {i: wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, f"tr[data-call-id='{i}']")))
            for i in ids}
    shown = time.monotonic() - listed
    print(f"calls shown {shown:.2f} s after the app listed them (poll 1 s; goal <= 2 s)")
    assert len(rows) == 2 and shown <= 2.0 + 4.0  # slack for a loaded 2-core machine; the figure is printed
    page = browser.page_source
    assert "+1425***1001" in page and "42555551001" not in page and "4255551001" not in page

    # Open the first call and follow its transcript while the caller keeps talking.
    target = ids[0]
    browser.find_element(By.CSS_SELECTOR, f"tr[data-call-id='{target}'] button").click()
    wait(browser, EC.visibility_of_element_located((By.ID, "call")))
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#transcript li.caller")) >= 1)
    first = len(browser.find_elements(By.CSS_SELECTOR, "#transcript li"))
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#transcript li")) > first)  # it grows live
    options = [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#target option")]
    assert options == ["sales", "support"]
    shot(browser, "live")

    # Hang up from the page: a confirmation first; dismissing it does nothing.
    browser.find_element(By.ID, "hangup").click()
    wait(browser, EC.alert_is_present()).dismiss()
    assert console.emulator(target)["state"] != "ended"
    browser.find_element(By.ID, "hangup").click()
    alert = wait(browser, EC.alert_is_present())
    assert "Hang up" in alert.text and "+1425***1001" in alert.text
    alert.accept()
    console.wait("the emulator saw the hangup", lambda: console.emulator(target)["state"] == "ended")
    wait(browser, EC.invisibility_of_element_located((By.CSS_SELECTOR, f"tr[data-call-id='{target}']")))
    assert "ended" in browser.find_element(By.ID, "call-meta").text

    # The other call is still there; end it at the emulator so it does not outlive the test.
    assert browser.find_elements(By.CSS_SELECTOR, f"tr[data-call-id='{ids[1]}']")
    console.hang_up_at_emulator(ids[1])

    # History: the hung-up call, then its timeline and transcript.
    browser.find_element(By.CSS_SELECTOR, ".tab[data-view=history]").click()
    row = f"#history-table tr[data-call-id='{target}']"

    def found(d):
        if d.find_elements(By.CSS_SELECTOR, row):
            return True
        d.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()  # search again: the record lands
        return False

    wait(browser, found)
    browser.find_element(By.ID, "f-outcome").send_keys("completed")
    browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, row))
    shot(browser, "history")
    browser.find_element(By.CSS_SELECTOR, f"{row} button").click()
    wait(browser, EC.visibility_of_element_located((By.ID, "record")))
    timeline = browser.find_element(By.ID, "timeline").text
    assert "accepted with profile reception" in timeline and "Greeting started" in timeline
    assert "Ended by operator" in timeline
    assert browser.find_elements(By.CSS_SELECTOR, "#record-transcript li")
    shot(browser, "record")

    browser.find_element(By.CSS_SELECTOR, ".tab[data-view=charts]").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-hour svg rect"))
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-greet svg rect")
    assert "operator" in browser.find_element(By.ID, "chart-reasons").get_attribute("innerHTML")
    shot(browser, "charts")


def test_keyboard_reaches_the_views(browser, console: Console) -> None:
    sign_in(browser, console)
    tabs = browser.find_elements(By.CSS_SELECTOR, ".tab")
    tabs[1].send_keys("\n")  # Enter on a focused button
    wait(browser, EC.visibility_of_element_located((By.ID, "view-history")))
    assert tabs[1].get_attribute("aria-pressed") == "true"
    for control in browser.find_elements(By.CSS_SELECTOR, "#filters input, #filters select"):
        label = browser.find_elements(By.CSS_SELECTOR, f"label[for='{control.get_attribute('id')}']")
        assert label, f"{control.get_attribute('id')} has no label"
