"""The export bundle: which files it holds, its manifest, and the checks that make a bundle trustworthy.

A bundle is a directory a person copies to another machine and runs months
later, without the study.  Two things can go wrong there and must never go
unnoticed: a file is missing or was changed (copied half-way, edited by
hand, from another export), and the bundle is run on a device its circuit
was not placed for.  So the manifest lists a SHA-256 checksum per file and
one of its own content (``manifest_checksum``), :func:`open_bundle` refuses
any mismatch naming the file, and the circuit carries the backend and
layout it was placed for in its own metadata, compared with the manifest's
when it is loaded.

Files (names relative to the bundle directory):

* ``circuit.qpy``: the placed circuit, trained weights bound, inputs left as the ``ParameterVector`` ``x``,
  final measurements removed (an estimator-ready circuit; :func:`measured_circuit` puts them back).
* ``circuit.qasm3``: the same circuit in OpenQASM 3, inputs declared ``input float[64] x_<i>``.
* ``observables.json``: per model output, the ``Z`` of the physical qubit it is read from.
* ``classical.pt``: the classical front-end and head as one torch state dict (``frontend.*``, ``head.*``).
* ``cut/subexperiments.qpy`` and ``cut/plan.json`` (cut candidates only): the placed subexperiments the
  search ran, weights bound, and their labels, shots and QPD coefficients.
* ``manifest.json``: everything else (see :mod:`qnas_hw.deploy.export`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

log = logging.getLogger(__name__)

FORMAT = "qnas-hw-export"
FORMAT_VERSION = 1

MANIFEST = "manifest.json"
CIRCUIT_QPY = "circuit.qpy"
CIRCUIT_QASM3 = "circuit.qasm3"
OBSERVABLES = "observables.json"
CLASSICAL = "classical.pt"
CUT_QPY = "cut/subexperiments.qpy"
CUT_PLAN = "cut/plan.json"
#: what every bundle holds besides the manifest
REQUIRED = (CIRCUIT_QPY, CIRCUIT_QASM3, OBSERVABLES, CLASSICAL)
#: what a cut candidate's bundle holds besides
REQUIRED_CUT = (CUT_QPY, CUT_PLAN)
#: the circuit's own record of where it was placed (QPY keeps circuit metadata)
METADATA_KEY = "qnas_hw_export"
#: the OpenQASM 3 name of input ``x[i]`` (qiskit would write ``_x_<i>_``, awkward to fill from outside)
QASM_INPUT = "x_{}"


class BundleError(ValueError):
    """A bundle that is incomplete, altered, or asked to run where it cannot; the message names the fix."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_checksum(path: Path) -> str:
    """SHA-256 of a file (the data layer's reader, one definition for datasets and bundles)."""
    from qnas_hw.data import sha256_file

    return sha256_file(path)


def manifest_checksum(manifest: dict[str, Any]) -> str:
    """SHA-256 of the manifest's content without its own checksum, in a canonical JSON form."""
    body = {k: v for k, v in manifest.items() if k != "manifest_checksum"}
    return sha256_bytes(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode())


def seal(directory: Path, manifest: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """The manifest with a checksum per file of ``files`` and its own checksum, written as ``manifest.json``."""
    from qnas_hw.atomic_write import atomic_write_text

    sealed = dict(manifest)
    sealed["files"] = {name: file_checksum(directory / name) for name in sorted(files)}
    sealed["manifest_checksum"] = manifest_checksum(sealed)
    atomic_write_text(directory / MANIFEST, json.dumps(sealed, indent=1, sort_keys=True, default=str) + "\n")
    return sealed


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk (made by :func:`open_bundle`); loaders check what they load against the manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def architecture(self) -> str:
        return str(self.manifest["architecture"])

    @property
    def backend(self) -> str:
        return str(self.manifest["backend"]["name"])

    @property
    def is_cut(self) -> bool:
        return self.manifest["circuit"].get("cut") is not None

    def circuit(self) -> QuantumCircuit:
        """``circuit.qpy``, refused when the circuit says it was placed for another backend or architecture."""
        (circuit,) = _load_qpy(self.path / CIRCUIT_QPY)
        self._check_origin(circuit, CIRCUIT_QPY)
        return circuit

    def subexperiments(self) -> list[QuantumCircuit]:
        """``cut/subexperiments.qpy`` in run order (a cut candidate only)."""
        if not self.is_cut:
            raise BundleError(f"{self.path} holds an uncut candidate; it has no subexperiments")
        circuits = _load_qpy(self.path / CUT_QPY)
        for c in circuits:
            self._check_origin(c, CUT_QPY)
        return circuits

    def observables(self) -> list[dict[str, Any]]:
        return list(json.loads((self.path / OBSERVABLES).read_text())["observables"])

    def cut_plan(self) -> dict[str, Any]:
        return dict(json.loads((self.path / CUT_PLAN).read_text()))

    def classical_state(self) -> dict[str, Any]:
        """The front-end's and head's tensors (``weights_only``: a bundle from elsewhere runs no pickled code)."""
        import torch

        return dict(torch.load(self.path / CLASSICAL, map_location="cpu", weights_only=True))

    def _check_origin(self, circuit: QuantumCircuit, name: str) -> None:
        origin = (circuit.metadata or {}).get(METADATA_KEY) or {}
        if origin.get("backend") != self.backend:
            raise BundleError(
                f"{self.path / name} was placed for backend {origin.get('backend')!r} but the manifest says "
                f"{self.backend!r}: the files come from different exports; export the pick again"
            )
        if origin.get("architecture") != self.architecture:
            raise BundleError(
                f"{self.path / name} holds {origin.get('architecture')!r} but the manifest says "
                f"{self.architecture!r}: the files come from different exports; export the pick again"
            )


def _load_qpy(path: Path) -> list[QuantumCircuit]:
    from qiskit import qpy

    with open(path, "rb") as fh:
        return list(qpy.load(fh))


def open_bundle(directory: Path | str) -> Bundle:
    """The bundle at ``directory`` after checking that nothing is missing and nothing changed since export.

    Raises :class:`BundleError` naming the first problem: no such directory,
    no or unreadable manifest, another format, an edited manifest, a listed
    file missing or with another checksum, a required file not listed.
    """
    path = Path(directory)
    again = "export the pick again (`qnas-hw export STUDY --pick ... --out DIR`) or restore the bundle from a copy"
    if not path.is_dir():
        raise BundleError(f"no export bundle at {path} (not a directory); {again}")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path} has no {MANIFEST}, so it is not an export bundle or it is incomplete; {again}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path} cannot be read as JSON ({exc}); {again}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{manifest_path} is not a {FORMAT} manifest; {again}")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise BundleError(
            f"{path} is format version {manifest.get('format_version')}, newer than this qnas-hw reads "
            f"({FORMAT_VERSION}); upgrade qnas-hw"
        )
    if manifest.get("manifest_checksum") != manifest_checksum(manifest):
        raise BundleError(
            f"{manifest_path} was changed after export (its checksum does not match its content); {again}"
        )
    files = manifest.get("files") or {}
    needed = [*REQUIRED, *(REQUIRED_CUT if (manifest.get("circuit") or {}).get("cut") else ())]
    unlisted = [n for n in needed if n not in files]
    if unlisted:
        raise BundleError(f"{manifest_path} lists no checksum for {', '.join(unlisted)}; {again}")
    for name, expected in sorted(files.items()):
        target = path / name
        if not target.is_file():
            raise BundleError(f"{path} is missing {name}; {again}")
        got = file_checksum(target)
        if got != expected:
            raise BundleError(
                f"{target} does not match the checksum in {MANIFEST} (sha256 {got[:12]}..., expected "
                f"{expected[:12]}...): it was changed or replaced after export; {again}"
            )
    log.debug("bundle %s verified: %d files", path, len(files))
    return Bundle(path, manifest)


def measured_circuit(circuit: QuantumCircuit, observables: list[dict[str, Any]]) -> QuantumCircuit:
    """``circuit`` with output ``i``'s physical qubit measured into classical bit ``i``: what the search ran.

    The search measured every logical qubit (``measure_all``) after placement,
    so clbit ``q`` read the physical qubit that logical qubit ``q`` landed on;
    the observables list exactly those, in output order.
    """
    from qiskit.circuit import ClassicalRegister

    out = circuit.copy()
    creg = ClassicalRegister(len(observables), "meas")
    out.add_register(creg)
    out.barrier()
    for i, ob in enumerate(observables):
        out.measure(int(ob["physical_qubit"]), creg[i])
    return out


#: qiskit ``stdgates.inc`` names that Braket's OpenQASM 3 does not know, defined with Braket's built-in gates
_BRAKET_ALIASES = {
    "sx": "gate sx a { v a; }",
    "sxdg": "gate sxdg a { vi a; }",
    "cx": "gate cx a, b { cnot a, b; }",
    "sdg": "gate sdg a { si a; }",
    "tdg": "gate tdg a { ti a; }",
    "id": "gate id a { i a; }",
    "p": "gate p(l) a { phaseshift(l) a; }",
    "cp": "gate cp(l) a, b { cphaseshift(l) a, b; }",
    "rzz": "gate rzz(t) a, b { zz(t) a, b; }",
    "rxx": "gate rxx(t) a, b { xx(t) a, b; }",
    "ryy": "gate ryy(t) a, b { yy(t) a, b; }",
    "u": "gate u(t, f, l) a { U(t, f, l) a; }",
}
_STDGATES = 'include "stdgates.inc";\n'


def braket_openqasm(qasm: str, observables: list[dict[str, Any]] | None = None) -> str:
    """``circuit.qasm3`` as Amazon Braket runs it (``braket.ir.openqasm.Program(source=..., inputs={"x_0": ...})``).

    Braket's OpenQASM 3 has its own built-in gates and reads no include
    files, so ``stdgates.inc`` is replaced by definitions of the standard
    gates the circuit uses in terms of Braket's (``sx`` is Braket's ``v``).
    With ``observables``, one ``expectation z($p)`` result per model output
    is requested (exact with ``shots=0`` on a simulator).
    """
    import re

    body = qasm.replace(_STDGATES, "")
    used = set(re.findall(r"^\s*([a-z][a-z0-9_]*)\b", body, flags=re.MULTILINE))
    header, _, rest = body.partition("\n")
    defs = [_BRAKET_ALIASES[name] for name in sorted(used) if name in _BRAKET_ALIASES]
    results = [f"#pragma braket result expectation z(${int(o['physical_qubit'])})" for o in observables or []]
    return "\n".join([header, *defs, rest.rstrip("\n"), *results]) + "\n"
