"""The dispatcher tells whoever counts (a job's metrics) of every pair it runs again."""

from __future__ import annotations

from pipeline.core.dispatch import Dispatcher, PairTensors

from ..conftest import make_content, make_style, tiny


def test_pairs_run_again_after_their_stack_failed_are_reported(stylizer, monkeypatch):
    """Fault injection: a stack of more than one pair raises (a bug, not the input), so its three
    pairs run again one at a time and come out done: the dispatcher reports those three. Then
    every optimization raises: a pair alone is tried once more, reported too, and fails."""
    params = tiny(schedule=((32, 2),))
    pairs = [PairTensors(make_content(seed=i), [make_style(seed=9)], params) for i in range(3)]
    real = stylizer.stylize_stack

    def fails_together(contents, styles, **kw):
        if len(contents) > 1:
            raise RuntimeError("a stack-wide fault (injected)")
        return real(contents, styles, **kw)

    monkeypatch.setattr(stylizer, "stylize_stack", fails_together)
    retried: list[int] = []
    got: dict[int, object] = {}
    dispatcher = Dispatcher(stylizer, 3, on_retry=retried.append)
    dispatcher.run(pairs, lambda i, outcome, share: got.setdefault(i, outcome))
    assert retried == [3]
    assert sorted(got) == [0, 1, 2] and all(r.iterations == 2 for r in got.values())

    def always_fails(contents, styles, **kw):
        raise RuntimeError("every optimization fails (injected)")

    monkeypatch.setattr(stylizer, "stylize_stack", always_fails)
    retried.clear()
    got.clear()
    dispatcher.run(pairs[:1], lambda i, outcome, share: got.setdefault(i, outcome))
    assert retried == [1] and isinstance(got[0], RuntimeError)
