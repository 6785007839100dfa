"""The ../shared rule: a test needing it skips with a reason locally and fails under CI=true."""

from __future__ import annotations

import pytest
import test_slicer_module_static

import conftest


@pytest.fixture
def no_shared(monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "SHARED_DIR", tmp_path / "no-shared-here")


def test_missing_shared_skips_with_the_reason_when_ci_is_not_set(no_shared, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-shared-here.*CI is not 'true'"):
        conftest.require_shared("data/label-maps", "the label-map tests")


def test_missing_shared_fails_under_ci(no_shared, monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-shared-here.*CI=true"):
        conftest.require_shared("data/label-maps", "the label-map tests")


def test_present_shared_is_returned(monkeypatch, tmp_path):
    (tmp_path / "data").mkdir()
    monkeypatch.setattr(conftest, "SHARED_DIR", tmp_path)
    assert conftest.require_shared("data", "x") == tmp_path / "data"


@pytest.mark.parametrize(
    "ci, outcome", [(None, pytest.skip.Exception), ("true", pytest.fail.Exception)]
)
def test_the_catalog_schema_test_follows_the_rule(no_shared, monkeypatch, ci, outcome):
    """In a fresh clone without ../shared the catalog test used to fail outright."""
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome):
        test_slicer_module_static.test_the_catalog_entry_validates_against_the_schema()
