"""service/upstream/__init__.py's version check: every patch's targets are installed in the versions it was written for (this suite fails when they drift), and install() names each patch whose targets differ in a warning, then installs all the same."""

from __future__ import annotations

import importlib.metadata
import logging
import re
from types import SimpleNamespace

import pytest

from service import upstream


def test_every_patch_s_targets_are_installed_in_the_versions_it_was_written_for():
    """If this fails, a distribution was upgraded (or the interpreter changed): run tests/upstream, check each patch named
    against what changed upstream (its canaries say what it relies on), then update WRITTEN_FOR, or delete the patch."""
    found = upstream.mismatches()
    assert found == [], "\n".join(map(str, found))


def test_the_patch_table_and_written_for_name_the_same_patches():
    rows = re.findall(r"^\| ``([\w-]+)`` \|", upstream.__doc__, re.MULTILINE)
    assert len(rows) == len(set(rows)) and set(rows) == set(upstream.WRITTEN_FOR) == set(upstream.PATCHES)
    assert set(upstream.SKIPPABLE) <= set(upstream.PATCHES)
    for patch, targets in upstream.WRITTEN_FOR.items():  # a version each, and a lookup that knows the name
        assert targets and all(re.fullmatch(r"\d+(\.\d+)+(-\d+(\.\d+)+)?", v) for v in targets.values()), patch
        for target in set(targets) - {upstream.CPYTHON}:
            importlib.metadata.version(target)


def faked(versions: dict[str, str]):
    """importlib.metadata.version, but for the distributions `versions` names (None: not installed)."""
    real = importlib.metadata.version

    def version(name: str) -> str:
        if name in versions:
            if versions[name] is None:
                raise importlib.metadata.PackageNotFoundError(name)
            return versions[name]
        return real(name)

    return version


def test_another_installed_version_names_the_patches_written_for_the_one_before():
    found = upstream.mismatches(version=faked({"httptools": "0.10.0", "kantoku": None}))
    assert [(m.patch, m.target) for m in found] == [("reuseport", "kantoku"), ("drain", "kantoku"),
                                                    ("drain", "httptools"), ("door", "httptools")]
    assert str(found[0]) == ("patch 'reuseport' was written for kantoku 0.18.3; kantoku is not installed: check "
                             "tests/upstream before trusting it")
    assert str(found[2]) == ("patch 'drain' was written for httptools 0.9.0; httptools 0.10.0 is installed: check "
                             "tests/upstream before trusting it")
    assert upstream.mismatches(["deadline", "gc"], version=faked({"httptools": "0.10.0"})) == []


@pytest.mark.parametrize("python, named", [(("CPython", "3.11.0"), False), (("CPython", "3.14.2"), False),
                                           (("CPython", "3.10.14"), True), (("CPython", "3.15.0"), True),
                                           (("PyPy", "3.11.9"), True)])
def test_the_interpreter_is_checked_against_the_range_of_minor_versions(python, named):
    found = upstream.mismatches(["gc"], python=lambda: python)
    assert [m.patch for m in found] == (["gc"] if named else [])
    if named:
        assert str(found[0]).startswith(f"patch 'gc' was written for CPython 3.11-3.14; {python[0]} {python[1]} is "
                                        f"installed")


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.parametrize("skip", ["", "door,asyncio-loop"])
def test_install_warns_about_each_patch_it_applies_whose_target_differs_and_installs_all_the_same(monkeypatch, skip):
    """uvicorn 0.55.0 installed where the patches were written for 0.54.0: one warning per patch applied that targets it;
    every patch is still installed (here: stand-ins that record it)."""
    from service.upstream import arbiter, bentoml_app, door, multipart, server

    applied = []
    for module, name in ((multipart, "install"), (arbiter, "reserve_port"), (arbiter, "signals"), (server, "install"),
                         (door, "install"), (door, "use_asyncio_loop"), (bentoml_app, "middleware_stack")):
        monkeypatch.setattr(module, name, lambda *args, name=f"{module.__name__}.{name}", **kwargs: applied.append(name))
    monkeypatch.setattr(upstream, "_skipped", upstream._skipped)
    monkeypatch.setattr(importlib.metadata, "version", faked({"uvicorn": "0.55.0"}))
    records = Records()
    upstream.log.addHandler(records)
    try:
        settings = SimpleNamespace(skip_patches=skip, grpc_port=0, max_body_bytes=1000, max_header_bytes=0)
        upstream.install(None, None, None, settings, None)
    finally:
        upstream.log.removeHandler(records)
    named = ["reuseport", "drain"] + ([] if skip else ["door", "asyncio-loop"])
    assert records.lines == [f"patch {patch!r} was written for uvicorn 0.54.0; uvicorn 0.55.0 is installed: check "
                             f"tests/upstream before trusting it" for patch in named]
    assert "service.upstream.multipart.install" in applied and "service.upstream.server.install" in applied
    assert ("service.upstream.door.install" in applied) is not bool(skip)
