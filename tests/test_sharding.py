"""The sharded step on 4 host CPU devices (XLA's --xla_force_host_platform_device_count, which has
to be set before JAX starts: hence a subprocess). Forward and gradient of a 3-step rollout split
along x equal the single-device ones, for a pure-JAX step (XLB's JAX stepper: checks the halo
exchange and its transpose alone) and for the JAX face of the generated Warp kernels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import adjointgen.xlb.compat
    adjointgen.xlb.compat.apply()
    import jax, jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from adjointgen.config import Configuration
    from adjointgen.runtime.jax_face import jax_step
    from adjointgen.runtime.sharding import sharded_step
    from adjointgen.tools.verify import random_state
    from adjointgen.xlb.support import make_stepper, prepare_fields

    mesh = Mesh(np.array(jax.devices()), ("x",))
    put = lambda a: jax.device_put(a, NamedSharding(mesh, P(None, "x")))
    results = {"devices": len(jax.devices())}

    def compare(name, step, f0, f1, bc, mm, writes_f_0=True):
        c = jnp.asarray(np.random.default_rng(1).standard_normal(f0.shape).astype(f0.dtype))

        def loss_with(s):
            def loss(f, omega):
                a, b = f, f1
                for t in range(3):
                    left, new = s(a, b, bc, mm, omega)
                    a, b = new, left
                return jnp.sum(c * a), a
            return loss

        omega = jnp.asarray(1.6, dtype=f0.dtype)
        (v1, a1), (g1, o1) = jax.jit(jax.value_and_grad(loss_with(step), argnums=(0, 1), has_aux=True))(f0, omega)
        sharded = loss_with(sharded_step(step, mesh, writes_f_0=writes_f_0))
        (v2, a2), (g2, o2) = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1), has_aux=True))(put(f0), omega)
        scale = float(jnp.abs(g1).max())
        results[name] = {"forward": float(jnp.abs(a1 - a2).max()), "grad": float(jnp.abs(g1 - g2).max()) / scale,
                         "omega": abs(float(o1) - float(o2)) / abs(float(o1)), "sharded": str(g2.sharding.spec)}

    # a pure-JAX step: XLB's own JAX stepper, D2Q9 periodic (its arrays drop the z axis in 2D)
    config = Configuration.parse("D2Q9/BGK/FP32FP32")
    jstep = make_stepper(config, "jax", (16, 6))
    _, f1, bc, mm = jstep.prepare_fields()
    f0 = jnp.asarray(random_state(config, (16, 6), 0).astype(np.float32).reshape(f1.shape))
    compare("xlb_jax_periodic", lambda a, b, m, n, w: jstep(a, b, m, n, w, 0), f0, f1, bc, mm)

    # the JAX face of generated Warp kernels
    for label, shape in (("D2Q9/BGK/FP32FP32", (16, 6)), ("D3Q19/BGK/FP32FP32/cavity", (8, 4, 4)),
                         ("D2Q9/BGK/FP64FP64/obstacle", (16, 7))):
        config = Configuration.parse(label)
        if config.is_fp64:
            jax.config.update("jax_enable_x64", True)
        stepper = make_stepper(config, "warp", shape)
        _, f1, bc, mm = prepare_fields(stepper, config)
        dtype = np.float64 if config.is_fp64 else np.float32
        f0 = jnp.asarray(random_state(config, shape, 0).astype(dtype))
        step = jax_step(stepper)
        compare(label, step, f0, jnp.asarray(f1.numpy()), jnp.asarray(bc.numpy()), jnp.asarray(mm.numpy()), step.writes_f_0)
    print(json.dumps(results))
''')


def test_sharded_rollout_equals_the_single_device_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert results["devices"] == 4
    for name, r in results.items():
        if name == "devices":
            continue
        if name.startswith("xlb_jax"):  # XLA compiles the sharded program differently: FP32 rounding
            assert r["forward"] <= 1e-6 and r["grad"] <= 1e-5, (name, r)
        else:  # the same Warp kernels on the same cells
            assert r["forward"] == 0.0 and r["grad"] <= 1e-12, (name, r)
        assert r["omega"] <= (1e-12 if "FP64" in name else 1e-5), (name, r)  # summed in another order
        assert "x" in r["sharded"], (name, r)
