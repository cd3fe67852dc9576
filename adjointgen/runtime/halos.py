"""The halo exchange of a grid split along x into padded slabs, one per device on a ring.

A device's slab carries one halo plane on each side (plane 0 and plane n-1, bc_mask 255: kept
cells, which the generated kernels leave alone). Before a step only the populations that stream
across a cut travel (:class:`Crossing`: 5 of 19 for D3Q19, 9 of 27 for D3Q27), one plane each way
(``jax.lax.ppermute``), and are written into the halo planes; in the reverse pass the halos'
adjoints travel back and are added onto the edge planes they were read from. :class:`Exchange`
holds both directions; the writes are Warp kernels over one plane with the array in-out
(:func:`put_halos`, :func:`return_halos`): XLA's own in-place update of an array a Warp call had
just written made it copy the whole array first (``benchmarks/NOTES.md`` v39), and JAX's
transposition of an indexed update would make passes over the whole array.
"""

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import warp as wp


@dataclass(frozen=True)
class Crossing:
    """The populations that stream across a cut normal to x: ``rightward`` (``c_x = +1``), which a
    slab's first plane pulls from its left neighbour's last plane, and ``leftward`` (``c_x = -1``),
    which its last plane pulls from its right neighbour's first plane (indices into the Warp
    layout's first axis)."""

    rightward: tuple[int, ...]
    leftward: tuple[int, ...]

    @classmethod
    def of(cls, velocity_set) -> "Crossing":
        """From an XLB velocity set: its ``right_indices`` (``c_x = +1``) and ``left_indices``
        (``c_x = -1``). One halo plane is enough for the speeds of D2Q9, D3Q19 and D3Q27 (at most 1)."""
        return cls(tuple(int(l) for l in velocity_set.right_indices), tuple(int(l) for l in velocity_set.left_indices))


@dataclass(frozen=True)
class Exchange:
    """The crossing populations of padded slabs on a ring of ``devices`` along the mesh axis
    ``axis_name``: the rightward ones fill a slab's left halo (plane 0) from its left neighbour's
    last plane (-2), the leftward ones its right halo (-1) from its right neighbour's first plane (1).
    ``mode``: how Warp runs the halo kernels' JAX calls (:func:`~adjointgen.runtime.jax_face.captured_calls`)."""

    crossing: Crossing
    axis_name: str
    devices: int
    mode: wp.JaxCallableGraphMode = wp.JaxCallableGraphMode.NONE

    @property
    def indices(self) -> tuple[np.ndarray, np.ndarray]:
        """The rightward and leftward populations as int32 arrays (the halo kernels' index arguments)."""
        return tuple(np.asarray(p, dtype=np.int32) for p in (self.crossing.rightward, self.crossing.leftward))

    def receive(self, f):
        """``(left, right)``: the pieces that fill this slab's halos, sent by the neighbours from
        their edge planes (one plane of the crossing populations each)."""
        to_right = [(i, (i + 1) % self.devices) for i in range(self.devices)]
        to_left = [(i, (i - 1) % self.devices) for i in range(self.devices)]
        return self._pieces(f, -2, 1, to_right, to_left)

    def send_back(self, ct):
        """``(left, right)``: the halos' adjoints of the neighbours, returned to this slab: ``left``
        belongs onto plane -2 (it came from the right neighbour's left halo), ``right`` onto plane 1."""
        return self.send_back_pieces(self.halo_pieces(ct))

    def halo_pieces(self, ct) -> tuple:
        """The crossing populations of ``ct``'s two halo planes, not yet sent (:meth:`send_back_pieces`
        sends them; a caller that next updates ``ct`` in place passes them to that call as well,
        so that XLA reads them first instead of copying ``ct``)."""
        return self._planes(ct, 0, -1)

    def send_back_pieces(self, pieces: tuple) -> tuple:
        """:meth:`halo_pieces` sent back to the neighbours whose edge planes they were read from."""
        from_right = [((i + 1) % self.devices, i) for i in range(self.devices)]
        from_left = [((i - 1) % self.devices, i) for i in range(self.devices)]
        return self._send(pieces, from_right, from_left)

    def _pieces(self, f, left_plane: int, right_plane: int, left_to, right_to):
        """The rightward populations of plane ``left_plane`` sent along ``left_to``, the leftward
        ones of ``right_plane`` along ``right_to``."""
        return self._send(self._planes(f, left_plane, right_plane), left_to, right_to)

    def _planes(self, f, left_plane: int, right_plane: int) -> tuple:
        """The rightward populations of plane ``left_plane``, the leftward ones of ``right_plane``
        (one plane each: sliced before indexed)."""
        rightward, leftward = self.indices
        n = f.shape[1]
        return (f[:, left_plane % n:left_plane % n + 1][rightward], f[:, right_plane % n:right_plane % n + 1][leftward])

    def _send(self, pieces: tuple, left_to, right_to) -> tuple:
        from jax import lax

        left, right = pieces
        return lax.ppermute(left, self.axis_name, left_to), lax.ppermute(right, self.axis_name, right_to)

    def put(self, f, left, right):
        """``f`` with the received pieces in its halo planes (a Warp call, ``f`` in-out)."""
        return halo_calls(f.dtype, self.mode).put(f, left, right, *self.indices)[0]

    def return_(self, ct, left, right):
        """The adjoint ``ct`` with its halos' crossing populations cleared and the returned pieces
        added onto its edge planes (a Warp call, ``ct`` in-out)."""
        return halo_calls(ct.dtype, self.mode).return_(ct, left, right, *self.indices)[0]


@wp.kernel
def put_halos(f: wp.array4d(dtype=Any), left: wp.array4d(dtype=Any), right: wp.array4d(dtype=Any),
              rightward: wp.array(dtype=wp.int32), leftward: wp.array(dtype=wp.int32)):
    """The received pieces into the halo planes: ``left`` (rightward populations) into plane 0,
    ``right`` (leftward ones) into the last plane."""
    j, k = wp.tid()
    last = f.shape[1] - 1
    for a in range(rightward.shape[0]):
        f[rightward[a], 0, j, k] = left[a, 0, j, k]
    for a in range(leftward.shape[0]):
        f[leftward[a], last, j, k] = right[a, 0, j, k]


@wp.kernel
def return_halos(ct: wp.array4d(dtype=Any), left: wp.array4d(dtype=Any), right: wp.array4d(dtype=Any),
                 rightward: wp.array(dtype=wp.int32), leftward: wp.array(dtype=wp.int32)):
    """The exchange's transpose on the adjoint ``ct``: the halos' crossing populations cleared, the
    returned adjoints added onto the edge planes they were read from (``left``, from the right
    neighbour's left halo, onto plane -2; ``right`` onto plane 1)."""
    j, k = wp.tid()
    last = ct.shape[1] - 1
    for a in range(rightward.shape[0]):
        p = rightward[a]
        ct[p, 0, j, k] = ct.dtype(0.0)
        ct[p, last - 1, j, k] = ct[p, last - 1, j, k] + left[a, 0, j, k]
    for a in range(leftward.shape[0]):
        p = leftward[a]
        ct[p, last, j, k] = ct.dtype(0.0)
        ct[p, 1, j, k] = ct[p, 1, j, k] + right[a, 0, j, k]


@wp.kernel
def clear_halos(ct: wp.array4d(dtype=Any), rightward: wp.array(dtype=wp.int32), leftward: wp.array(dtype=wp.int32)):
    """The crossing populations of the halo planes of ``ct`` set to zero (the rightward ones of plane
    0, the leftward ones of the last plane: the elements whose adjoints travel back)."""
    j, k = wp.tid()
    last = ct.shape[1] - 1
    for a in range(rightward.shape[0]):
        ct[rightward[a], 0, j, k] = ct.dtype(0.0)
    for a in range(leftward.shape[0]):
        ct[leftward[a], last, j, k] = ct.dtype(0.0)


def launch_over_plane(kernel, f, *inputs) -> None:
    """One of the halo kernels on the Warp array ``f`` and its other ``inputs``: a thread per cell
    of one plane normal to x."""
    wp.launch(kernel, dim=f.shape[2:], inputs=[f, *inputs], device=f.device)


@dataclass(frozen=True)
class HaloCalls:
    """The halo kernels as JAX calls for one state dtype: ``put(f, left, right, rightward,
    leftward)`` and ``return_(ct, ...)``, each returning ``(the array,)`` updated in place."""

    put: object
    return_: object


@functools.cache
def halo_calls(dtype, mode: wp.JaxCallableGraphMode) -> HaloCalls:
    """The halo kernels as JAX calls for arrays of ``dtype``, run by Warp in graph ``mode``."""
    scalar = wp.float64 if np.dtype(dtype) == np.float64 else wp.float32
    state, indices = wp.array4d(dtype=scalar), wp.array(dtype=wp.int32)

    def call(kernel):
        def launch(f: state, left: state, right: state, rightward: indices, leftward: indices):
            launch_over_plane(kernel, f, left, right, rightward, leftward)

        launch.__name__ = kernel.key
        return wp.jax_callable(launch, num_outputs=1, in_out_argnames=["f"], graph_mode=mode)

    return HaloCalls(call(put_halos), call(return_halos))
