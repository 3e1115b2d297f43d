"""Descriptors from AMPTorch-style JSON configs, and a canonical form to record them.

A config is the ``descriptor_setup`` AMPTorch's ``AtomsDataset`` takes, as a dict or a
JSON file::

    {
      "fp_scheme": "gmpordernorm",          # or "gmp", "gaussian"
      "fp_params": {"MCSHs": {"orders": [0, 1, 2, 3], "sigmas": [0.4, 0.8, 1.2, 1.6, 2.0]},
                    "cutoff": 8,
                    "atom_gaussians": {"<El>": "../shared/gmp/psp_v3/<El>_pseudodensity.g"}},
      "elements": ["Cu", "C", "O"],         # optional: else the elements of the frames
      "cutoff_params": {"cutoff_func": "Cosine"}   # gaussian only
    }

Relative ``atom_gaussians`` paths resolve against the config file's directory (or
``base_dir``). The template key ``"<El>"`` stands for every element without an entry of
its own, with ``<El>`` in its path replaced by the element's symbol.

:func:`resolve_config` turns a config into its canonical, self-contained form (lower-case
scheme, explicit elements, absolute per-element paths); :func:`config_hash` identifies
the descriptor settings, with each pseudodensity file standing for its *content*, so a
store made on one machine matches the same settings on another, and
:func:`require_same_settings` refuses data written with other settings, naming them.
:func:`build_descriptor` makes the descriptor of a config (fastfp's or, with
``amptorch=True``, the AMPTorch-interface class); :func:`descriptor_setup` and
:func:`config_from_setup` convert to and from AMPTorch's ``descriptor_setup`` tuple.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

from .descriptors.base import Descriptor
from .descriptors.params import SCHEME_PARAMS, Config, Elements, check, plain
from .errors import ConfigError

#: fp_scheme -> (module, class name); imported on demand so that a missing module only
#: matters to configs that use it
SCHEMES = {
    "gmpordernorm": ("fastfp.descriptors.gmp", "GMPOrderNorm"),
    "gmp": ("fastfp.descriptors.gmp", "GMP"),
    "gaussian": ("fastfp.descriptors.gaussian", "Gaussian"),
}
#: the template key of ``atom_gaussians``
TEMPLATE = "<El>"


def load_config(config) -> tuple[dict, Path | None]:
    """``(config dict, directory of the config file or None)`` from a dict or a path
    to a JSON file. Raises ``ValueError`` for an unreadable or malformed file."""
    if isinstance(config, dict):
        return copy.deepcopy(config), None
    if not isinstance(config, (str, os.PathLike)):
        raise ValueError(f"config must be a dict or a path to a JSON file, got {type(config).__name__}")
    path = Path(config)
    return read_json_object(path, "config file"), path.resolve().parent


def read_json_object(path, what: str) -> dict:
    """The JSON object in the file ``path``; ``ValueError`` naming it (as ``what``, e.g.
    "config file") if it cannot be read, is not JSON, or holds something else."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {str(path)!r} must hold a JSON object, got {type(data).__name__}")
    return data


def _expand_gaussians(atom_gaussians, elements: list[str], base_dir: Path | None) -> dict:
    """Per-element absolute paths from a checked ``atom_gaussians`` mapping (template
    expanded). Elements without an entry are left out (the descriptor reports them)."""
    out = {}
    for el in elements:
        if el in atom_gaussians:
            path = atom_gaussians[el]
        elif TEMPLATE in atom_gaussians:
            path = atom_gaussians[TEMPLATE].replace(TEMPLATE, el)
        else:
            continue
        path = Path(os.path.expanduser(path))
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        out[el] = os.path.abspath(path)
    return out


def resolve_config(config, base_dir=None, elements: Sequence[str] | None = None) -> dict:
    """The canonical form of ``config`` (a dict or a JSON file path).

    ``elements`` is used when the config has none (e.g. the elements found in the
    frames); the config's own list wins otherwise. ``base_dir`` (default: the config
    file's directory, else the working directory) anchors relative pseudodensity paths.
    Raises :class:`~fastfp.errors.ConfigError` naming unknown keys, an unknown
    ``fp_scheme`` or a bad value by its key path (the types:
    :mod:`fastfp.descriptors.params`), ``ValueError`` for a config file that cannot be read.
    """
    where = f"config {str(config)!r}" if isinstance(config, (str, os.PathLike)) else "config"
    config, file_dir = load_config(config)
    checked = check(Config, config, where)
    scheme = checked.fp_scheme
    if checked.elements is not None:
        els = list(checked.elements)
    elif elements is not None:
        els = list(check(Elements, elements, f"{where} (elements of the frames)"))
    else:
        raise ConfigError(f"{where}: no 'elements' in the config and none given (e.g. from the frames)")
    params = plain(config["fp_params"])
    check(SCHEME_PARAMS[scheme], params, where, prefix="fp_params", context={"elements": els})
    if scheme in ("gmpordernorm", "gmp"):
        base = Path(base_dir) if base_dir is not None else file_dir
        params["atom_gaussians"] = _expand_gaussians(params["atom_gaussians"], els, base)
    return {"fp_scheme": scheme, "fp_params": params, "elements": els,
            "cutoff_params": plain(config.get("cutoff_params") or {})}


def _descriptor_class(scheme: str, amptorch: bool):
    import importlib

    module_name, class_name = SCHEMES[scheme]
    if amptorch:
        module_name = "fastfp.amptorch.descriptors"
    try:
        module = importlib.import_module(module_name)
        return getattr(module, class_name)
    except (ImportError, AttributeError):
        raise ValueError(f"fp_scheme {scheme!r} is not available in this fastfp ({module_name}.{class_name} missing)") from None


def build_descriptor(config, base_dir=None, elements: Sequence[str] | None = None, amptorch: bool = False) -> Descriptor:
    """The descriptor of an AMPTorch-style config, built as AMPTorch's
    ``construct_descriptor`` builds it (``amptorch/dataset.py``).

    Parameters
    ----------
    config : dict or path to a JSON file; see :func:`resolve_config` for ``base_dir`` and
        ``elements`` (the elements to use when the config has none)
    amptorch : build the class of :mod:`fastfp.amptorch.descriptors` (AMPTorch's
        interface: ``prepare_fingerprints``, ``descriptor_setup_hash``) instead of the
        core one of :mod:`fastfp.descriptors`

    ``fp_scheme`` "gmpordernorm" and "gmp" give ``cls(MCSHs=fp_params, elements=...)``;
    "gaussian" gives ``Gaussian(Gs=fp_params, elements=..., cutoff_params=...)`` (the
    AMPTorch interface takes ``cutoff_params``' keys as keywords, as AMPTorch's does).
    Raises ``ValueError`` (incl. :class:`~fastfp.pseudodensity.PseudodensityError`) for a
    bad config.
    """
    resolved = resolve_config(config, base_dir=base_dir, elements=elements)
    scheme = resolved["fp_scheme"]
    cls = _descriptor_class(scheme, amptorch)
    params = copy.deepcopy(resolved["fp_params"])
    els = list(resolved["elements"])
    if scheme != "gaussian":
        return cls(MCSHs=params, elements=els)
    cutoff = dict(resolved["cutoff_params"])
    if amptorch:
        return cls(Gs=params, elements=els, **cutoff)
    return cls(Gs=params, elements=els, cutoff_params=cutoff or None)


def descriptor_setup(config) -> tuple:
    """AMPTorch's ``descriptor_setup`` tuple ``(fp_scheme, fp_params, cutoff_params,
    elements)`` of a config (resolved first, so pseudodensity paths are absolute): what
    ``AtomsDataset`` takes and AMPTorch's LMDBs record."""
    resolved = resolve_config(config)
    return (resolved["fp_scheme"], copy.deepcopy(resolved["fp_params"]), dict(resolved["cutoff_params"]),
            list(resolved["elements"]))


def config_from_setup(setup, base_dir=None) -> dict:
    """The resolved config of an AMPTorch ``descriptor_setup`` tuple (the inverse of
    :func:`descriptor_setup`; numpy values become plain numbers and lists)."""
    scheme, fp_params, cutoff_params, elements = setup
    return resolve_config({"fp_scheme": str(scheme).lower(), "fp_params": plain(fp_params),
                           "elements": [str(e) for e in plain(elements)],
                           "cutoff_params": plain(cutoff_params) if isinstance(cutoff_params, dict) else {}},
                          base_dir=base_dir)


def canonical_json(config: dict) -> str:
    """Deterministic JSON of a (resolved) config: sorted keys, no whitespace."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _file_digest(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return "sha256:" + hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return "path:" + str(path)


def identity(resolved: dict) -> dict:
    """The settings that determine the fingerprints: ``resolved`` with each
    pseudodensity path replaced by the SHA-256 of the file's content (and integers
    written as floats)."""
    ident = copy.deepcopy(resolved)
    ag = ident.get("fp_params", {}).get("atom_gaussians")
    if isinstance(ag, dict):
        ident["fp_params"]["atom_gaussians"] = {el: _file_digest(p) for el, p in ag.items()}
    return _floats(ident)


def _floats(x):
    """Integers as floats, so that ``8`` and ``8.0`` count as the same setting."""
    if isinstance(x, dict):
        return {k: _floats(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_floats(v) for v in x]
    if isinstance(x, int) and not isinstance(x, bool):
        return float(x)
    return x


def config_hash(config, base_dir=None, elements: Sequence[str] | None = None) -> str:
    """SHA-256 (hex) of the canonical settings of ``config`` (see :func:`identity`)."""
    resolved = resolve_config(config, base_dir=base_dir, elements=elements)
    return hashlib.sha256(canonical_json(identity(resolved)).encode()).hexdigest()


def config_differences(a: dict, b: dict) -> list[str]:
    """Dotted names of the settings where two resolved configs' identities differ."""
    ia, ib = identity(a), identity(b)
    out = []

    def walk(x, y, prefix):
        if isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) | set(y), key=str):
                name = f"{prefix}.{key}" if prefix else str(key)
                if key not in x or key not in y:
                    out.append(name)
                else:
                    walk(x[key], y[key], name)
        elif x != y:
            out.append(prefix or "<config>")

    walk(ia, ib, "")
    return out


def require_same_settings(stored: dict, config, where: str, base_dir=None, stored_hash: str | None = None,
                          error=ValueError) -> None:
    """Raise ``error`` naming the differing settings unless ``config`` (a dict or a JSON
    path) has the descriptor settings of ``stored``, the resolved config recorded with
    data written earlier. A config without ``elements`` takes the stored ones.

    Pseudodensity files compare by content: by ``stored_hash`` (the :func:`config_hash`
    recorded when the data was written, so the files may have moved since) where given,
    else by reading the files both configs name. ``where`` names the data in the message.
    """
    resolved = resolve_config(config, base_dir=base_dir, elements=stored.get("elements"))
    if stored_hash is not None and config_hash(resolved) == stored_hash:
        return
    diff = config_differences(stored, resolved)
    if diff or stored_hash is not None:
        diff = diff or ["pseudodensity file contents (changed since it was written)"]
        raise error(f"{where} was written with different descriptor settings "
                    f"(differing: {', '.join(diff[:10])}{' ...' if len(diff) > 10 else ''})")
