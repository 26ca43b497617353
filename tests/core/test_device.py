import torch

from pipeline.core.device import GRAPH_WARMUP, GraphedStep, graphs_pay


def test_graphs_pay_only_on_a_gpu_past_the_eager_and_warm_up_calls():
    gpu = torch.device("cuda")  # a device name: no GPU is needed to build it
    assert graphs_pay(True, gpu, 2 + GRAPH_WARMUP)
    assert not graphs_pay(True, gpu, 1 + GRAPH_WARMUP)  # nothing left to replay
    assert not graphs_pay(False, gpu, 500)
    assert not graphs_pay(True, torch.device("cpu"), 500)


def test_a_disabled_graphed_step_calls_the_step_every_time():
    calls = []
    step = GraphedStep(lambda: calls.append(1), enabled=False)
    for _ in range(GRAPH_WARMUP + 3):
        step()
    assert len(calls) == GRAPH_WARMUP + 3
    assert step.graph is None
