"""Retake the README screenshots from a running demo (make demo, then submit some drafts).

    .venv/bin/python docs/img/screenshots.py http://127.0.0.1:8000 clinician PASSWORD
"""

import sys

from playwright.sync_api import sync_playwright

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def main(base: str, username: str, password: str) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(locale="zh-CN", viewport={"width": 1360, "height": 860})
        page.goto(f"{base}/accounts/login/")
        page.fill("#id_username", username)
        page.fill("#id_password", password)
        page.click("button[type=submit]")
        page.goto(f"{base}/curation/review/")
        page.screenshot(path="docs/img/review-queue.png")
        page.goto(f"{base}/curation/pairs/?has_identifiers=true")
        page.locator("#pair-list tbody tr[data-pair] td a").first.click()
        page.wait_for_selector("#review-form")
        page.screenshot(path="docs/img/screenshot.png", full_page=False)
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
