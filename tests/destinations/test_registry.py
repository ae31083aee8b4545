"""The registry lists every adapter the package defines, each under its own type."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import firstparty.destinations
from firstparty.destinations import base, registry


def defined_adapters() -> set[type[base.Adapter]]:
    """Every concrete Adapter subclass defined in a module of firstparty.destinations."""
    found: set[type[base.Adapter]] = set()
    for info in pkgutil.iter_modules(firstparty.destinations.__path__):
        module = importlib.import_module(f"firstparty.destinations.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            own = cls.__module__ == module.__name__ and cls is not base.Adapter
            if own and issubclass(cls, base.Adapter):
                found.add(cls)
    return found


def test_every_adapter_in_the_package_is_listed_in_builtins() -> None:
    assert defined_adapters() == set(registry.BUILTINS)


def test_the_lookup_holds_each_builtin_under_its_type() -> None:
    assert list(registry.ADAPTERS.values()) == list(registry.BUILTINS)
    assert all(registry.ADAPTERS[a.type] is a for a in registry.BUILTINS)


def test_two_adapters_of_one_type_are_refused() -> None:
    twin = type("Twin", (base.Adapter,), {"type": "webhook"})
    with pytest.raises(ValueError, match="'webhook'"):
        registry.by_type([*registry.BUILTINS, twin])


def test_an_unknown_type_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"destinations\[0\]\.type: .*'nope'.*webhook"):
        registry.parse({"name": "x", "type": "nope"}, 0)


def test_people_pick_from_the_platforms_first_and_the_test_type_last() -> None:
    order = registry.picker_order()
    assert sorted(order) == sorted(registry.ADAPTERS)
    assert order[-1] == "fake" and order[0] != "fake"
    assert order[:-1] == sorted(order[:-1])
