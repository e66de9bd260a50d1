#!/usr/bin/env python3
"""Fails when a dependency floor admits a version with a known advisory.

    python tools/check_floors.py [--installed]

Reads ``advisories.tsv`` (package, fixed in, advisory, what) and every requirement of
``pyproject.toml`` (build-system requires, dependencies, every optional group). A
requirement of an advised package must have a lower bound (``>=`` or ``==``/``~=``) at or
above the highest "fixed in" of its advisories. With ``--installed`` it also checks the
versions installed in the running environment (transitive dependencies included), so a
resolver that picked an affected version fails too. No network is used.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def version_key(text: str) -> tuple[tuple[int, ...], int, int]:
    """A sortable key for a PEP 440 version (release numbers; pre-releases sort before
    their release, post-releases after)."""
    match = re.match(r"^\s*v?(\d+(?:\.\d+)*)(?:[-_.]?(a|b|rc|alpha|beta|c|pre|preview)[-_.]?(\d*))?"
                     r"(?:[-_.]?(post|rev|r)[-_.]?(\d*))?", text.lower())
    if not match:
        raise ValueError(f"not a version: {text!r}")
    release = tuple(int(x) for x in match.group(1).split("."))
    while len(release) > 1 and release[-1] == 0:
        release = release[:-1]
    stage = 0
    if match.group(2):
        stage = -1  # a pre-release is older than the release
    if match.group(4):
        stage = 1
    return release, stage, int((match.group(3) or match.group(5) or "0") or 0)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def load_advisories(path: Path) -> dict[str, list[tuple[str, str, str]]]:
    out: dict[str, list[tuple[str, str, str]]] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        package, fixed, advisory, *what = line.split("\t")
        out.setdefault(normalise(package), []).append((fixed, advisory, what[0] if what else ""))
    return out


def load_requirements(path: Path) -> list[tuple[str, str]]:
    """Every requirement string of pyproject.toml, with where it comes from."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    data = tomllib.loads(path.read_text())
    found = [(r, "build-system.requires") for r in data.get("build-system", {}).get("requires", [])]
    project = data.get("project", {})
    found += [(r, "project.dependencies") for r in project.get("dependencies", [])]
    for group, reqs in project.get("optional-dependencies", {}).items():
        found += [(r, f"optional-dependencies.{group}") for r in reqs]
    return found


def parse_requirement(text: str) -> tuple[str, str | None]:
    """(name, lower bound or None)."""
    text = text.split(";", 1)[0]
    match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$", text)
    if not match:
        raise ValueError(f"cannot read requirement {text!r}")
    name, spec = match.group(1), match.group(3)
    floor: str | None = None
    for clause in spec.split(","):
        clause = clause.strip()
        for op in (">=", "==", "~=", "==="):
            if clause.startswith(op) and not clause.startswith(op + "="):
                candidate = clause[len(op):].strip().rstrip(".*")
                if floor is None or version_key(candidate) > version_key(floor):
                    floor = candidate
        if clause.startswith(">") and not clause.startswith(">="):
            candidate = clause[1:].strip()
            if floor is None or version_key(candidate) > version_key(floor):
                floor = candidate
    return normalise(name), floor


def check_floors(advisories: dict[str, list[tuple[str, str, str]]], pyproject: Path) -> list[str]:
    problems = []
    for text, where in load_requirements(pyproject):
        name, floor = parse_requirement(text)
        for fixed, advisory, what in advisories.get(name, []):
            if floor is None or version_key(floor) < version_key(fixed):
                problems.append(
                    f"{where}: {text!r} admits {name} < {fixed}, affected by {advisory} ({what}); "
                    f"raise the floor to >={fixed}"
                )
    return problems


def check_installed(advisories: dict[str, list[tuple[str, str, str]]]) -> list[str]:
    from importlib import metadata

    problems = []
    for dist in metadata.distributions():
        name = normalise(dist.metadata["Name"] or "")
        for fixed, advisory, what in advisories.get(name, []):
            if version_key(dist.version) < version_key(fixed):
                problems.append(f"installed {name} {dist.version} is affected by {advisory} ({what}); fixed in {fixed}")
    return problems


def main(argv: list[str]) -> int:
    advisories = load_advisories(HERE / "advisories.tsv")
    problems = check_floors(advisories, HERE / "pyproject.toml")
    if "--installed" in argv:
        problems += check_installed(advisories)
    count = sum(len(v) for v in advisories.values())
    if problems:
        print(f"dependency floors: {len(problems)} problem(s) against {count} advisories:", file=sys.stderr)
        for problem in problems:
            print("  " + problem, file=sys.stderr)
        return 1
    print(f"dependency floors: no floor (or installed version) admits any of {count} listed advisories")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
