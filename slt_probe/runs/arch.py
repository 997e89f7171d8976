"""Which model classes a run may build: an allow-list the user writes, never a run directory.

A spec's ``model.arch = "module:Class"`` names code, and building the model runs it. A run
directory can come from anyone (a colleague's archive, a download), and its config.json names
an arch and the spec's folder: were those looked up, ``slt-probe llc`` on a hostile run
directory would run its author's code (``arch = "os:system"`` with
``kwargs = {command = "..."}`` runs a shell command). So ``model.arch`` resolves only to

1. slt_probe's own architectures, :data:`BUILTIN_ARCHS` (the classes in the repository's
   ``models/*.py`` that the shipped specs use),
2. classes defined in module files the user names: ``--model-file PATH.py`` on the command
   line (``model_files=`` in Python), or the folder of a spec file the user runs
   (``<spec folder>/module.py``, so that a spec next to its model keeps working),
3. ``module:Class`` pairs the user names, for importable modules: ``--allow-arch module:Class``
   (``allow_archs=``).

Nothing read from a run directory adds to the list; anything else is refused with a
:class:`SpecError` that says how to allow it, before any module is imported. The class must be
a ``torch.nn.Module`` subclass.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from slt_probe.runs.schema import SpecError
from slt_probe.truth.formulas import dln_llc

#: The repository's ``models/`` folder: where slt_probe's own architectures live.
REPO_MODELS = Path(__file__).resolve().parents[2] / "models"

#: slt_probe's own architectures (``models/<module>.py``), used by the shipped specs.
BUILTIN_ARCHS = ("dln:DLN", "mlp:MLP", "transformer:Transformer")


@dataclass(frozen=True)
class ArchAllowList:
    """The model classes the user vouches for, besides :data:`BUILTIN_ARCHS`.

    files: module files (any class they define); folders: folders whose ``<module>.py`` files may
    be used (the folder of a spec file the user runs); archs: ``"module:Class"`` of importable
    modules.
    """

    files: tuple[Path, ...] = ()
    folders: tuple[Path, ...] = ()
    archs: tuple[str, ...] = ()

    @classmethod
    def from_user(
        cls,
        model_files: Iterable[str | Path] = (),
        allow_archs: Iterable[str] = (),
        folders: Iterable[str | Path] = (),
    ) -> ArchAllowList:
        files = []
        for f in model_files:
            path = Path(f).resolve()
            if path.suffix != ".py" or not path.is_file():
                raise SpecError(f"--model-file {str(f)!r} is not a Python file")
            files.append(path)
        archs = tuple(allow_archs)
        for arch in archs:
            _split(arch, "--allow-arch")
        return cls(tuple(files), tuple(Path(d).resolve() for d in folders), archs)

    def with_folder(self, folder: str | Path) -> ArchAllowList:
        return ArchAllowList(self.files, (*self.folders, Path(folder).resolve()), self.archs)


def allowed_for_spec(
    spec_file: str | Path | None,
    model_files: Iterable[str | Path] = (),
    allow_archs: Iterable[str] = (),
) -> ArchAllowList:
    """The allow-list of a spec file the user runs (its folder's module files), plus the files and
    archs the user named. ``spec_file`` None (a spec given as a dict) adds no folder."""
    folders = [Path(spec_file).resolve().parent] if spec_file is not None else []
    return ArchAllowList.from_user(model_files, allow_archs, folders)


def _split(arch: str, field: str) -> tuple[str, str]:
    module_name, sep, cls_name = str(arch).partition(":")
    parts = module_name.split(".")
    if not sep or not all(p.isidentifier() for p in parts) or not cls_name.isidentifier():
        raise SpecError(f"{field} must look like 'module:Class', got {arch!r}")
    return module_name, cls_name


def _refusal(arch: str, allowed: ArchAllowList) -> SpecError:
    return SpecError(
        f"model.arch {arch!r} is not an allowed architecture. slt_probe builds its own "
        f"({', '.join(BUILTIN_ARCHS)}) and classes the user names: a module file next to the "
        "spec file being run, a file given with --model-file PATH.py, or an importable class "
        f"given with --allow-arch {arch} (model_files= / allow_archs= in Python). A run "
        "directory's config.json never adds to this list, so that opening someone else's run "
        f"runs none of their code (allowed now: {_describe(allowed)})."
    )


def _describe(allowed: ArchAllowList) -> str:
    items = [f"file {f}" for f in allowed.files] + [f"folder {d}" for d in allowed.folders]
    items += [f"arch {a}" for a in allowed.archs]
    return "; ".join(items) or "nothing else"


def resolve_arch(arch: str, allowed: ArchAllowList | None = None) -> type:
    """The class ``"module:Class"`` names, if the allow-list holds it (module docstring):
    a named file whose stem is ``module``, then ``<folder>/module.py`` for each allowed folder,
    then slt_probe's own, then an allowed importable ``module:Class``. No module is imported
    before the arch is found allowed."""
    allowed = allowed or ArchAllowList()
    module_name, cls_name = _split(arch, "model.arch")
    module = None
    candidates = [f for f in allowed.files if f.stem == module_name]
    if "." not in module_name:
        candidates += [d / f"{module_name}.py" for d in allowed.folders]
        if arch in BUILTIN_ARCHS:
            candidates.append(REPO_MODELS / f"{module_name}.py")
    for file in candidates:
        if file.is_file():
            module = _import_file(file)
            break
    if module is None and arch in allowed.archs:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise SpecError(f"model.arch {arch!r}: cannot import {module_name!r} ({exc})") from exc
    if module is None:
        raise _refusal(arch, allowed)
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise SpecError(f"model.arch {arch!r}: module {module.__name__!r} has no {cls_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise SpecError(f"model.arch {arch!r} is not a torch.nn.Module subclass")
    return cls


def _import_file(file: Path):
    # One module per file path, under a private name so user files cannot shadow packages.
    digest = hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:10]
    key = f"slt_probe_user.{file.stem}_{digest}"
    if key in sys.modules:
        return sys.modules[key]
    mod_spec = importlib.util.spec_from_file_location(key, file)
    module = importlib.util.module_from_spec(mod_spec)  # type: ignore[arg-type]
    sys.modules[key] = module
    try:
        mod_spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException:
        del sys.modules[key]
        raise
    return module


def build_model(spec: Mapping, allowed: ArchAllowList | None = None) -> nn.Module:
    """Instantiate ``model.arch(**model.kwargs)`` (initial parameters not yet scaled); the arch
    must be allowed (module docstring)."""
    cls = resolve_arch(spec["model"]["arch"], allowed)
    try:
        return cls(**spec["model"]["kwargs"])
    except TypeError as exc:
        raise SpecError(f"model.kwargs do not fit {spec['model']['arch']}: {exc}") from exc


def known_llc(spec: Mapping) -> dict | None:
    """The true learning coefficient when the spec has one in closed form: a DLN trained on a
    rank-r linear teacher (Aoyagi 2024). ``None`` otherwise."""
    data, model = spec["data"], spec["model"]
    if data["kind"] != "teacher_linear" or model["arch"] != "dln:DLN":
        return None
    widths = model["kwargs"].get("widths")
    if not widths:
        return None
    lam, mult = dln_llc(list(widths), data["rank"])
    return {"llc": lam, "multiplicity": mult, "source": "Aoyagi 2024, Theorem 1 (dln_llc)"}
