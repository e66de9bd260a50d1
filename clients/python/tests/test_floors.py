"""tools/check_floors.py: a floor that admits an advised version fails the check."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def check():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("check_floors", ROOT / "tools" / "check_floors.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_projects_floors_pass(check) -> None:  # type: ignore[no-untyped-def]
    advisories = check.load_advisories(ROOT / "advisories.tsv")
    assert check.check_floors(advisories, ROOT / "pyproject.toml") == []
    assert {"langchain-core", "langchain", "h11", "pytest", "setuptools"} <= set(advisories)


def test_a_low_or_missing_floor_fails(check, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    advisories = check.load_advisories(ROOT / "advisories.tsv")
    bad = tmp_path / "pyproject.toml"
    bad.write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\n'
        '[project]\nname = "x"\ndependencies = ["langchain-core>=1.2,<2", "h11"]\n'
        '[project.optional-dependencies]\ntest = ["pytest>=9.0.3", "langchain>=1.3.9"]\n'
    )
    problems = check.check_floors(advisories, bad)
    text = "\n".join(problems)
    assert "CVE-2024-6345" in text and "CVE-2025-47273" in text  # setuptools>=68
    assert "GHSA-pjwx-r37v-7724" in text or "CVE-2026-44843" in text  # langchain-core>=1.2
    assert "CVE-2025-43859" in text  # h11 without a floor
    assert "pytest" not in text and "langchain>=" not in text


def test_versions_compare_as_pep_440(check) -> None:  # type: ignore[no-untyped-def]
    key = check.version_key
    assert key("1.2.31") < key("1.3.3") < key("1.3.10") < key("2.0")
    assert key("9.0.3rc1") < key("9.0.3") < key("9.0.3.post1")
    assert key("1.0") == key("1.0.0")
