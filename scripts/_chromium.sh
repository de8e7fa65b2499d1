# Sourced by scripts/test.sh: the documentation test renders the site in a
# headless browser, Debian's chromium (browsers cannot be downloaded at run time).
if ! command -v chromium >/dev/null 2>&1; then
    echo "installing Debian's chromium (for the documentation's browser test)..." >&2
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
