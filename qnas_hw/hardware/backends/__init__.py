"""Backends by name: the registry the CLI, the search and the job layer share.

Names: ``fake_<device>`` (IBM snapshots, default ``fake_kolkata``), ``ibm:<device>``
(real IBM QPU), ``aer_ideal`` / ``aer_noisy``, ``braket_local_sv`` /
``braket_local_dm``, ``braket_<snapshot>`` (a Braket QPU described offline, e.g.
``braket_iqm_garnet``) and ``braket:<device ARN>`` (the real QPU).
Cloud backends are created lazily: naming or listing them never contacts a cloud.
"""

from __future__ import annotations

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
    "user_calibration_dir",
]


def known_backend_names() -> list[str]:
    """Every name :func:`get_backend` accepts (besides the ``ibm:``/``braket:`` prefixes)."""
    from qnas_hw.hardware.backends.braket import snapshot_names
    from qnas_hw.hardware.backends.ibm import fake_names

    return [*_SIMPLE, *(f"braket_{s}" for s in snapshot_names()), *fake_names()]


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
    raise BackendError(
        f"unknown backend {name!r}; known: {', '.join(known_backend_names())}, "
        "or 'ibm:<device>' / 'braket:<device ARN>' for real QPUs"
    )


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
