"""The Prometheus endpoint and the health check.

Who may read /metrics (it names every task and worker, and shows how busy
the system is):
- a staff user with an admin session (a person looking from the browser);
- whoever sends `Authorization: Bearer <METRICS_TOKEN>` (Prometheus);
- with DEBUG on and no METRICS_TOKEN set, any client on loopback (a
  Prometheus on the developer's machine). Never otherwise: behind a reverse
  proxy on the same host every request comes from loopback.
Anyone else gets 401.
"""

import hmac
import ipaddress

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ops.metrics import registry


def metrics_allowed(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff:
        return True
    token = settings.OPS_METRICS_TOKEN
    if token:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        # Constant-time comparison: the token must not leak one byte at a time.
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode())
    return settings.DEBUG and _is_loopback(request.META.get("REMOTE_ADDR", ""))


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@require_GET
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        response = HttpResponse("Metrics need a staff session or the METRICS_TOKEN bearer token.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)


@require_GET
@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    """200 when this process can reach its database: what a container
    healthcheck and a load balancer ask. Says nothing else, to anyone."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return HttpResponse("ok\n", content_type="text/plain")
