"""The serving commands' event loop: uvloop when installed, asyncio's own otherwise."""

from __future__ import annotations

import asyncio
import sys

import pytest

from daemon.supervisor import run_loop


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_serves_on_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop")
    assert run_loop(_loop_module()).startswith("uvloop")


def test_falls_back_to_asyncio_when_uvloop_cannot_be_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import raises ImportError
    assert run_loop(_loop_module()).startswith("asyncio")
