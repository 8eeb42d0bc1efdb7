# The web page's browser tests (tests/gateway/test_webpage_browser.py) drive Debian's
# chromium through Debian's chromedriver with Selenium: nothing is downloaded at test time.

# Tests find the binaries at /usr/bin, on PATH, or through CHROMIUM_BIN / CHROMEDRIVER_BIN.

.PHONY: browser-bin

# apt-get, only as root and only what is missing, never failing: without the binaries the
# browser tests skip, saying how to install them.
browser-bin: ## Install Chromium and ChromeDriver for the web page's browser tests (apt-get, when root)
	@scripts/apt-install-missing.sh browser-bin "chromium chromedriver" "chromium chromium-driver" \
		"The web page's browser tests will skip."

test: browser-bin
