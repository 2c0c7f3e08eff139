"""Settings every test process shares."""

import os

# `virtualdom serve` processes the tests start would otherwise all bind the HTTP port's default,
# 127.0.0.1:8080 (and fail when another test, or anything else on the machine, holds it).
os.environ.setdefault("VIRTUALDOM_HTTP_ADDRESS", "127.0.0.1:0")
