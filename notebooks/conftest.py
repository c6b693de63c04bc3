"""pytest settings for running the notebooks under nbval (``make test``)."""
import pytest

# After a cell finishes, nbval waits for each of its output messages with a fixed 5 s timeout that no option sets
# (computationalmodelling/nbval#136). On a loaded 2-core machine the messages of a cell that ran for minutes can
# take longer than that to arrive. (The cause of lost messages, progress bars redrawing ten times a second, is
# fixed in `aftlab.model.runtime.progress_bar`.) A cell that really hangs still fails, on --nbval-cell-timeout or here.
OUTPUT_TIMEOUT_S = 60


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = OUTPUT_TIMEOUT_S
