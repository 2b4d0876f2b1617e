"""The frames and messages between the dispatcher and its sender child."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from croupier.dispatch.courier import EndpointSpec, Job, Report
from croupier.dispatch.wire import (
    MAX_FRAME_BYTES,
    FrameDecoder,
    FrameError,
    encode_frame,
    endpoint_from_wire,
    endpoint_to_wire,
    job_from_wire,
    job_to_wire,
    jobs_from_wire,
    jobs_to_wire,
    reports_from_wire,
    reports_to_wire,
)
from croupier.domain.deliveries import AttemptResult
from croupier.domain.events import Event

MESSAGES: list[object] = [
    ([], [(1, "dlv_1", 1, "ep_1", 3, ("evt", "t", "x", "1.0.0", b"{}", 5, 6, None, "tr"))]),
    [(7,), (8, 1000, 12.5, 200, None, {"a": "b"}, "ok", {"webhook-id": "evt"})],
    "x" * 70_000,
]


def test_frames_fed_in_chunks_of_any_size_decode_to_the_same_messages() -> None:
    stream = b"".join(encode_frame(m) for m in MESSAGES)
    for size in (1, 2, 3, 7, 4096, len(stream)):
        decoder = FrameDecoder()
        got: list[object] = []
        for start in range(0, len(stream), size):
            got.extend(decoder.feed(stream[start : start + size]))
        assert got == MESSAGES, size


def test_an_incomplete_frame_yields_nothing_until_its_last_byte_arrives() -> None:
    frame = encode_frame(MESSAGES[1])
    decoder = FrameDecoder()
    assert decoder.feed(frame[:-1]) == []
    assert decoder.feed(frame[-1:]) == [MESSAGES[1]]


def test_a_length_over_the_limit_is_refused_as_corruption() -> None:
    with pytest.raises(FrameError):
        FrameDecoder().feed(struct.pack(">I", MAX_FRAME_BYTES + 1) + b"\x80")


def test_jobs_endpoints_and_reports_survive_the_wire_unchanged() -> None:
    event = Event(
        id="evt_1",
        tenant_id="ten_1",
        type="PLAYER_OPTED_IN",
        schema_version="1.0.0",
        data_json=b'{"n":1}',
        occurred_at_ms=1_700_000_000_000,
        created_at_ms=1_700_000_000_001,
        ordering_key="p1",
        trace_id="trace",
    )
    job = Job(5, "dlv_5", 2, "ep_1", 4, event)
    spec = EndpointSpec("ep_1", 4, "http://127.0.0.1:1/h", {"X-Key": "v"}, 500, "standard", ("s",))
    reports = [
        Report(
            5, AttemptResult(1, 2.5, 503, None, {"retry-after": "3"}, "busy"), {"a": "b"}, "att_5"
        ),
        Report(6, AttemptResult(1, 9.0, None, "timeout: no complete response"), {}, "att_6"),
        Report(7, None, {}),
    ]
    decoder = FrameDecoder()
    [(wire_spec, wire_job, wire_reports)] = decoder.feed(
        encode_frame((endpoint_to_wire(spec), job_to_wire(job), reports_to_wire(reports)))
    )
    assert endpoint_from_wire(wire_spec) == spec
    assert job_from_wire(wire_job) == job
    assert reports_from_wire(wire_reports) == reports


def test_jobs_of_one_event_carry_it_across_once_and_share_it_on_arrival() -> None:
    events = [
        Event(f"evt_{n}", "ten_1", "t", "1.0.0", b"x" * 900, 1, 2, None, None) for n in range(3)
    ]
    jobs = [Job(n, f"dlv_{n}", 1, f"ep_{n % 5}", 1, events[n // 5]) for n in range(15)]
    frame = encode_frame(jobs_to_wire(jobs))
    assert len(frame) < 3 * 900 + 15 * 100, "each event's data is written once"
    [wire] = FrameDecoder().feed(frame)
    back = jobs_from_wire(wire)
    assert back == jobs
    assert len({id(job.event) for job in back}) == 3
    # distinct but equal events stay distinct objects: sharing follows identity only
    twins = [
        Job(1, "dlv_1", 1, "ep", 1, events[0]),
        Job(2, "dlv_2", 1, "ep", 1, dataclasses.replace(events[0])),
    ]
    [wire] = FrameDecoder().feed(encode_frame(jobs_to_wire(twins)))
    assert len({id(job.event) for job in jobs_from_wire(wire)}) == 2
