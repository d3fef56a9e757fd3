"""A tiny HTTP client for the tests that talk to Flower."""

import base64
import json
import urllib.error
import urllib.request


def http_get(url: str, *, login: tuple[str, str] | None = None, timeout: float = 10):
    """(status, parsed JSON or text) of a GET; error statuses are answers too."""
    request = urllib.request.Request(url)
    if login:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(login).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")
