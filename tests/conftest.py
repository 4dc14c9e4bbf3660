"""Test ordering for CI's two workers: the learning tests (minutes each) start first, so that the many
short tests fill the other worker around them instead of the run ending on one long test."""


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: 0 if item.module.__name__.split(".")[-1].startswith("test_learning") else 1)
