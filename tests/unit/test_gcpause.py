"""gcpause.paused(): the collector is off inside, back on after the last pause, untouched if someone else turned it off."""

import gc
import threading

from netagent import gcpause


def test_off_inside_and_on_after():
    assert gc.isenabled()
    with gcpause.paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_overlapping_pauses_on_two_threads_end_with_the_last():
    inside, leave = threading.Event(), threading.Event()

    def other():
        with gcpause.paused():
            inside.set()
            leave.wait(30)

    t = threading.Thread(target=other)
    t.start()
    assert inside.wait(30)
    with gcpause.paused():
        assert not gc.isenabled()
    assert not gc.isenabled()  # the other thread's pause is still on
    leave.set()
    t.join(30)
    assert gc.isenabled()


def test_a_collector_disabled_elsewhere_stays_disabled():
    gc.disable()
    try:
        with gcpause.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_exception_inside_still_resumes():
    try:
        with gcpause.paused():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.isenabled()
