"""Long-running commands settle the collector once: start-up objects frozen, young collections rarer."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _in_fresh_process(code: str) -> str:
    # Freezing is process-wide: never in the test process itself.
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_settling_freezes_start_up_objects_once_and_raises_the_young_threshold() -> None:
    out = _in_fresh_process(
        """
        import gc
        from careflow.heap import YOUNG_THRESHOLD, settle_after_startup
        settle_after_startup()
        frozen = gc.get_freeze_count()
        leftover = [object() for _ in range(3)] + [[1], [2]]  # new objects after the freeze
        settle_after_startup()  # a second command in the same process: nothing more is frozen
        print(frozen > 1000, gc.get_freeze_count() == frozen, gc.get_threshold()[0] == YOUNG_THRESHOLD)
        """
    )
    assert out == "True True True"


def test_a_disabled_collector_stays_disabled() -> None:
    out = _in_fresh_process(
        """
        import gc
        from careflow.heap import settle_after_startup
        gc.set_threshold(0)
        settle_after_startup()
        print(gc.get_threshold()[0])
        """
    )
    assert out == "0"
