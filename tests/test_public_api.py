from __future__ import annotations

import importlib
import inspect

import budgetguard as bg
import budgetguard.stores as stores


def test_all_is_sorted_and_complete() -> None:
    for module in (bg, stores):
        assert list(module.__all__) == sorted(module.__all__), module.__name__
        public = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_") and not inspect.ismodule(value)
        }
        assert public <= set(module.__all__) | {"annotations"}, public - set(module.__all__)
        for name in module.__all__:
            assert hasattr(module, name), name


def test_contract_names_from_design_md_exist() -> None:
    for name in (
        "configure",
        "Policy",
        "Limit",
        "Threshold",
        "instrument",
        "budget",
        "spend_limit",
        "BudgetExceeded",
        "BudgetError",
        "UnknownModel",
        "ConfigurationError",
        "StoreUnavailable",
        "Money",
        "status",
    ):
        assert name in bg.__all__, name


def test_error_tree_is_drawn_in_the_errors_docstring() -> None:
    errors = importlib.import_module("budgetguard._core.errors")
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        assert name in doc, name
        assert issubclass(getattr(errors, name), bg.BudgetError)
