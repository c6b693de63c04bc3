"""pytest settings for running the notebooks under nbval (``make test``)."""
import pytest

# After a cell finishes, nbval waits for each of its output messages with a fixed 5 s timeout that no option sets
# (computationalmodelling/nbval#136). On a loaded 2-core machine a cell that trained a model for minutes can take
# longer than that to deliver its output (a Plotly figure, the progress bar's last updates), and nbval then fails
# a cell that ran fine. A cell that really hangs still fails, on --nbval-cell-timeout or on this one.
OUTPUT_TIMEOUT_S = 60


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = OUTPUT_TIMEOUT_S
