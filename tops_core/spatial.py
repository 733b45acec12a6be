"""Position-aware similarity: where a token sits on the patch grid, mixed into ``sim``.

Feature similarity alone ignores layout, yet the language model reads positions
and spread-out subsets (a uniform grid, even random) preserve attention outputs
well. :func:`spatial` mixes a Gaussian proximity kernel on the token layout into
any non-negative similarity; the result stays symmetric and non-negative, so the
objective stays monotone submodular and every certificate holds.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from tops_core._dispatch import framework_of
from tops_core._validate import InvalidInputError, check_choice, check_weight, describe
from tops_core.features import Features

__all__ = [
    "spatial",
    "layout",
    "SpatialFeatures",
    "FORMS",
    "DEFAULT_STRENGTH",
    "DEFAULT_SIGMA",
    "DEFAULT_FORM",
]

#: The ways of mixing the proximity kernel ``g`` into ``s`` (see :func:`spatial`).
FORMS = ("additive", "multiplicative")
#: Default mixing weight ``lambda`` (chosen by ``benchmarks/spatial_study.py``).
DEFAULT_STRENGTH = 0.2
#: Default kernel width ``sigma``, in patches (chosen by ``benchmarks/spatial_study.py``).
DEFAULT_SIGMA = 2.0
#: Default form (chosen by ``benchmarks/spatial_study.py``).
DEFAULT_FORM = "multiplicative"


def _check_dims(name: str, dims: Any) -> tuple[int, ...]:
    """One grid: ``(h, w)`` or ``(t, h, w)`` of positive integers."""
    ok = (
        isinstance(dims, (tuple, list))
        and len(dims) in (2, 3)
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in dims)
    )
    if not ok:
        raise InvalidInputError(
            f"{name} must be (h, w) or (t, h, w) of positive integers, or a non-empty list of "
            f"those; got {dims!r}"
        )
    if min(dims) <= 0:
        raise InvalidInputError(f"{name} must have positive sizes (h, w, t >= 1); got {tuple(dims)!r}")
    return tuple(int(v) for v in dims)


def layout(grid) -> tuple[np.ndarray, np.ndarray]:
    """Integer positions and group of every token of a layout, in token order.

    Parameters
    ----------
    grid : tuple or list of tuples
        ``(h, w)`` (one image, row-major), ``(t, h, w)`` (video: frame-major,
        then row-major), or a list of those (several images or crops, their
        tokens concatenated in list order).

    Returns
    -------
    coords : numpy.ndarray, shape (N, 3), int64
        ``(frame, row, column)`` of each token; frame 0 for images.
    group : numpy.ndarray, shape (N,), int64
        Index of the token's grid in the list (0 for a single grid). Tokens of
        different groups are spatially unrelated.

    Raises
    ------
    InvalidInputError
        On an empty list, a grid that is not 2 or 3 integers, or a size below 1.
    """
    many = isinstance(grid, list)
    grids = grid if many else [grid]
    if many and not grids:
        raise InvalidInputError("grid must list at least one (h, w) or (t, h, w); got []")
    coords, group = [], []
    for g, dims in enumerate(grids):
        dims = _check_dims(f"grid[{g}]" if many else "grid", dims)
        t, h, w = dims if len(dims) == 3 else (1, *dims)
        ft, fr, fc = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
        coords.append(np.stack([ft.ravel(), fr.ravel(), fc.ravel()], axis=1))
        group.append(np.full(t * h * w, g))
    return (np.concatenate(coords).astype(np.int64), np.concatenate(group).astype(np.int64))


def _table(coords: np.ndarray, sigma: float, dtype) -> np.ndarray:
    """``exp(-d2 / (2 sigma^2))`` for every integer ``d2`` a layout can have, then 0 (other groups).

    Squared grid distances are integers, so a small host table indexed on the
    device gives every framework the same bits.
    """
    span = coords.max(axis=0) - coords.min(axis=0) if coords.size else np.zeros(3, np.int64)
    d2 = np.arange(int((span * span).sum()) + 1, dtype=np.float64)
    kernel = np.exp(-d2 / (2.0 * sigma * sigma)) if sigma > 0 else (d2 == 0).astype(np.float64)
    return np.append(kernel, 0.0).astype(dtype)


def _mix(s, g, strength: float, form: str):
    """The one formula: additive ``(1 - lam) s + lam g`` or multiplicative ``s ((1 - lam) + lam g)``."""
    if form == "additive":
        return s * (1.0 - strength) + g * strength
    return s * ((1.0 - strength) + g * strength)


def _xp(framework: str):
    if framework == "torch":
        import torch

        return torch
    if framework == "mlx":
        import mlx.core as mx

        return mx
    return np


def _kernel_like(coords_i, group_i, coords_j, group_j, table, xp):
    """Kernel block ``g[i, j]`` by table lookup: rows ``i``, columns ``j`` (arrays of ``xp``)."""
    d2 = None
    for axis in range(3):
        diff = coords_i[:, axis][:, None] - coords_j[:, axis][None, :]
        d2 = diff * diff if d2 is None else d2 + diff * diff
    index = xp.where(group_i[:, None] == group_j[None, :], d2, table.shape[0] - 1)
    return xp.take(table, index)


def _explicit_kernel(p_i, group_i, p_j, group_j, sigma: float) -> np.ndarray:
    """Kernel block of explicit coordinates: rows ``p_i``, columns ``p_j``, 0 where the groups differ."""
    diff = p_i[:, None, :] - p_j[None, :, :]
    d2 = np.einsum("ijk,ijk->ij", diff, diff)
    g = (d2 == 0).astype(np.float64) if sigma == 0 else np.exp(-d2 / (2.0 * sigma * sigma))
    return np.where(group_i[:, None] == group_j[None, :], g, 0.0)


def _check_positions(positions, n_hint: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates ``(N, D)`` float64 and each token's group, from one array or a list of them."""
    # a list of 2-D arrays is several images; a nested list of numbers is one (N, D) array
    many = isinstance(positions, (list, tuple)) and len(positions) > 0 and _ndim(positions[0]) == 2
    parts = list(positions) if many else [positions]
    arrays = [
        _one_positions(f"positions[{i}]" if many else "positions", part) for i, part in enumerate(parts)
    ]
    widths = {a.shape[1] for a in arrays}
    if len(widths) > 1:
        raise InvalidInputError(
            f"positions must give every token the same number of coordinates D; got arrays of shapes "
            f"{[a.shape for a in arrays]}"
        )
    p = np.concatenate(arrays)
    group = np.concatenate([np.full(a.shape[0], i, dtype=np.int64) for i, a in enumerate(arrays)])
    if n_hint is not None and p.shape[0] != n_hint:
        shapes = f"arrays of {[a.shape[0] for a in arrays]} rows" if many else describe(positions)
        raise InvalidInputError(f"positions must have one row per token (N = {n_hint}); got {shapes}")
    return p, group


def _ndim(x) -> int:
    ndim = getattr(x, "ndim", None)
    return int(ndim) if ndim is not None else np.ndim(x)


def _one_positions(name: str, positions) -> np.ndarray:
    given = describe(positions)
    try:
        p = np.asarray(positions)
    except Exception as exc:
        raise InvalidInputError(f"{name} must be a real array of shape (N, D); got {given}") from exc
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0 or p.dtype.kind not in "fiu":
        raise InvalidInputError(f"{name} must be a real array of shape (N, D) with N, D >= 1; got {given}")
    p = p.astype(np.float64)
    if not np.isfinite(p).all():
        raise InvalidInputError(f"{name} must be finite (no NaN or inf); got {given} with NaN or inf")
    return p


def spatial(
    sim,
    grid=None,
    *,
    positions=None,
    strength: float = DEFAULT_STRENGTH,
    sigma: float = DEFAULT_SIGMA,
    form: str = DEFAULT_FORM,
):
    r"""Position-aware similarity: mix a proximity kernel on the token layout into ``sim``.

    With ``g_ij = exp(-d_ij^2 / (2 sigma^2))`` for tokens of the same grid
    (``d`` their distance in patches; frames count as one patch apart) and
    ``g_ij = 0`` across grids:

    * ``form="additive"``: ``s'_ij = (1 - lam) s_ij + lam g_ij``; a kept
      token also covers its neighbours on the grid, so coverage spreads.
    * ``form="multiplicative"``: ``s'_ij = s_ij ((1 - lam) + lam g_ij)``; a
      kept token covers distant look-alikes less.

    Both keep ``s' >= 0`` and symmetry (when ``sim`` is symmetric), so the
    objective stays monotone submodular and its certificate holds;
    ``strength=0`` returns ``sim``'s values unchanged.

    Parameters
    ----------
    sim : array, shape (N, N) or (B, N, N), or Features
        Non-negative similarity (NumPy, ``torch.Tensor`` or ``mlx.core.array``,
        floating dtype). One layout serves every batch row. A
        :class:`~tops_core.Features` gives a :class:`SpatialFeatures` that
        builds mixed rows on demand (no ``N x N`` held).
    grid : tuple or list of tuples, optional
        The layout: ``(h, w)`` for one image (row-major tokens), ``(t, h, w)``
        for video (frame-major), or a list of those for several images or
        crops, concatenated in order; their product(s) must add up to ``N``.
    positions : array, shape (N, D), or list of arrays (N_i, D), optional
        Instead of ``grid``: explicit coordinates in patches in a common
        frame, e.g. anyres crops placed where they sit in the original image
        (tokens of different crops are then related by their distance there).
        A list gives several images, their tokens concatenated in list order
        and unrelated across arrays (as a list of grids). The kernel is
        computed on the host in float64, then moved to ``sim``'s device.
    strength : float, default ``DEFAULT_STRENGTH``
        ``lam`` in ``[0, 1]``.
    sigma : float, default ``DEFAULT_SIGMA``
        Kernel width in patches, ``>= 0`` (0: a token is near itself only).
    form : {"additive", "multiplicative"}, default ``DEFAULT_FORM``

    Returns
    -------
    array or SpatialFeatures
        ``sim``'s shape, framework, device and dtype. The diagonal is
        ``(1 - lam) s_ii + lam`` (additive) or ``s_ii`` (multiplicative): 1 for
        :func:`~tops_core.cosine` similarities, up to rounding.

    Raises
    ------
    InvalidInputError
        On a bad layout (sizes below 1, grids not adding up to ``N``), both or
        neither of ``grid`` and ``positions``, a non-float or non-square
        ``sim``, or weights out of range.

    Notes
    -----
    For a grid layout, squared distances are integers: the kernel is a host
    table of ``exp`` values (in ``sim``'s dtype) looked up on ``sim``'s
    device, so NumPy, PyTorch and MLX give the same bits. Memory: a few
    ``N x N`` integer temporaries on the device.

    Examples
    --------
    >>> import numpy as np, tops_core
    >>> sim = tops_core.cosine(np.random.default_rng(0).normal(size=(12, 8)))
    >>> mixed = tops_core.spatial(sim, (3, 4))
    >>> bool((mixed == mixed.T).all() and (mixed >= 0).all())
    True
    >>> sel = tops_core.select(np.ones(12), mixed, 4)
    >>> bool(sel.value <= sel.upper_bound)
    True
    """
    strength = check_weight("strength", strength, upper=1.0)
    sigma = check_weight("sigma", sigma)
    form = check_choice("form", form, FORMS)
    if (grid is None) == (positions is None):
        raise InvalidInputError(
            "spatial needs exactly one of grid (the layout, e.g. (24, 24)) and positions (N, D) "
            f"coordinates; got {'both' if grid is not None else 'neither'}"
        )
    if isinstance(sim, Features):
        return SpatialFeatures(sim, grid, positions=positions, strength=strength, sigma=sigma, form=form)
    framework = framework_of(sim)
    xp = _xp(framework)
    given = describe(sim)
    shape = tuple(getattr(sim, "shape", ()))
    if framework == "numpy":
        sim = np.asarray(sim)
        shape = sim.shape
    if len(shape) not in (2, 3) or shape[-1] != shape[-2] or shape[-1] == 0:
        raise InvalidInputError(f"sim must have shape (N, N) or (B, N, N) with N >= 1; got {given}")
    dtype = sim.dtype
    if not _is_float(dtype, framework):
        raise InvalidInputError(f"sim must have a floating dtype; got {given}")
    n = shape[-1]
    if positions is not None:
        p, group = _check_positions(positions, n)
        kernel = _explicit_kernel(p, group, p, group, sigma)
        g = _host_to(kernel, sim, framework, xp)
    else:
        coords, group = layout(grid)
        if coords.shape[0] != n:
            raise InvalidInputError(
                f"grid must account for every token: its sizes multiply (and add, over a list) to "
                f"{coords.shape[0]}, but sim has N = {n} ({given})"
            )
        table = _host_to(_table(coords, sigma, np.float64), sim, framework, xp)
        c = _host_to(coords, sim, framework, xp, keep_dtype=True)
        grp = _host_to(group, sim, framework, xp, keep_dtype=True)
        g = _kernel_like(c, grp, c, grp, table, xp)
    return _mix(sim, g, strength, form)


def _is_float(dtype, framework: str) -> bool:
    if framework == "numpy":
        return np.dtype(dtype).kind == "f"
    if framework == "torch":
        return dtype.is_floating_point
    import mlx.core as mx

    return mx.issubdtype(dtype, mx.floating)


def _host_to(host: np.ndarray, like, framework: str, xp, keep_dtype: bool = False):
    """A host array in ``like``'s framework and device (in ``like``'s dtype unless ``keep_dtype``)."""
    if framework == "numpy":
        return host if keep_dtype else host.astype(like.dtype)
    if framework == "torch":
        out = xp.as_tensor(host, device=like.device)
        return out if keep_dtype else out.to(like.dtype)
    out = xp.array(host.astype(np.int32) if keep_dtype else host.astype(np.float32))
    return out if keep_dtype else out.astype(like.dtype)


class SpatialFeatures(Features):
    """:class:`~tops_core.Features` whose similarity rows are mixed with the proximity kernel.

    Made by ``tops_core.spatial(Features(x), grid, ...)``; pass it to
    :func:`tops_core.select` as ``sim``. Rows are built as the base rows
    (BLAS) mixed with kernel rows from the positions, so no ``N x N`` array is
    held, and :meth:`dense` equals ``spatial(base.dense(), grid, ...)`` bit for
    bit.

    Parameters
    ----------
    base : Features
        The feature similarity.
    grid, positions, strength, sigma, form
        As in :func:`spatial`.

    Attributes
    ----------
    shift : bool
        Always ``False`` here. ``select`` reads it to choose how it starts:
        the ``O(N d)`` bound on the initial gains holds for plain shifted
        cosine rows only, so mixed rows get exact initial gains from one pass
        over row blocks (``O(N^2 d)`` time, no ``N x N`` memory). The base's own
        ``shift`` still decides its rows.
    """

    def __init__(
        self,
        base: Features,
        grid=None,
        *,
        positions=None,
        strength: float = DEFAULT_STRENGTH,
        sigma: float = DEFAULT_SIGMA,
        form: str = DEFAULT_FORM,
    ) -> None:
        if not isinstance(base, Features):
            raise InvalidInputError(f"base must be tops_core.Features; got {type(base).__name__}")
        self.base = base
        self.unit = base.unit
        self.given = base.given
        self.shift = False
        self.strength = check_weight("strength", strength, upper=1.0)
        self.sigma = check_weight("sigma", sigma)
        self.form = check_choice("form", form, FORMS)
        n = base.n
        if (grid is None) == (positions is None):
            raise InvalidInputError("SpatialFeatures needs exactly one of grid and positions")
        # Exactly one layout: explicit positions, or a grid's coordinates with their lookup table.
        self._positions: np.ndarray | None = None
        self._position_group: np.ndarray | None = None
        self._coords: np.ndarray | None = None
        self._group: np.ndarray | None = None
        self._table: np.ndarray | None = None
        if positions is not None:
            self._positions, self._position_group = _check_positions(positions, n)
        else:
            coords, self._group = layout(grid)
            if coords.shape[0] != n:
                raise InvalidInputError(
                    f"grid must account for every token: its sizes multiply (and add, over a list) "
                    f"to {coords.shape[0]}, but the features have N = {n} ({base.given})"
                )
            self._coords = coords
            self._table = _table(coords, self.sigma, base.dtype)

    def kernel(self, indices, col_start: int = 0) -> np.ndarray:
        """Kernel rows ``g[indices, col_start:]`` in the features' dtype."""
        idx = np.asarray(indices, dtype=np.int64)
        if self._positions is not None:
            p, grp = self._positions, self._position_group
            assert grp is not None  # set with the positions
            return _explicit_kernel(p[idx], grp[idx], p[col_start:], grp[col_start:], self.sigma).astype(
                self.dtype
            )
        c, grp = self._coords, self._group
        assert c is not None and grp is not None  # without positions the grid's layout is set
        return _kernel_like(c[idx], grp[idx], c[col_start:], grp[col_start:], self._table, np)

    def product(self, indices, col_start: int = 0) -> np.ndarray:
        """Mixed rows ``indices`` restricted to columns ``col_start ..`` (the base's bits, mixed)."""
        rows = self.base.product(indices, col_start)
        return _mix(rows, self.kernel(indices, col_start), self.strength, self.form).astype(self.dtype)

    def __repr__(self) -> str:
        return (
            f"SpatialFeatures({self.base!r}, strength={self.strength}, sigma={self.sigma}, "
            f"form={self.form!r})"
        )
