"""The sharded step and the sharded rollout on 4 host CPU devices (XLA's
--xla_force_host_platform_device_count, which has to be set before JAX starts: hence a
subprocess). Forward and gradient of a 3-step loop of sharded steps split along x equal the
single-device ones, for a pure-JAX step (XLB's JAX stepper: checks the halo exchange and its
transpose alone) and for the JAX face of the generated Warp kernels. The sharded rollout (padded
slabs, crossing populations only, checkpointed segments) gives the single-device states and state
gradients bit for bit, and a halo that leaves one crossing population out is caught; so does the
rollout whose interior computes while the halos travel (adjointgen.runtime.overlap), with solid
cells on the planes next to a cut, and one that leaves an edge plane out is caught; and the
rollout of a split step (ZouHe cells from per-device lists), where a list one cell short is caught."""

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
    from adjointgen.errors import RuntimeArgumentError
    from adjointgen.runtime import overlap as overlap_module
    from adjointgen.runtime.overlap import refusal as overlap_refusal
    from adjointgen.runtime import sharding
    from adjointgen.runtime.sharding import Crossing, sharded_rollout, sharded_step
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

    def rollout(name, step, f0, f1, bc, mm, crossing, fields=None, steps=5, overlap=False, split=None):
        # 5 steps in segments of 2: two checkpointed segments and a rest of one step
        dtype = f0.dtype
        c = jnp.asarray(np.random.default_rng(2).standard_normal(f0.shape).astype(dtype))
        run = sharded_rollout(step, mesh, steps, crossing, segment=2, overlap=overlap, split=split)
        extra = () if fields is None else (fields,)

        def one_device(f, g, omega, *extra):
            for t in range(steps):
                left, new = step(f, g, bc, mm, omega, *extra)
                f, g = new, left
            return f, g

        def loss_with(r):
            def loss(f, g, omega, *extra):
                a, b = r(f, g, omega, *extra)
                return jnp.sum(c * a) + 0.5 * jnp.sum(c * b), (a, b)
            return loss

        omega = jnp.asarray(1.6, dtype=dtype)
        arguments = (0, 1, 2) + ((3,) if fields is not None else ())
        grad = lambda r: jax.jit(jax.value_and_grad(loss_with(r), argnums=arguments, has_aux=True))
        (_, s1), g1 = grad(one_device)(f0, f1, omega, *extra)
        masks = (put(bc), put(mm))  # known when JAX traces the loss: a split step's lists come from the mask
        sharded = lambda f, g, w, *extra: run(f, g, *masks, w, *extra)
        (_, s2), g2 = grad(sharded)(put(f0), put(f1), omega, *({k: put(v) for k, v in fields.items()} for fields in extra))
        # a field's gradient, like omega's, is a sum over the steps, which the loop and the
        # checkpointed scan add in different orders
        fields_error = max([float(jnp.abs(g1[3][k] - g2[3][k]).max() / jnp.abs(g1[3][k]).max()) for k in fields]
                           if fields is not None else [0.0])
        # omega as a number: built into the steps (no read-back), the same state gradients
        (_, s3), fixed = jax.jit(jax.value_and_grad(lambda f, g, *extra: loss_with(sharded)(f, g, 1.6, *extra),
                                                    argnums=(0, 1), has_aux=True))(
            put(f0), put(f1), *({k: put(v) for k, v in fields.items()} for fields in extra))
        results["rollout " + name + " (omega a number)"] = {  # omega and the fields are not differentiated here
            "forward": max(float(jnp.abs(a - b).max()) for a, b in zip(s1, s3)),
            "grad": max(float(jnp.abs(a - b).max()) for a, b in zip(g1[:2], fixed)), "fields": None, "omega": None,
            "sharded": str(fixed[0].sharding.spec)}
        results["rollout " + name] = {
            "forward": max(float(jnp.abs(a - b).max()) for a, b in zip(s1, s2)),
            "grad": max(float(jnp.abs(a - b).max()) for a, b in zip(g1[:2], g2[:2])), "fields": fields_error,
            "omega": abs(float(g1[2]) - float(g2[2])) / abs(float(g1[2])), "sharded": str(g2[0].sharding.spec)}

    # a pure-JAX step: XLB's own JAX stepper, D2Q9 periodic (its arrays drop the z axis in 2D)
    config = Configuration.parse("D2Q9/BGK/FP32FP32")
    jstep = make_stepper(config, "jax", (16, 6))
    _, f1, bc, mm = jstep.prepare_fields()
    f0 = jnp.asarray(random_state(config, (16, 6), 0).astype(np.float32).reshape(f1.shape))
    compare("xlb_jax_periodic", lambda a, b, m, n, w: jstep(a, b, m, n, w, 0), f0, f1, bc, mm)

    # the JAX face of generated Warp kernels
    def face_of(label, shape):
        config = Configuration.parse(label)
        return jax_step(make_stepper(config, "warp", shape))
    cavity_step, obstacle_step = face_of("D2Q9/BGK/FP32FP32/cavity", (16, 6)), face_of("D2Q9/BGK/FP32FP32/obstacle", (16, 7))
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
        results.setdefault("carried", {})[label] = step.carried is not None  # the rollout's fresh steps
        f1, bc, mm = jnp.asarray(f1.numpy()), jnp.asarray(bc.numpy()), jnp.asarray(mm.numpy())
        compare(label, step, f0, f1, bc, mm, step.writes_f_0)
        crossing = Crossing.of(stepper.velocity_set)
        rollout(label, step, f0, f1, bc, mm, crossing)
        if label.startswith("D2Q9/BGK/FP32"):  # a halo without one crossing population must show
            rollout(label + " (one population short)", step, f0, f1, bc, mm,
                    Crossing(crossing.rightward[1:], crossing.leftward), overlap=False)
            # the interior computed while the halos travel, with solid cells on the edge planes of
            # two devices (x = 3, 4: a cut between them) and inside a slab (x = 9, 10), and without
            results["overlap"] = {"plain": overlap_refusal(step), "cavity": overlap_refusal(cavity_step)}
            solid = bc.at[0, 3:6, 2:4].set(255).at[0, 9:11, 0:2].set(255)
            for mask, kind in ((bc, "periodic"), (solid, "solid cells")):
                for overlap in (False, True):
                    rollout(f"{label} {kind} (overlap={overlap})", step, f0, f1, mask, mm, crossing, overlap=overlap)
            # an overlapped step whose second edge view is the first one again must show
            real_views = overlap_module.edge_views
            overlap_module.edge_views = lambda planes: (slice(0, 3), slice(0, 3))
            rollout(label + " (one edge view short)", jax_step(stepper), f0, f1, solid, mm, crossing, overlap=True)
            overlap_module.edge_views = real_views
            try:  # ZouHe updates f_0 in place: no overlapped step, and a message saying why
                sharded_rollout(obstacle_step, mesh, 3, crossing, overlap=True)
            except RuntimeArgumentError as error:
                results["overlap"]["refused"] = str(error)
        if label.endswith("obstacle"):
            # the ZouHe cells from per-device lists made from the mask (omega a number, and traced:
            # the split's device-omega variants), and a list that leaves out one ZouHe cell
            rollout(label + " (split)", step, f0, f1, bc, mm, crossing, split=True)
            real_lists = sharding._device_lists

            def one_short(*args):
                rows = real_lists(*args)
                rows[np.flatnonzero(rows.any(axis=1))[0]] = 0  # a real row made a padding row
                return rows
            sharding._device_lists = one_short
            rollout(label + " (one listed cell short)", jax_step(stepper), f0, f1, bc, mm, crossing, split=True)
            sharding._device_lists = real_lists
            # the masks as jit arguments, the lists made beforehand and passed as one too
            run = sharded_rollout(step, mesh, 5, crossing, segment=2, split=True)
            lists = run.device_lists(put(bc))
            with_lists = jax.jit(lambda f, g, b, m, cells: run(f, g, b, m, 1.6, listed=cells))
            whole = sharded_rollout(step, mesh, 5, crossing, segment=2, split=False)(put(f0), put(f1), put(bc), put(mm), 1.6)
            short = lists.copy()
            short[np.flatnonzero(short.any(axis=1))[0]] = 0  # one ZouHe cell left out: must show
            results["lists passed"] = {"rows": int(len(lists)), **{name: max(
                float(jnp.abs(a - b).max()) for a, b in zip(with_lists(put(f0), put(f1), put(bc), put(mm), cells), whole))
                for name, cells in (("states", lists), ("short", short))}}
    # a design field: the porous collision's porosity, split along x like the state
    config = Configuration.parse("D2Q9/PorousBGK/FP64FP64")
    stepper = make_stepper(config, "warp", (16, 6))
    _, f1, bc, mm = prepare_fields(stepper, config)
    step = jax_step(stepper)
    porosity = np.random.default_rng(3).uniform(0.0, 0.6, step.field_shapes["porosity"])
    rollout(config.label, step, jnp.asarray(random_state(config, (16, 6), 0)), jnp.asarray(f1.numpy()),
            jnp.asarray(bc.numpy()), jnp.asarray(mm.numpy()), Crossing.of(stepper.velocity_set),
            fields={"porosity": jnp.asarray(porosity)})
    results["crossing"] = {name: [len(c.rightward), len(c.leftward)] for name, c in (
        ("D3Q19", Crossing.of(make_stepper(Configuration.parse("D3Q19/BGK/FP32FP32"), "warp", (4, 4, 4)).velocity_set)),
        ("D3Q27", Crossing.of(make_stepper(Configuration.parse("D3Q27/BGK/FP32FP32"), "warp", (4, 4, 4)).velocity_set)))}
    print(json.dumps(results))
''')


def test_sharded_rollout_equals_the_single_device_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert results["devices"] == 4
    assert results.pop("crossing") == {"D3Q19": [5, 5], "D3Q27": [9, 9]}
    assert all(results.pop("carried").values())  # every rollout above but the porous one ran fresh adjoints
    for control in ("one population short", "one edge view short"):  # the checks reject a wrong exchange
        short = results.pop(f"rollout D2Q9/BGK/FP32FP32 ({control})")
        results.pop(f"rollout D2Q9/BGK/FP32FP32 ({control}) (omega a number)")
        assert short["forward"] > 1e-3 and short["grad"] > 1e-3, (control, short)
    # a list one ZouHe cell short, with omega a number and traced (the split's device-omega variants)
    for name in ("(one listed cell short) (omega a number)", "(one listed cell short)"):
        short = results.pop("rollout D2Q9/BGK/FP64FP64/obstacle " + name)
        assert short["forward"] > 1e-3 and short["grad"] > 1e-3, (name, short)
    assert "rollout D2Q9/BGK/FP64FP64/obstacle (split) (omega a number)" in results
    passed = results.pop("lists passed")
    assert passed["rows"] > 0 and passed["states"] == 0.0 and passed["short"] > 1e-3, passed
    overlap = results.pop("overlap")
    assert overlap["plain"] is None, overlap  # the periodic step runs overlapped
    assert "slots" in overlap["cavity"] and "in place" in overlap["refused"], overlap
    assert {name for name in results if "overlap=True" in name} == {
        "rollout D2Q9/BGK/FP32FP32 periodic (overlap=True)", "rollout D2Q9/BGK/FP32FP32 solid cells (overlap=True)",
        "rollout D2Q9/BGK/FP32FP32 periodic (overlap=True) (omega a number)",
        "rollout D2Q9/BGK/FP32FP32 solid cells (overlap=True) (omega a number)"}
    for name, r in results.items():
        if name == "devices":
            continue
        if name.startswith("rollout"):  # bit for bit: every element of a state gradient has one writer
            assert r["forward"] == 0.0 and r["grad"] == 0.0, (name, r)
            if r["omega"] is None:  # omega a number: nothing else to compare
                continue
            assert r["fields"] <= 1e-14, (name, r)
        elif name.startswith("xlb_jax"):  # XLA compiles the sharded program differently: FP32 rounding
            assert r["forward"] <= 1e-6 and r["grad"] <= 1e-5, (name, r)
        else:  # the same Warp kernels on the same cells
            assert r["forward"] == 0.0 and r["grad"] <= 1e-12, (name, r)
        assert r["omega"] <= (1e-12 if "FP64" in name else 1e-5), (name, r)  # summed in another order
        assert "x" in r["sharded"], (name, r)
