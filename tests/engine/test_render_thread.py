"""The render thread: ``ThreadPoolExecutor(1)``'s contract, plus polling for the next job (spin)."""

import asyncio
import ctypes
import sys
import threading

import pytest

from bridge.cli import build_parser, config_from_args
from bridge.core.errors import ConfigError
from bridge.engine.render_thread import TIMER_SLACK_NS, RenderThread


def test_jobs_run_in_order_on_one_named_thread_and_errors_reach_the_caller():
    worker = RenderThread("gpu-test")
    try:
        seen = []
        futures = [worker.submit(lambda i=i: seen.append((i, threading.current_thread().name)) or i) for i in range(50)]
        assert [f.result(timeout=30) for f in futures] == list(range(50))
        assert seen == [(i, "gpu-test") for i in range(50)]
        failing = worker.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing.result(timeout=30)
        assert worker.submit(lambda: "still serving").result(timeout=30) == "still serving"
    finally:
        worker.shutdown()


def test_run_in_executor_from_the_event_loop():
    worker = RenderThread()

    async def main():
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(worker, pow, i, 2) for i in range(10)))

    try:
        assert asyncio.run(main()) == [i * i for i in range(10)]
    finally:
        worker.shutdown()


def test_without_spin_each_job_after_idle_wakes_the_thread():
    worker = RenderThread(spin_s=0)
    try:
        for _ in range(5):
            while not worker._sleeping:  # the thread is asleep before each job is submitted: wait for that
                threading.Event().wait(0.001)
            worker.submit(lambda: None).result(timeout=30)
        assert worker.sleeps == 5 and worker.spins == 0
    finally:
        worker.shutdown()


def test_a_spinning_thread_picks_up_the_next_job_without_sleeping_and_still_shuts_down():
    worker = RenderThread(spin_s=600.0)  # polls far longer than the test runs: no job ever finds it asleep
    try:
        for i in range(5):
            assert worker.submit(lambda i=i: i).result(timeout=30) == i
        assert worker.sleeps == 0 and worker.spins == 5
        assert worker.health() == {"spin_ms": 600000.0, "jobs_without_sleep": 5, "jobs_after_sleep": 0}
    finally:
        worker.shutdown(wait=True)  # ends the poll: returns, though the spin had minutes left
    assert not worker._thread.is_alive()


def test_shutdown_runs_what_was_queued_or_cancels_it_and_refuses_new_jobs():
    gate = threading.Event()
    worker = RenderThread()
    first = worker.submit(gate.wait, 30)
    queued = [worker.submit(lambda i=i: i) for i in range(3)]
    gate.set()
    worker.shutdown(wait=True)
    assert first.result() is True and [f.result() for f in queued] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="shut down"):
        worker.submit(lambda: None)

    gate = threading.Event()
    worker = RenderThread()
    first = worker.submit(gate.wait, 30)
    queued = worker.submit(lambda: "never")
    while not first.running():
        threading.Event().wait(0.001)
    worker.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert queued.cancelled() and first.result(timeout=30) is True


def test_spin_option_is_validated():
    assert config_from_args(build_parser().parse_args(["serve", "--render-spin-ms", "2.5"])).render_spin_ms == 2.5
    assert config_from_args(build_parser().parse_args(["serve"])).render_spin_ms == 0
    with pytest.raises(ConfigError, match="0..1000"):
        config_from_args(build_parser().parse_args(["serve", "--render-spin-ms", "-1"]))
    with pytest.raises(ValueError):
        RenderThread(spin_s=-0.5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names and timer slack via prctl: Linux")
def test_the_thread_has_its_os_name_and_a_1us_timer_slack_and_other_threads_keep_theirs():
    """A lone batch's 20-us polls (overlap_queue.LONE_POLL_S) end within the render thread's timer slack."""
    libc = ctypes.CDLL(None)
    own_slack = libc.prctl(30, 0, 0, 0, 0)  # PR_GET_TIMERSLACK: returned, in ns

    def read():
        with open(f"/proc/self/task/{threading.get_native_id()}/comm") as comm:
            return comm.read().strip(), libc.prctl(30, 0, 0, 0, 0)

    worker = RenderThread("gpu-slack-test")
    try:
        assert worker.submit(read).result(timeout=30) == ("gpu-slack-test", TIMER_SLACK_NS) == ("gpu-slack-test", 1000)
    finally:
        worker.shutdown()
    assert libc.prctl(30, 0, 0, 0, 0) == own_slack != TIMER_SLACK_NS
