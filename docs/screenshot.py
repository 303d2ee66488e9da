"""Render a report page in headless Chromium and save the top of it as a PNG (for the README).

python docs/screenshot.py studies/digits/report.html docs/report.png [--height 1500]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from selenium import webdriver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("page", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=1500)
    args = parser.parse_args()
    options = webdriver.ChromeOptions()
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--window-size={args.width},{args.height}",
    ):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    try:
        driver.get(args.page.resolve().as_uri())
        driver.save_screenshot(str(args.png))
    finally:
        driver.quit()
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
