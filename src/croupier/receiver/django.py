"""Django helper: a view decorator that verifies the request and drops duplicates.

::

    from croupier.receiver import Event, SQLiteDedupe, Verifier
    from croupier.receiver.django import verify_webhook

    @verify_webhook(Verifier("standard", SECRET), SQLiteDedupe("seen.db"))
    def webhooks(request, event: Event):
        ...
        return JsonResponse({"ok": True})

The decorated view is exempt from CSRF checks: croupier cannot send a CSRF token, and the
signature is what authenticates the request. Sync views only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec

from django.http import (  # type: ignore[import-untyped, unused-ignore]
    HttpRequest,
    HttpResponseBase,
    JsonResponse,
)
from django.views.decorators.csrf import (  # type: ignore[import-untyped, unused-ignore]
    csrf_exempt,
)

from croupier.receiver._http import (
    DUPLICATE_STATUS,
    duplicate_body,
    failure_body,
    failure_headers,
    handle_once,
)
from croupier.receiver.dedupe import Dedupe
from croupier.receiver.errors import VerificationError
from croupier.receiver.event import Event
from croupier.receiver.verify import Verifier

__all__ = ["verify_webhook"]

P = ParamSpec("P")
View = Callable[Concatenate[HttpRequest, Event, P], HttpResponseBase]


def verify_webhook(
    verifier: Verifier, dedupe: Dedupe | None = None
) -> Callable[[View[P]], Callable[Concatenate[HttpRequest, P], HttpResponseBase]]:
    """Decorate a Django view; it is called as ``view(request, event, *args, **kwargs)``.

    - verification fails: 400 (401 for bearer) with ``{"error", "message"}``; the view
      does not run;
    - with ``dedupe``, an id already claimed: 200 ``{"duplicate": true, "id": ...}``; the
      view does not run;
    - the view raises, or answers anything but a 2xx: the id is released, so the retry
      croupier sends is handled.
    """

    def decorator(view: View[P]) -> Callable[Concatenate[HttpRequest, P], HttpResponseBase]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: P.args, **kwargs: P.kwargs) -> HttpResponseBase:
            # request.body is the raw bytes; the signature covers them, not parsed JSON.
            try:
                event = verifier.verify(request.headers, request.body)
            except VerificationError as exc:
                return JsonResponse(
                    failure_body(exc),
                    status=verifier.failure_status,
                    headers=failure_headers(verifier),
                )
            response = handle_once(
                dedupe,
                event,
                lambda: view(request, event, *args, **kwargs),
                lambda r: int(r.status_code),
            )
            if response is None:
                return JsonResponse(duplicate_body(event), status=DUPLICATE_STATUS)
            return response

        exempt: Callable[Concatenate[HttpRequest, P], HttpResponseBase] = csrf_exempt(wrapper)
        return exempt

    return decorator
