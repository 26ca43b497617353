"""Comments state decisions; measurements live in tests/benchmarks/RESULTS.md. A `#` comment under
pipeline/ that carries a percentage, an "N.Nx" ratio or a GPU model is a measurement log (or its
provenance) creeping back into the code: say the decision and point to RESULTS.md instead. A
decision whose number is the decision itself (a cap, a scale) is allowed by name below."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pipeline

PACKAGE = Path(pipeline.__file__).parent

# A GPU model: NVIDIA's data-centre and RTX cards, AMD's Instinct.
GPU = r"(?:[HB][18]00|[HB]200|G[HB]200|A100|A10G?|A[34]0|V100|T4|L4|L40S?|MI\d{3}X?|RTX ?\d{4})"
MEASUREMENT = re.compile(
    r"\d\s?%"  # a percentage
    r"|\b\d+(?:\.\d+)?x\b"  # a ratio: 1.4x, 3x
    rf"|\b{GPU}\b"
)
# (file below pipeline/, the comment's text): decisions whose number is the decision.
ALLOWED = {
    # The GPU class `nst plan`'s estimate assumes, and says it assumes.
    ("job/estimate.py", "# One Hopper GPU (H100 or H200) on this workload"),
    # The loss plot's resolution for high-density screens.
    ("web/routes/jobs.py", "# 2x the size the page shows it at, for high-density screens"),
}


def measurement_comments(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every `#` comment of a module that carries a measurement."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
    return [
        (t.start[0], t.string.strip())
        for t in tokens
        if t.type == tokenize.COMMENT and MEASUREMENT.search(t.string)
    ]


def test_comments_under_pipeline_state_decisions_not_measurements():
    found, allowed_seen = [], set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for line, text in measurement_comments(path):
            hits = {a for a in ALLOWED if a[0] == rel and text.startswith(a[1])}
            if hits:
                allowed_seen |= hits
            else:
                found.append(f"pipeline/{rel}:{line}: {text}")
    assert not found, "move the figures to RESULTS.md, keep the decision:\n" + "\n".join(found)
    assert allowed_seen == ALLOWED, f"allowed comments that are gone: {ALLOWED - allowed_seen}"


def test_the_check_sees_what_it_forbids(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "x = 1  # 8 % faster an iteration\n"
        "y = 2  # 2.5x the reproduction's error\n"
        "z = 3  # measured on an NVIDIA H200\n"
        "w = '50 % in a string is not a comment'\n"
        "v = 4  # relu4_2, 16 px tiles, H0 = gamma I, a 1,000-iteration run: no measurement\n"
    )
    assert [line for line, _ in measurement_comments(module)] == [1, 2, 3]
