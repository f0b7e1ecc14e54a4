"""Shared fixtures: execution-mode switching for the PyNative/GRAPH_MODE parity tests."""
import mindspore as ms
import pytest


@pytest.fixture
def graph_mode():
    """Run the test body under GRAPH_MODE, then restore PyNative for the rest of the suite."""
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        yield
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
