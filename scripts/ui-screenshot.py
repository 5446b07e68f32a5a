"""Screenshot of a batch in `netrain ui` (headless Debian Chromium), as in the README:
    python scripts/ui-screenshot.py URL OUT.png
URL is what `netrain ui BATCH` printed; every task's run is expanded to show its networks."""

import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def main(url: str, out: str) -> None:
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1400,820"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        d.get(url)
        deadline = time.monotonic() + 60
        while "matching runs" not in d.find_element(By.TAG_NAME, "body").text:
            if time.monotonic() > deadline:
                raise SystemExit("the runs table did not appear")
            time.sleep(0.5)
        for b in d.find_elements(By.CSS_SELECTOR, "button[aria-label=Close]"):
            d.execute_script("arguments[0].click()", b)  # the assistant's side panel
        for b in d.find_elements(By.CSS_SELECTOR,
                                 "button[data-component-id*='runnamecellrenderer']")[:2]:
            d.execute_script("arguments[0].click()", b)  # expand a task's run
        time.sleep(2)
        d.save_screenshot(out)
    finally:
        d.quit()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
