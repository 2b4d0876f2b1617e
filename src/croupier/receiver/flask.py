"""Flask helper: a view decorator that verifies the request and drops duplicates.

::

    from flask import Flask
    from croupier.receiver import Event, SQLiteDedupe, Verifier
    from croupier.receiver.flask import verify_webhook

    @app.post("/webhooks")
    @verify_webhook(Verifier("standard", SECRET), SQLiteDedupe("seen.db"))
    def webhooks(event: Event):
        ...
        return {"ok": True}
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec

from flask import Response, jsonify, make_response, request
from flask.typing import ResponseReturnValue

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


def verify_webhook(
    verifier: Verifier, dedupe: Dedupe | None = None
) -> Callable[[Callable[Concatenate[Event, P], ResponseReturnValue]], Callable[P, Response]]:
    """Decorate a Flask view; it is called as ``view(event, **url_values)``.

    - verification fails: 400 (401 for bearer) with ``{"error", "message"}``; the view
      does not run;
    - with ``dedupe``, an id already claimed: 200 ``{"duplicate": true, "id": ...}``; the
      view does not run;
    - the view raises, or answers anything but a 2xx: the id is released, so the retry
      croupier sends is handled.
    """

    def decorator(
        view: Callable[Concatenate[Event, P], ResponseReturnValue],
    ) -> Callable[P, Response]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
            # The raw bytes, never request.json re-serialised: the signature covers bytes.
            body = request.get_data(cache=True)
            try:
                event = verifier.verify(request.headers, body)
            except VerificationError as exc:
                refusal = jsonify(failure_body(exc))
                refusal.status_code = verifier.failure_status
                refusal.headers.update(failure_headers(verifier))
                return refusal
            response = handle_once(
                dedupe,
                event,
                lambda: make_response(view(event, *args, **kwargs)),
                lambda r: r.status_code,
            )
            if response is None:
                duplicate = jsonify(duplicate_body(event))
                duplicate.status_code = DUPLICATE_STATUS
                return duplicate
            return response

        return wrapper

    return decorator
