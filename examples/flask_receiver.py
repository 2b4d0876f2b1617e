"""A Flask receiver for croupier's webhooks: verifies, drops duplicates, prints each event.

Run it (from the repository root, with croupier and Flask installed)::

    CROUPIER_WEBHOOK_SECRET=whsec_... PORT=9000 python examples/flask_receiver.py

and create an endpoint with the url ``http://127.0.0.1:9000/webhooks``. Environment:

- ``CROUPIER_WEBHOOK_SECRET`` (required): the endpoint's secret; the ``whpk_`` public key for
  ed25519. During a rotation give the old and the new one, separated by a space.
- ``CROUPIER_WEBHOOK_DIALECT``: standard (default), ed25519, hmac-hex or bearer.
- ``CROUPIER_WEBHOOK_HEADER_PREFIX``: hmac-hex only, the ``{Prefix}`` of
  ``X-{Prefix}-Signature`` (default ``Croupier``).
- ``PORT`` (default 9000) and ``HOST`` (default 127.0.0.1).

This runs Flask's development server; in production serve ``app`` with a WSGI server
(``gunicorn 'flask_receiver:app'``). Event ids already handled are kept in
``webhooks-seen.db`` in the working directory, shared by every worker process of the host.
One line is printed per request: ``accepted <type> <id> attempt=<n> <data>``,
``duplicate <id>`` or ``refused <status> <kind>: <why>``.
"""

from __future__ import annotations

import atexit
import json
import os
from typing import cast

from flask import Flask, Response, request

from croupier.receiver import DIALECTS, Dialect, Event, SQLiteDedupe, Verifier
from croupier.receiver.flask import verify_webhook


def verifier_from_env() -> Verifier:
    """The endpoint's verifier, from the environment; exits with a message if unusable."""
    secrets = os.environ.get("CROUPIER_WEBHOOK_SECRET", "").split()
    dialect = os.environ.get("CROUPIER_WEBHOOK_DIALECT", "standard")
    if not secrets:
        raise SystemExit("set CROUPIER_WEBHOOK_SECRET to the endpoint's secret")
    if dialect not in DIALECTS:
        raise SystemExit(f"CROUPIER_WEBHOOK_DIALECT must be one of {', '.join(DIALECTS)}")
    try:
        return Verifier(
            cast(Dialect, dialect),
            secrets=secrets,
            header_prefix=os.environ.get("CROUPIER_WEBHOOK_HEADER_PREFIX", "Croupier"),
        )
    except ValueError as exc:  # the message names the problem, never the key
        raise SystemExit(f"CROUPIER_WEBHOOK_SECRET: {exc}") from None


app = Flask(__name__)
verifier = verifier_from_env()
seen = SQLiteDedupe("webhooks-seen.db")
atexit.register(seen.close)


@app.post("/webhooks")
@verify_webhook(verifier, seen)
def webhooks(event: Event) -> dict[str, bool]:
    """Runs once per event: store or enqueue it here, and answer fast."""
    data = json.dumps(event.data, ensure_ascii=False)
    print(f"accepted {event.type} {event.id} attempt={event.attempt} {data}", flush=True)
    return {"ok": True}


@app.after_request
def report(response: Response) -> Response:
    """Print the requests the decorator answered itself: duplicates and refusals."""
    if request.path == "/webhooks":
        answer = response.get_json(silent=True)
        if isinstance(answer, dict) and answer.get("duplicate"):
            print(f"duplicate {answer['id']}", flush=True)
        elif isinstance(answer, dict) and "error" in answer:
            status = response.status_code
            print(f"refused {status} {answer['error']}: {answer['message']}", flush=True)
    return response


if __name__ == "__main__":
    app.run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "9000")))
