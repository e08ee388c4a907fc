"""Continuous batching (generate/scheduler.py): requests joining and leaving a running batch get what
each gets alone; their own settings and seeds; cancellation; the queue bound."""

import time

import pytest
import torch

from lmforge.config import GenerateConfig, model_config_from_preset
from lmforge.errors import LmforgeError
from lmforge.generate import Engine
from lmforge.generate.cpu import NativeDecoder, native_reason
from lmforge.generate.scheduler import QueueFull, Scheduler
from lmforge.models import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = model_config_from_preset("gpt-small", vocab_size=97, context_length=64, n_layer=2, n_head=2, d_model=32,
                                   d_ff=64, dropout=0.0)
    return build_model(cfg).eval()


PROMPTS = [[5, 6, 7], [9] * 11, [3, 1, 4, 1, 5, 9, 2, 6], [8], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32]]


def wait_for(condition, seconds=20.0):
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.002)


@pytest.mark.parametrize("native", [False, True])
def test_requests_joining_a_running_batch_get_what_each_gets_alone(model, native):
    if native and native_reason(model):
        pytest.skip(native_reason(model))
    sched = Scheduler(model, max_batch=8, native=NativeDecoder(model) if native else None)
    try:
        prompts = [PROMPTS[3], PROMPTS[0], PROMPTS[1], PROMPTS[2], PROMPTS[4]]  # 1, 3 tokens; then 11, 8, 13
        settings = [GenerateConfig(max_new_tokens=n, temperature=0.0) for n in (12, 5, 20, 9, 15)]
        first = [sched.submit(p, g) for p, g in zip(prompts[:2], settings[:2])]
        wait_for(lambda: sched.steps >= 3)  # the others arrive while the first two decode: longer than
        later = [sched.submit(p, g) for p, g in zip(prompts[2:], settings[2:])]  # the batch so far (it shifts)
        got = [r.result(30) for r in first + later]
    finally:
        sched.stop()
    engine = Engine(model, "torch")
    want = [engine.generate([p], g)[0] for p, g in zip(prompts, settings)]
    assert got == want
    assert [r.finish_reason for r in first + later] == ["length"] * 5


def test_each_request_keeps_its_own_settings_and_seed(model):
    sched = Scheduler(model, max_batch=8)
    try:
        seeded = GenerateConfig(max_new_tokens=10, temperature=0.9, top_k=20, seed=7)
        alone = sched.submit(PROMPTS[0], seeded).result(30)
        crowd = [sched.submit(p, GenerateConfig(max_new_tokens=15, temperature=1.3, seed=i)) for i, p in enumerate(PROMPTS)]
        again = sched.submit(PROMPTS[0], seeded)
        assert again.result(30) == alone  # the same draws whatever else is in the batch
        stop = alone[4]
        stopped = sched.submit(PROMPTS[0], GenerateConfig(max_new_tokens=10, temperature=0.9, top_k=20, seed=7,
                                                          stop_ids=(stop,)))
        assert stopped.result(30) == alone[:alone.index(stop) + 1] and stopped.finish_reason == "stop"
        for r in crowd:
            r.result(30)
    finally:
        sched.stop()


def test_a_cancelled_request_leaves_and_the_others_finish(model):
    sched = Scheduler(model, max_batch=8)
    try:
        long = sched.submit(PROMPTS[1], GenerateConfig(max_new_tokens=50, temperature=0.0))
        other = sched.submit(PROMPTS[2], GenerateConfig(max_new_tokens=30, temperature=0.0))
        wait_for(lambda: len(long.produced) >= 2)
        long.cancel()
        assert other.result(30) == Engine(model, "torch").generate([PROMPTS[2]], GenerateConfig(
            max_new_tokens=30, temperature=0.0))[0]
        long.done.wait(10)
        assert long.finish_reason == "cancelled" and len(long.produced) < 50
        wait_for(lambda: sched.batch_size == 0)
    finally:
        sched.stop()


def test_a_full_queue_refuses_and_bad_prompts_are_errors(model):
    sched = Scheduler(model, max_batch=1, max_queue=1)
    try:
        busy = sched.submit(PROMPTS[0], GenerateConfig(max_new_tokens=100, temperature=0.0))
        wait_for(lambda: sched.batch_size == 1)
        waiting = sched.submit(PROMPTS[1], GenerateConfig(max_new_tokens=2, temperature=0.0))
        with pytest.raises(QueueFull, match="queue holds 1 requests"):
            sched.submit(PROMPTS[2], GenerateConfig(max_new_tokens=2, temperature=0.0))
        with pytest.raises(LmforgeError, match="no room"):
            sched.submit([1] * 64, GenerateConfig())
        with pytest.raises(LmforgeError, match="outside the vocabulary"):
            sched.submit([500], GenerateConfig())
        assert len(busy.result(30)) == 61 and len(waiting.result(30)) == 2  # capped at the context: 64 - 3
    finally:
        sched.stop()
