"""The one registry every family declares: a name registered once, an unknown name in the family's own error class
with what is available, and every family of the package on it."""

from __future__ import annotations

import pytest

from melanoma_search.errors import ConfigError, DataError
from melanoma_search.registry import Registry


def test_a_name_is_registered_once_and_an_unknown_one_names_the_family_and_what_exists() -> None:
    table: Registry[int] = Registry("colour space", error=ConfigError)
    assert table.add("rgb", 1) == 1 and table.add("hsv", 2) == 2
    assert table.get("hsv") == 2 and table.names() == ("rgb", "hsv") and "rgb" in table and list(table) == [1, 2]
    with pytest.raises(ValueError, match="colour space 'rgb' is already registered"):
        table.add("rgb", 3)
    with pytest.raises(ConfigError, match="unknown colour space 'lab'; available: rgb, hsv"):
        table.get("lab")
    twin = table.copy()
    twin.add("lab", 3)
    assert "lab" not in table and twin.get("lab") == 3 and twin.family == "colour space"


def test_every_family_is_a_registry_with_its_own_error() -> None:
    from melanoma_search.augment import policies
    from melanoma_search.data import layouts
    from melanoma_search.ensemble import methods
    from melanoma_search.model import losses
    from melanoma_search.search.backends import base
    from melanoma_search.stage_two import features, learners

    families = {losses._LOSSES: ValueError, policies._POLICIES: ValueError, layouts._LAYOUTS: DataError,
                base._BACKENDS: ValueError, methods._METHODS: ConfigError, features._GROUPS: DataError,
                learners._LEARNERS: ConfigError}
    for table, error in families.items():
        assert isinstance(table, Registry) and len(table) > 0 and table.error is error
        with pytest.raises(error, match=f"unknown {table.family} 'nope'; available: {table.names()[0]}"):
            table.get("nope")
