"""Exact risk decomposition and data processing on finite joints (THEORY §2)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from clt_gen.duality import conditional_entropy_from_joint, risk_from_joint
from clt_gen.testing import (
    bijections,
    joint_distributions,
    merge_cells,
    non_injective_maps,
    regularizers,
)


@st.composite
def joint_and_scores(draw):
    joint = draw(joint_distributions())
    scores = draw(
        st.lists(
            st.lists(st.floats(-8, 8), min_size=joint.shape[1], max_size=joint.shape[1]),
            min_size=joint.shape[0],
            max_size=joint.shape[0],
        )
    )
    return joint, np.asarray(scores)


@given(regularizers(), joint_and_scores())
def test_risk_decomposition_is_exact(reg, js):
    joint, scores = js
    pz = joint.sum(1)
    excess = sum(pz[z] * reg.loss(joint[z] / pz[z], scores[z]) for z in range(len(pz)) if pz[z] > 0)
    risk = risk_from_joint(joint, scores, reg)
    h = conditional_entropy_from_joint(joint, reg)
    np.testing.assert_allclose(risk, h + excess, atol=1e-9)
    assert risk >= h - 1e-12


@given(
    regularizers(),
    joint_distributions().flatmap(lambda j: st.tuples(st.just(j), non_injective_maps(j.shape[0]))),
)
def test_data_processing_never_lowers_conditional_entropy(reg, jphi):
    joint, phi = jphi
    before = conditional_entropy_from_joint(joint, reg)
    after = conditional_entropy_from_joint(merge_cells(joint, phi), reg)
    assert after >= before - 1e-12


@given(
    regularizers(),
    joint_distributions().flatmap(lambda j: st.tuples(st.just(j), bijections(j.shape[0]))),
)
def test_bijection_leaves_conditional_entropy_unchanged(reg, jphi):
    joint, perm = jphi
    np.testing.assert_allclose(
        conditional_entropy_from_joint(merge_cells(joint, perm), reg),
        conditional_entropy_from_joint(joint, reg),
        atol=1e-12,
    )


@given(
    regularizers(),
    joint_distributions(n_cells=6).flatmap(
        lambda j: st.tuples(st.just(j), non_injective_maps(6), non_injective_maps(6))
    ),
)
def test_information_losses_telescope(reg, args):
    joint, phi1, phi2 = args
    z1 = merge_cells(joint, phi1)
    z2 = merge_cells(z1, phi2[: z1.shape[0]] % max(1, z1.shape[0]))
    h0, h1, h2 = (conditional_entropy_from_joint(j, reg) for j in (joint, z1, z2))
    d1, d2 = h1 - h0, h2 - h1
    assert d1 >= -1e-12 and d2 >= -1e-12
    np.testing.assert_allclose(h2, h0 + d1 + d2, atol=1e-12)
