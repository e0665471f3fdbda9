"""Opens the live page of `weir serve` in Debian's chromium (headless, driven by Playwright)
and reports what a person would see, as JSON on stdout: the pipelines listed, the graph's
nodes, and each chart's points and last epoch twice, `wait` seconds apart, plus every console
error and uncaught exception. The page asks for the server's token: the prompt is answered
with TOKEN, and how many times it asked is reported. Takes a screenshot on the way.

Usage: watch.py URL PIPELINE SCREENSHOT WAIT_SECONDS TOKEN
"""

import json
import sys
import time

from playwright.sync_api import sync_playwright

CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def charts(page):
    return page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#charts figure')].map(f =>
            [f.id, {points: Number(f.dataset.points), last_epoch: Number(f.dataset.lastEpoch || -1)}]))"""
    )


def main():
    url, pipeline, screenshot, wait, token = sys.argv[1:6]
    wait = float(wait)
    errors = []
    dialogs = []

    def answer(dialog):
        dialogs.append(dialog.message)
        dialog.accept(token)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", answer)
        page.goto(f"{url}/#{pipeline}")
        page.wait_for_selector(f'#pipelines tr[data-name="{pipeline}"]', timeout=30_000)
        page.wait_for_function(
            "() => Number(document.querySelector('#chart-input')?.dataset.points) > 0",
            timeout=60_000,
        )
        before = charts(page)
        time.sleep(wait)
        after = charts(page)
        page.screenshot(path=screenshot, full_page=True)
        report = {
            "listed": page.eval_on_selector_all("#pipelines tr[data-name]", "rs => rs.map(r => r.dataset.name)"),
            "states": page.eval_on_selector_all("#pipelines .state", "ss => ss.map(s => s.textContent)"),
            "graph": page.eval_on_selector_all("#dag g.node", "gs => gs.map(g => g.dataset.name)"),
            "edges": page.eval_on_selector_all("#dag path.edge", "es => es.length"),
            "before": before,
            "after": after,
            "errors": errors,
            "dialogs": len(dialogs),
            "page_errors": int(page.evaluate("document.body.dataset.errors")),
        }
        browser.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
