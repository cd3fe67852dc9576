"""Code a user might write next to XLB, with the hazards `adjointgen lint` finds.

Run:  adjointgen lint examples/lint_demo.py --velocity-set D3Q19
Every flagged line below runs, and Warp's tape differentiates it without a warning, wrongly.
"""

import warp as wp

Q = 19  # D3Q19


f_vec = wp.types.vector(length=Q, dtype=wp.float32)


@wp.kernel
def kinetic_energy_loss(f: wp.array4d(dtype=wp.float32), cx: wp.array(dtype=wp.float32), loss: wp.array(dtype=wp.float32)):
    i, j, k = wp.tid()
    _f = f_vec()
    for l in range(Q):  # 19 > max_unroll: a dynamic loop writing into a local vector
        _f[l] = f[l, i, j, k]
    rho = float(0.0)
    ux = float(0.0)
    for l in range(Q):  # also dynamic, but it only adds up: Warp differentiates sums right
        rho += _f[l]
        ux += cx[l] * _f[l]
    wp.atomic_add(loss, 0, ux * ux / rho)


@wp.func
def clamp_to_wall(f_post: wp.vec3, wall: wp.vec3):
    g = f_post
    for d in range(3):
        if wall[d] > 0.5:
            g[d] = 0.0  # in-place component write
    return g


@wp.kernel
def relax_in_place(f: wp.array4d(dtype=wp.float32), omega: float):
    l, i, j, k = wp.tid()
    f[l, i, j, k] = (1.0 - omega) * f[l, i, j, k]  # read and overwritten by the same launch


def rollout(step, f_0, f_1, steps):
    tape = wp.Tape()
    with tape:
        for _ in range(steps):
            wp.launch(step, dim=f_0.shape, inputs=[f_0], outputs=[f_1])
            f_0, f_1 = f_1, f_0  # ping-pong buffers under the tape
    return tape
