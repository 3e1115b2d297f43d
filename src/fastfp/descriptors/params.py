"""Descriptor parameters and configs, typed and checked in one place (pydantic v2).

AMPTorch's parameter dicts (``fp_params``: the ``MCSHs`` of GMPOrderNorm and GMP, the
``Gs`` of Gaussian; Gaussian's ``cutoff_params``) and fastfp's config around them
(:mod:`fastfp.config`) are pydantic models here: every key has a type and a range, and
unknown keys are refused. :func:`check` validates a dict against one and turns
pydantic's errors into one :class:`~fastfp.errors.ConfigError` naming each bad key by
its path, what was given and what is expected::

    GMPOrderNorm cutoff: expected a number, got '4.0' (str)
    config 'gaussian.json' fp_params.default.G2.etas: expected a list, got 0.05 (float)

Types are strict: a number is an int or a float (not a bool or a string), a list is a
list (a single number where a list is expected is refused; AMPTorch cannot iterate it
either). NumPy arrays and scalars and tuples count as the lists and numbers they hold,
as AMPTorch's examples pass them (``np.linspace`` sigmas, ``np.logspace`` etas), and a
path may be a ``str`` or an ``os.PathLike``. The descriptor constructors
(:class:`~fastfp.descriptors.gmp.GMPOrderNorm`, :class:`~fastfp.descriptors.gmp.GMP`,
:class:`~fastfp.descriptors.gaussian.Gaussian`, hence :mod:`fastfp.amptorch`'s classes)
and :func:`fastfp.config.resolve_config` (hence ``fastfp featurize`` and ``fastfp
lmdb``) all validate here.

Keys and defaults follow AMPTorch's ``amptorch/descriptor/GMPOrderNorm/__init__.py``,
``GMP/__init__.py`` and ``Gaussian/__init__.py``.
"""

import os
from functools import lru_cache
from typing import Annotated, Literal, Optional, Union

from ase.data import atomic_numbers
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, RootModel, TypeAdapter,
                      ValidationError, ValidationInfo, field_validator, model_validator)
from pydantic_core import PydanticCustomError

from .. import harmonics
from ..errors import ConfigError

# -- value types -------------------------------------------------------------------------

Number = Annotated[float, Field(allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: probe widths sigma (Å), at least one
Sigmas = Annotated[list[Positive], Field(min_length=1)]
Order = Annotated[int, Field(ge=0, le=harmonics.MAX_ORDER)]
Group = Annotated[int, Field(ge=1)]
#: a file path (an ``os.PathLike`` counts, see :func:`plain`)
PathText = Annotated[str, Field(min_length=1)]


def _lower(value):
    return value.lower() if isinstance(value, str) else value


def _symbol(symbol: str) -> str:
    if symbol not in atomic_numbers or symbol == "X":
        raise PydanticCustomError("element", "expected a chemical element symbol")
    return symbol


def _distinct(elements: list) -> list:
    duplicates = sorted({e for e in elements if elements.count(e) > 1})
    if duplicates:
        raise ValueError(f"duplicate element(s) {duplicates}")
    return elements


#: chemical symbols, distinct, at least one
Elements = Annotated[list[Annotated[str, AfterValidator(_symbol)]], Field(min_length=1), AfterValidator(_distinct)]


class Params(BaseModel):
    """A parameter dict: strict types, no unknown keys, immutable once checked.

    An optional key without a default value has the default ``None``, which stands for
    "not given" only: ``None`` given as the value is refused (AMPTorch fails on it too)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data):
        if isinstance(data, dict):
            unknown = sorted(str(key) for key in data if key not in cls.model_fields)
            if unknown:
                raise PydanticCustomError("unknown_keys", "unknown parameter key(s) {unknown}; known keys: {known}",
                                          {"unknown": unknown, "known": sorted(cls.model_fields)})
        return data


# -- GMP: GMPOrderNorm and GMP -----------------------------------------------------------


class RsConstant(Params):
    """``{"setup": "constant", "rs": r}``: the surface harmonics' r_s is r (Å)."""

    setup: Literal["constant"]
    rs: Positive

    def inverse(self, sigma: float) -> float:
        """1/r_s of the probe of width ``sigma``."""
        return 1.0 / self.rs


class RsScale(Params):
    """``{"setup": "scale", "scale_factor": s}``: r_s is s sigma for the probe of width sigma."""

    setup: Literal["scale"]
    scale_factor: Positive

    def inverse(self, sigma: float) -> float:
        """1/r_s of the probe of width ``sigma``."""
        return 1.0 / (self.scale_factor * sigma)


#: AMPTorch's ``rs_setup`` (surface harmonics only)
RsSetup = Annotated[Union[RsConstant, RsScale], Field(discriminator="setup")]


class _GMPParams(Params):
    """What GMPOrderNorm and GMP share."""

    #: {element (or the template "<El>" in a config): path to its ``.g`` file}
    atom_gaussians: dict[str, PathText]
    rs_setup: RsSetup = RsConstant(setup="constant", rs=1.0)
    #: derivative entries below it are dropped (:mod:`fastfp.amptorch`); GMP ignores it
    prime_threshold: NonNegative = None
    #: log10 fingerprints (:mod:`fastfp.amptorch`)
    log: bool = False


class OrdersSigmas(Params):
    """GMPOrderNorm's ``"MCSHs"``: every order with every sigma."""

    orders: Annotated[list[Order], Field(min_length=1)]
    sigmas: Sigmas


class OrderSigmas(Params):
    """One entry of GMPOrderNorm's ``"MCSHs_detailed_list"``."""

    order: Order
    sigmas: Sigmas


class GMPOrderNormParams(_GMPParams):
    """GMPOrderNorm's ``MCSHs`` (see :class:`~fastfp.descriptors.gmp.GMPOrderNorm`)."""

    MCSHs: OrdersSigmas = None
    MCSHs_detailed_list: Annotated[list[OrderSigmas], Field(min_length=1)] = None
    #: Å; default from the widest sigma (:func:`~fastfp.descriptors.gmp.default_cutoff`)
    cutoff: Positive = None
    solid_harmonics: bool = True
    square: bool = True

    @model_validator(mode="after")
    def _probes_given(self):
        if self.MCSHs is None and self.MCSHs_detailed_list is None:
            raise ValueError("give 'MCSHs' (orders and sigmas) or 'MCSHs_detailed_list'")
        return self

    def setups(self) -> list[tuple[int, list[float]]]:
        """``[(order, [sigma, ...]), ...]`` in feature order (``MCSHs_detailed_list`` first, as in AMPTorch)."""
        if self.MCSHs_detailed_list is not None:
            return [(d.order, list(d.sigmas)) for d in self.MCSHs_detailed_list]
        return [(n, list(self.MCSHs.sigmas)) for n in self.MCSHs.orders]


def _check_group(order: int, group: int) -> None:
    harmonics.group_partition(order, group)  # ValueError: "MCSH order n has groups 1..k, got g"


class GroupsSigmas(Params):
    """One order's entry of GMP's ``"MCSHs"``."""

    groups: Annotated[list[Group], Field(min_length=1)]
    sigmas: Sigmas


class OrderGroupSigmas(Params):
    """One entry of GMP's ``"MCSHs_detailed_list"``."""

    order: Order
    group: Group
    sigmas: Sigmas

    @model_validator(mode="after")
    def _group_of_order(self):
        _check_group(self.order, self.group)
        return self


def _order_key(key):
    """An order key of GMP's ``"MCSHs"``: ``"0"`` .. ``"9"`` (AMPTorch's) or 0 .. 9."""
    if isinstance(key, str) and key.isdigit():
        key = int(key)
    if isinstance(key, int) and not isinstance(key, bool) and 0 <= key <= harmonics.MAX_ORDER:
        return key
    raise PydanticCustomError("mcsh_order", 'expected an MCSH order "0".."{max}" as key', {"max": harmonics.MAX_ORDER})


class GMPParams(_GMPParams):
    """GMP's ``MCSHs`` (see :class:`~fastfp.descriptors.gmp.GMP`)."""

    MCSHs: Annotated[dict[Annotated[int, BeforeValidator(_order_key)], GroupsSigmas], Field(min_length=1)] = None
    MCSHs_detailed_list: Annotated[list[OrderGroupSigmas], Field(min_length=1)] = None
    #: Å, required (as in AMPTorch's GMP)
    cutoff: Positive
    square: bool = False

    @field_validator("MCSHs", mode="before")
    @classmethod
    def _orders_once(cls, value):
        if isinstance(value, dict):
            seen = {}
            for key in value:
                try:
                    order = _order_key(key)
                except PydanticCustomError:
                    continue  # reported by the key's own check
                if order in seen:
                    raise ValueError(f"order {order} given twice (keys {seen[order]!r} and {key!r})")
                seen[order] = key
        return value

    @field_validator("MCSHs")
    @classmethod
    def _groups_of_orders(cls, value):
        for order, spec in (value or {}).items():
            for group in spec.groups:
                _check_group(order, group)
        return value

    @model_validator(mode="after")
    def _probes_given(self):
        if self.MCSHs is None and self.MCSHs_detailed_list is None:
            raise ValueError("give 'MCSHs' ({order: groups and sigmas}) or 'MCSHs_detailed_list'")
        return self

    def setups(self) -> list[tuple[int, int, list[float]]]:
        """``[(order, group, [sigma, ...]), ...]`` in feature order: ``MCSHs_detailed_list``
        as listed if given (as in AMPTorch), else by ascending order, then groups as listed."""
        if self.MCSHs_detailed_list is not None:
            return [(d.order, d.group, list(d.sigmas)) for d in self.MCSHs_detailed_list]
        return [(order, group, list(self.MCSHs[order].sigmas))
                for order in sorted(self.MCSHs) for group in self.MCSHs[order].groups]


# -- Gaussian ----------------------------------------------------------------------------


class RadialParams(Params):
    """G2: ``etas`` (scaled by 1/R_c^2) and ``rs_s`` (Å)."""

    etas: Annotated[list[NonNegative], Field(min_length=1)]
    rs_s: Annotated[list[Number], Field(min_length=1)]


class AngularParams(Params):
    """G4 and G5: ``etas``, ``zetas`` (>= 1) and ``gammas`` (lambda)."""

    etas: Annotated[list[NonNegative], Field(min_length=1)]
    zetas: Annotated[list[Annotated[float, Field(ge=1, allow_inf_nan=False)]], Field(min_length=1)]
    gammas: Annotated[list[Number], Field(min_length=1)]


class ElementGs(Params):
    """The symmetry functions of one centre element (or ``"default"``)."""

    G2: RadialParams = None
    G4: AngularParams = None
    G5: AngularParams = None
    #: R_c, Å
    cutoff: Positive

    @model_validator(mode="after")
    def _some_functions(self):
        if self.G2 is None and self.G4 is None and self.G5 is None:
            raise ValueError("no symmetry functions; give at least one of 'G2', 'G4', 'G5'")
        return self


def _gs_key(key: str) -> str:
    if key != "default" and (key not in atomic_numbers or key == "X"):
        raise PydanticCustomError("gs_key", "expected 'default' or a chemical element symbol as key")
    return key


class GaussianParams(RootModel[dict[Annotated[str, AfterValidator(_gs_key)], ElementGs]]):
    """Gaussian's ``Gs``: ``{element or "default": ElementGs}``. Validated with
    ``context={"elements": [...]}``, every element needs its own entry or ``"default"``;
    entries for other elements are checked and then ignored, as in AMPTorch."""

    model_config = ConfigDict(strict=True, frozen=True)

    @model_validator(mode="after")
    def _every_element(self, info: ValidationInfo):
        missing = [el for el in (info.context or {}).get("elements", ()) if el not in self.root]
        if missing and "default" not in self.root:
            raise ValueError(f"no parameters for element(s) {missing} and no 'default'")
        return self

    def of(self, element: str) -> ElementGs:
        """The parameters of ``element``: its own, else ``"default"``."""
        return self.root.get(element) or self.root["default"]


class CutoffParams(Params):
    """Gaussian's ``cutoff_params``: ``{"cutoff_func": "Cosine"}`` or
    ``{"cutoff_func": "Polynomial", "gamma": g}`` (the name in any case)."""

    cutoff_func: Annotated[Literal["cosine", "polynomial"], BeforeValidator(_lower)] = "cosine"
    gamma: Optional[Positive] = None

    @model_validator(mode="after")
    def _gamma_given(self):
        if self.cutoff_func == "polynomial" and self.gamma is None:
            raise ValueError("the polynomial cutoff needs 'gamma' > 0")
        return self


# -- configs -----------------------------------------------------------------------------

#: fp_scheme -> its parameters
SCHEME_PARAMS = {"gmpordernorm": GMPOrderNormParams, "gmp": GMPParams, "gaussian": GaussianParams}


class Config(Params):
    """A descriptor config (:mod:`fastfp.config`); ``fp_params`` is checked with the
    model of its ``fp_scheme`` (:data:`SCHEME_PARAMS`) separately."""

    fp_scheme: Annotated[Literal["gmpordernorm", "gmp", "gaussian"], BeforeValidator(_lower)]
    fp_params: dict
    elements: Elements = None
    cutoff_params: Optional[CutoffParams] = None

    @model_validator(mode="after")
    def _cutoff_params_of_gaussian(self):
        given = self.cutoff_params is not None and self.cutoff_params.model_fields_set
        if given and self.fp_scheme != "gaussian":
            raise ValueError(f"'cutoff_params' applies to fp_scheme 'gaussian' only; set the cutoff of "
                             f"{self.fp_scheme!r} with fp_params 'cutoff'")
        return self


# -- checking ----------------------------------------------------------------------------


def plain(value):
    """``value`` with NumPy arrays and tuples as lists, NumPy scalars as Python numbers and
    path objects as strings (dict keys kept): what the models take."""
    if isinstance(value, dict):
        return {key: plain(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # NumPy arrays and scalars
        return plain(value.tolist())
    return value


#: what pydantic's error types expect, in words
_EXPECTED = {
    "float_type": "a number", "int_type": "an integer", "bool_type": "true or false", "string_type": "a string",
    "list_type": "a list", "dict_type": "an object (a dict)", "model_type": "an object (a dict)",
    "model_attributes_type": "an object (a dict)", "finite_number": "a finite number",
    "too_short": "a non-empty list", "string_too_short": "a non-empty string",
    "union_tag_not_found": "an object with a 'setup' key",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _shown(value, kind: str) -> str:
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    return f"{text} ({type(value).__name__})" if kind.endswith("_type") else text


def _path(loc: tuple, data, missing: bool) -> str:
    """``loc`` as a key path (``MCSHs.sigmas[1]``, ``atom_gaussians['<El>']``), leaving out
    what is not a key of ``data`` (a union's tag, pydantic's ``[key]``) except the last
    one of a ``missing`` key."""
    text, node = "", data
    for k, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif missing and k == len(loc) - 1:
            node = None
        else:
            continue
        if isinstance(part, str) and part.isidentifier():
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text


def _problem(err: dict) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "missing":
        return "required, missing"
    if kind == "value_error":
        return str(err["ctx"]["error"])
    if kind == "unknown_keys":
        return msg
    if kind in _BOUNDS:
        bound = next(iter(err["ctx"].values()))
        expected = f"a value {_BOUNDS[kind]} {bound:g}" if isinstance(bound, float) else f"a value {_BOUNDS[kind]} {bound}"
    elif kind == "union_tag_invalid":
        expected = f"{err['ctx']['discriminator']} one of {err['ctx']['expected_tags']}"
    elif msg.startswith("expected "):
        expected = msg[len("expected "):]
    else:
        expected = _EXPECTED.get(kind) or msg.removeprefix("Input should be ")
    return f"expected {expected}, got {_shown(err['input'], kind)}"


@lru_cache(maxsize=None)
def _adapter(model) -> TypeAdapter:
    return TypeAdapter(model)


def check(model, data, where: str, *, prefix: str = "", context: dict | None = None):
    """``data`` validated as ``model`` (a model of this module, or a type such as
    :data:`Elements`), after :func:`plain`.

    Raises :class:`~fastfp.errors.ConfigError` listing every problem as ``"{where}
    {prefix}.{key path}: expected ..., got ..."``. ``context`` is pydantic's validation
    context (``{"elements": [...]}`` for :class:`GaussianParams`).
    """
    data = plain(data)
    try:
        return _adapter(model).validate_python(data, context=context)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = ".".join(p for p in (prefix, _path(err["loc"], data, err["type"] == "missing")) if p).replace(".[", "[")
            problems.append(f"{where}{' ' + path if path else ''}: {_problem(err)}")
        raise ConfigError("; ".join(problems)) from None
