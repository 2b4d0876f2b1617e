"""A single-file Django receiver for croupier's webhooks: verifies, drops duplicates, prints.

Run it (from the repository root, with croupier and Django installed)::

    CROUPIER_WEBHOOK_SECRET=whsec_... PORT=9000 python examples/django_receiver.py

and create an endpoint with the url ``http://127.0.0.1:9000/webhooks``. Environment:

- ``CROUPIER_WEBHOOK_SECRET`` (required): the endpoint's secret; the ``whpk_`` public key for
  ed25519. During a rotation give the old and the new one, separated by a space.
- ``CROUPIER_WEBHOOK_DIALECT``: standard (default), ed25519, hmac-hex or bearer.
- ``CROUPIER_WEBHOOK_HEADER_PREFIX``: hmac-hex only, the ``{Prefix}`` of
  ``X-{Prefix}-Signature`` (default ``Croupier``).
- ``PORT`` (default 9000) and ``HOST`` (default 127.0.0.1); ``DJANGO_ALLOWED_HOSTS``, the
  host names of the endpoint url (default ``127.0.0.1 localhost``).

In a project, the view goes in ``views.py``, the middleware in ``MIDDLEWARE`` and the route in
``urls.py``; here all three sit in one file, served by ``runserver``. Event ids already
handled are kept in ``webhooks-seen.db`` in the working directory. One line is printed per
request: ``accepted <type> <id> attempt=<n> <data>``, ``duplicate <id>`` or
``refused <status> <kind>: <why>``.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import sys
from collections.abc import Callable
from typing import cast

import django  # type: ignore[import-untyped, unused-ignore]
from django.conf import settings  # type: ignore[import-untyped, unused-ignore]
from django.core.management import (  # type: ignore[import-untyped, unused-ignore]
    execute_from_command_line,
)
from django.http import (  # type: ignore[import-untyped, unused-ignore]
    HttpRequest,
    HttpResponseBase,
    JsonResponse,
)
from django.urls import path  # type: ignore[import-untyped, unused-ignore]

from croupier.receiver import DIALECTS, Dialect, Event, SQLiteDedupe, Verifier
from croupier.receiver.django import verify_webhook

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ.get("PORT", "9000"))

settings.configure(
    DEBUG=False,
    # Nothing here signs cookies or sessions; Django only insists on having a key.
    SECRET_KEY=secrets.token_urlsafe(32),
    # The Host names this receiver answers to; croupier sends the one in the endpoint url.
    ALLOWED_HOSTS=os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1 localhost").split(),
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[f"{__name__}.report"],
    INSTALLED_APPS=[],
    USE_TZ=True,
)
django.setup()


def verifier_from_env() -> Verifier:
    """The endpoint's verifier, from the environment; exits with a message if unusable."""
    keys = os.environ.get("CROUPIER_WEBHOOK_SECRET", "").split()
    dialect = os.environ.get("CROUPIER_WEBHOOK_DIALECT", "standard")
    if not keys:
        raise SystemExit("set CROUPIER_WEBHOOK_SECRET to the endpoint's secret")
    if dialect not in DIALECTS:
        raise SystemExit(f"CROUPIER_WEBHOOK_DIALECT must be one of {', '.join(DIALECTS)}")
    try:
        return Verifier(
            cast(Dialect, dialect),
            secrets=keys,
            header_prefix=os.environ.get("CROUPIER_WEBHOOK_HEADER_PREFIX", "Croupier"),
        )
    except ValueError as exc:  # the message names the problem, never the key
        raise SystemExit(f"CROUPIER_WEBHOOK_SECRET: {exc}") from None


verifier = verifier_from_env()
seen = SQLiteDedupe("webhooks-seen.db")
atexit.register(seen.close)


@verify_webhook(verifier, seen)
def webhooks(request: HttpRequest, event: Event) -> HttpResponseBase:
    """Runs once per event: store or enqueue it here, and answer fast."""
    data = json.dumps(event.data, ensure_ascii=False)
    print(f"accepted {event.type} {event.id} attempt={event.attempt} {data}", flush=True)
    return JsonResponse({"ok": True})


def report(
    get_response: Callable[[HttpRequest], HttpResponseBase],
) -> Callable[[HttpRequest], HttpResponseBase]:
    """Middleware: print the requests the decorator answered itself (duplicates, refusals)."""

    def middleware(request: HttpRequest) -> HttpResponseBase:
        response = get_response(request)
        if request.path == "/webhooks" and response.get("Content-Type") == "application/json":
            answer = json.loads(response.content)
            if answer.get("duplicate"):
                print(f"duplicate {answer['id']}", flush=True)
            elif "error" in answer:
                status = response.status_code
                print(f"refused {status} {answer['error']}: {answer['message']}", flush=True)
        return response

    return middleware


urlpatterns = [path("webhooks", webhooks)]


if __name__ == "__main__":
    # --noreload: one process, so the dedupe file and Ctrl-C behave plainly.
    execute_from_command_line([sys.argv[0], "runserver", f"{HOST}:{PORT}", "--noreload"])
