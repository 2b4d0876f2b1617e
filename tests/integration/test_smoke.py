from __future__ import annotations

import httpx

from croupier.bootstrap import Container
from tests.support.receiver import Receiver


async def test_a_published_event_reaches_a_subscribed_endpoint(
    client: httpx.AsyncClient, container: Container, receiver: Receiver
) -> None:
    created = await client.post(
        "/v1/endpoints", json={"url": receiver.url(), "event_types": ["PLAYER_OPTED_IN"]}
    )
    assert created.status_code == 201, created.text
    published = await client.post(
        "/v1/events",
        json={
            "type": "PLAYER_OPTED_IN",
            "data": {"player_id": "p1", "campaign_id": "c1", "event_type": "PLAYER_OPTED_IN"},
        },
    )
    assert published.status_code == 202, published.text
    assert published.json()["deliveries"] == 1
    assert await container.dispatcher.run_until_idle() == 1
    assert len(receiver.requests) == 1
