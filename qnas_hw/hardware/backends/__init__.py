"""Backends by name: the registry the CLI, the search and the job layer share.

Names: ``fake_<device>`` (IBM snapshots, default ``fake_kolkata``), ``ibm:<device>``
(real IBM QPU), ``aer_ideal`` / ``aer_noisy``, ``braket_local_sv`` /
``braket_local_dm``, ``braket_<snapshot>`` (a Braket QPU described offline, e.g.
``braket_iqm_garnet``) and ``braket:<device ARN>`` (the real QPU).
Cloud backends are created lazily: naming or listing them never contacts a cloud.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from qnas_hw.hardware.backends.base import (
    Backend,
    BackendError,
    JobHandle,
    JobState,
    JobTiming,
    Pricing,
    SamplerPub,
    calibration_dir,
    snapshot_names,
    user_calibration_dir,
)

DEFAULT_BACKEND = "fake_kolkata"
_SIMPLE = ("aer_ideal", "aer_noisy", "braket_local_sv", "braket_local_dm")

__all__ = [
    "DEFAULT_BACKEND",
    "Backend",
    "BackendError",
    "JobHandle",
    "JobState",
    "JobTiming",
    "Pricing",
    "SamplerPub",
    "calibration_dir",
    "get_backend",
    "known_backend_names",
    "list_backends",
    "unknown_backend_message",
    "user_calibration_dir",
]


def known_backend_names() -> list[str]:
    """Every name :func:`get_backend` accepts (besides the ``ibm:``/``braket:`` prefixes).

    Every config validation asks (the backend name is checked), so this
    imports no provider SDK: the fake IBM snapshots are listed from the
    installed runtime's source (importing it takes seconds; a test checks the
    two agree), from its classes only when that source cannot be read.
    """
    fakes = sorted(_fake_names_from_source())
    if not fakes:
        from qnas_hw.hardware.backends.ibm import fake_names

        fakes = fake_names()
    return [*_SIMPLE, *(f"braket_{s}" for s in snapshot_names()), *fakes]


#: Classes of the runtime's fake provider that are not a device snapshot.
_NOT_SNAPSHOTS = frozenset({"FakeProviderForBackendV2", "FakeFractionalBackend"})
_FAKE_IMPORT = re.compile(r"^from \.\w+ import (Fake\w+)\s*$", re.MULTILINE)


def fake_registry_name(class_name: str) -> str | None:
    """``FakeKolkataV2`` -> ``fake_kolkata``: the registry name of a fake IBM backend class (None if not one)."""
    if not class_name.startswith("Fake") or class_name in _NOT_SNAPSHOTS:
        return None
    base = class_name[4:]
    base = base[:-2] if base.endswith("V2") else base
    return f"fake_{base.lower()}"


def _fake_names_from_source() -> set[str]:
    """The fake backends' registry names as the runtime's source lists them, read without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("qiskit_ibm_runtime")
        roots = list(spec.submodule_search_locations or []) if spec is not None else []
        text = "".join(
            (Path(root) / "fake_provider" / "backends" / "__init__.py").read_text(encoding="utf-8") for root in roots
        )
    except (ImportError, OSError, UnicodeDecodeError, ValueError):
        return set()
    return {n for c in _FAKE_IMPORT.findall(text) if (n := fake_registry_name(c)) is not None}


def unknown_backend_message(name: str, known: list[str] | None = None) -> str:
    """Why ``name`` is not a backend: the three closest known names and where the full list is.

    The registry accepts about 75 names (every fake IBM snapshot); listing them
    all buried the one the user meant, usually a typo (``fake_belm``).
    """
    import difflib

    known = known_backend_names() if known is None else known
    close = difflib.get_close_matches(name, known, n=3)
    guess = ""
    if close:
        head = ", ".join(map(repr, close[:-1]))
        guess = f"did you mean {head + ' or ' if head else ''}{close[-1]!r}? "
    return (
        f"unknown backend {name!r}; {guess}`qnas-hw devices --all` lists the {len(known)} offline names, and "
        "'ibm:<device>' / 'braket:<device ARN>' name real QPUs"
    )


def get_backend(name: str, **options: Any) -> Backend:
    """Build a backend by registry name; unknown names raise :class:`BackendError` listing the known ones.

    ``options``: ``noise_from`` for ``aer_noisy`` (a fake IBM name) and
    ``braket_local_dm`` (a snapshot name); ``instance`` for ``ibm:<device>``.
    """
    if not isinstance(name, str) or not name.strip():
        raise BackendError(f"backend name must be a non-empty string, got {name!r}")
    name = name.strip()
    if name.startswith("ibm:"):
        from qnas_hw.hardware.backends.ibm import IBMRuntimeBackend

        return IBMRuntimeBackend(name[4:], **options)
    if name.startswith("braket:"):
        from qnas_hw.hardware.backends.braket import braket_backend_for_arn

        return braket_backend_for_arn(name[7:])
    if name == "aer_ideal":
        from qnas_hw.hardware.backends.aer import AerBackend

        return AerBackend(name)
    if name == "aer_noisy":
        from qnas_hw.hardware.backends.aer import AerBackend

        return AerBackend(name, noise_from=options.get("noise_from", DEFAULT_BACKEND))
    if name in ("braket_local_sv", "braket_local_dm"):
        from qnas_hw.hardware.backends.braket import BraketLocalBackend

        return BraketLocalBackend(name, **options)
    if name.startswith("braket_"):
        from qnas_hw.hardware.backends.braket import BraketDeviceBackend, snapshot_names

        if name[7:] in snapshot_names():
            return BraketDeviceBackend(name[7:])
    if name.startswith("fake_"):
        from qnas_hw.hardware.backends.ibm import FakeIBMBackend, fake_names

        if name in fake_names():
            return FakeIBMBackend(name)
    raise BackendError(unknown_backend_message(name))


def list_backends(all_fakes: bool = False) -> list[dict[str, Any]]:
    """``describe()`` rows of the featured (or, with ``all_fakes``, every) offline backend plus the cloud ones.

    No cloud is contacted.  A snapshot whose construction warns (e.g. a fake
    device whose properties are not typical of the real one) gets the warning
    in its ``note`` rather than on stderr, where it would break the listing.
    """
    from qnas_hw.hardware.backends.braket import snapshot_names
    from qnas_hw.hardware.backends.ibm import FEATURED_FAKES, IBMRuntimeBackend, fake_names

    fakes = fake_names()
    names = fakes if all_fakes else [n for n in FEATURED_FAKES if n in fakes]
    names = [*names, *_SIMPLE, *(f"braket_{s}" for s in snapshot_names())]
    rows = [_describe_quietly(n) for n in names]
    ibm = IBMRuntimeBackend("<device>").describe()
    ibm["note"] = "real IBM QPUs: use 'ibm:<device>'"
    rows.append(ibm)
    from qnas_hw.hardware.backends.braket import BraketDeviceBackend

    for s in snapshot_names():
        cloud = BraketDeviceBackend(s, cloud=True)
        row = cloud.describe()
        row["name"] = f"braket:{cloud.arn}"
        rows.append(row)
    return rows


def _describe_quietly(name: str) -> dict[str, Any]:
    """``get_backend(name).describe()`` with construction warnings moved into the row's ``note``."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        row = get_backend(name).describe()
    messages = [str(w.message).strip() for w in caught if issubclass(w.category, UserWarning)]
    if messages:
        row["note"] = "; ".join(filter(None, [row.get("note"), *messages]))
    return row
