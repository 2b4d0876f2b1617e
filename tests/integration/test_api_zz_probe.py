from __future__ import annotations
import base64, orjson
import httpx
from croupier.bootstrap import Container


async def _gen(n: int):
    for _ in range(n):
        yield b"x" * 65536


async def test_probe(container: Container, backend: str) -> None:
    from croupier.api.rest.app import create_app
    from tests.conftest import ADMIN_KEY
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(container), raise_app_exceptions=False), base_url="http://t", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    out = []
    big = b'{"type":"PLAYER_OPTED_IN","data":{"pad":"' + b"x" * 300000 + b'"}}'
    r = await client.post("/v1/events", content=big, headers={"content-type": "application/json"})
    out.append(("413 cl", r.status_code, r.text[:200], dict(r.headers)))
    r = await client.post(
        "/v1/events", content=_gen(5), headers={"content-type": "application/json"}
    )
    out.append(("413 chunked", r.status_code, r.text[:200], dict(r.headers)))
    r = await client.delete("/v1/events")
    out.append(("405", r.status_code, r.text[:200], dict(r.headers)))
    r = await client.post("/v1/events", content=b"", headers={"content-type": "application/json"})
    out.append(("empty", r.status_code, r.text[:200]))
    r = await client.post(
        "/v1/events", content=b"{bad", headers={"content-type": "application/json"}
    )
    out.append(("malformed", r.status_code, r.text[:200]))
    r = await client.post(
        "/v1/events", content=b'{"type":"x","data":{}}', headers={"content-type": "text/plain"}
    )
    out.append(("415", r.status_code, r.text[:200]))
    cur = base64.urlsafe_b64encode(orjson.dumps({"p": 2**64 - 1})).decode().rstrip("=")
    r = await client.get("/v1/events", params={"cursor": cur})
    out.append(("huge cursor", r.status_code, r.text[:200], dict(r.headers)))
    cur = base64.urlsafe_b64encode(orjson.dumps({"p": "\u0000"})).decode().rstrip("=")
    r = await client.get("/v1/endpoints", params={"cursor": cur})
    out.append(("nul cursor", r.status_code, r.text[:200]))
    r = await client.get("/v1/endpoints/a%00b")
    out.append(("nul path", r.status_code, r.text[:200]))
    r = await client.post(
        "/v1/endpoints", json={"url": "http://x.test/", "description": "a\u0000b"}
    )
    out.append(("nul desc", r.status_code, r.text[:200]))
    r = await client.put("/v1/event-types/my.type", json={"schema": {"$ref": "#/$defs/missing"}})
    out.append(("dangling put", r.status_code, r.text[:200]))
    r = await client.post("/v1/events", json={"type": "my.type", "data": {}})
    out.append(("dangling pub", r.status_code, r.text[:200]))
    r = await client.post(
        "/v1/events",
        json={
            "type": "PLAYER_OPTED_IN",
            "data": {"player_id": "p", "campaign_id": "c", "event_type": "PLAYER_OPTED_IN"},
            "occurred_at": "0001-01-01T00:00:00+14:00",
        },
    )
    out.append(("year1 pub", r.status_code, r.text[:200]))
    r = await client.get("/v1/events")
    out.append(("year1 list", r.status_code, r.text[:200]))
    r = await client.post("/v1/nope")
    out.append(("unknown", r.status_code, r.text[:200]))
    r = await client.get("/v1/events", headers={"authorization": ""})
    out.append(("noauth", r.status_code, r.text[:200], dict(r.headers)))
    with open(f"/tmp/probe/{backend}.txt", "w") as f:
        for o in out:
            f.write(repr(o) + "\n")
