"""hal.faults.FaultLatch: one DeviceFault per activation, one DeviceRecovered per clearance, and the scopes the
drivers clear with it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hal.events import EventStream, Subscription
from hal.evse_din.codec import STATUS_FAULT_CODES, EvseDinStatus, active_faults
from hal.faults import FaultLatch
from hal.interfaces import BoardEvent, DeviceFault, DeviceRecovered, FaultCode
from hal.ioboard.driver import BOARD_FAULT_CODES, faults_by_code
from hal.ioboard.messages import FaultBit

RCD, LINK, ERROR = FaultCode.RCD_TRIP, FaultCode.LINK_LOST, FaultCode.DEVICE_ERROR


def latch() -> tuple[FaultLatch, Subscription[BoardEvent]]:
    events: EventStream[BoardEvent] = EventStream()  # a driver's stream: the latch publishes its fault events
    return FaultLatch("dev", events), events.subscribe()


def drain(sub: Subscription[BoardEvent]) -> list[tuple[str, FaultCode, str]]:
    out: list[tuple[str, FaultCode, str]] = []
    while sub.pending():
        event = sub.get_nowait()
        if isinstance(event, DeviceFault):
            out.append(("fault", event.code, event.detail))
        elif isinstance(event, DeviceRecovered):
            out.append(("recovered", event.code, ""))
        assert event.device == "dev"
    return out


def test_a_fault_is_published_once_while_it_lasts_and_its_first_detail_stands() -> None:
    faults, sub = latch()
    assert faults.raise_fault(LINK, "no answer to 3 polls")
    assert not faults.raise_fault(LINK, "no answer to 4 polls")
    assert drain(sub) == [("fault", LINK, "no answer to 3 polls")]
    assert LINK in faults and faults.active == {LINK: "no answer to 3 polls"}


def test_recovery_only_for_an_active_fault_and_a_fault_after_it_is_new() -> None:
    faults, sub = latch()
    assert not faults.clear(LINK)  # never a recovery without a fault before it
    faults.raise_fault(LINK, "silent")
    assert faults.clear(LINK)
    assert not faults.clear(LINK)
    assert faults.raise_fault(LINK, "silent again")
    assert drain(sub) == [("fault", LINK, "silent"), ("recovered", LINK, ""), ("fault", LINK, "silent again")]
    assert LINK in faults


def test_codes_are_latched_independently() -> None:
    faults, sub = latch()
    faults.raise_fault(RCD, "rcd")
    faults.raise_fault(ERROR, "refused")
    faults.clear(RCD)
    assert drain(sub) == [("fault", RCD, "rcd"), ("fault", ERROR, "refused"), ("recovered", RCD, "")]
    assert faults.active == {ERROR: "refused"}


def test_causes_publish_again_when_one_joins_and_not_when_one_leaves() -> None:
    faults, sub = latch()
    assert faults.raise_causes(ERROR, ["pilot short"])
    assert not faults.raise_causes(ERROR, {"pilot short"})
    assert faults.raise_causes(ERROR, {"pilot short", "self test failed"})  # a second cause of the same code
    assert faults.active == {ERROR: "pilot short; self test failed"}
    assert not faults.raise_causes(ERROR, {"self test failed"})  # one left: still active, nothing new
    assert faults.active == {ERROR: "self test failed"}
    assert faults.raise_causes(ERROR, {"pilot short", "self test failed"})  # it came back: reported again
    assert drain(sub) == [("fault", ERROR, "pilot short"),
                          ("fault", ERROR, "pilot short; self test failed"),
                          ("fault", ERROR, "pilot short; self test failed")]


def test_a_fault_needs_a_cause() -> None:
    faults, sub = latch()
    try:
        faults.raise_causes(ERROR, [])
    except ValueError:
        pass
    else:
        raise AssertionError("raise_causes([]) accepted")
    assert drain(sub) == [] and not faults.active


def test_clear_all_within_a_scope_keeping_what_is_still_reported_in_the_order_raised() -> None:
    faults, sub = latch()
    for code in (FaultCode.VENTILATION_REQUIRED, LINK, RCD, ERROR):
        faults.raise_fault(code, str(code))
    drain(sub)
    gone = faults.clear_all(among={RCD, ERROR, FaultCode.VENTILATION_REQUIRED}, keep={RCD})
    assert gone == [FaultCode.VENTILATION_REQUIRED, ERROR]
    assert drain(sub) == [("recovered", FaultCode.VENTILATION_REQUIRED, ""), ("recovered", ERROR, "")]
    assert faults.clear_all() == [LINK, RCD]
    assert drain(sub) == [("recovered", LINK, ""), ("recovered", RCD, "")]
    assert faults.clear_all() == [] and drain(sub) == []


OPS = st.lists(st.tuples(st.sampled_from(["raise", "causes", "clear", "clear_all"]),
                         st.sampled_from([RCD, LINK, ERROR]), st.sets(st.sampled_from("abc"), min_size=1)),
               max_size=40)


@given(OPS)
def test_events_alternate_per_code_and_match_the_active_set(ops: list[tuple[str, FaultCode, set[str]]]) -> None:
    """Whatever the drivers call in whatever order: per code, the first event is a fault, a recovery always
    follows a fault, and the latch's active set is exactly the codes whose last event was a fault."""
    faults, sub = latch()
    last: dict[FaultCode, str] = {}
    for op, code, causes in ops:
        if op == "raise":
            published = faults.raise_fault(code, min(causes))
        elif op == "causes":
            published = faults.raise_causes(code, causes)
        elif op == "clear":
            published = faults.clear(code)
        else:
            published = bool(faults.clear_all(keep={code}))
        events = drain(sub)
        assert published == bool(events)
        for kind, event_code, _ in events:
            assert kind == "fault" or last.get(event_code) == "fault"
            last[event_code] = kind
        assert set(faults.active) == {c for c, kind in last.items() if kind == "fault"}


# --- the scopes drivers clear with clear_all(among=...) ------------------------------------------------------


@given(st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8))
def test_evse_din_status_reports_only_codes_of_its_scope(registers: list[int]) -> None:
    assert set(active_faults(EvseDinStatus(*registers))) <= STATUS_FAULT_CODES


@given(st.integers(0, 0xFFFFFFFF))
def test_ioboard_fault_bits_map_only_to_codes_of_its_scope(bits: int) -> None:
    assert set(faults_by_code(FaultBit(bits))) <= BOARD_FAULT_CODES
