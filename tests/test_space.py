"""The search space's contract: validation, identity and the GA encoding."""

import itertools

import numpy as np
import pytest

from qnas_hw.model.space import (
    EMBEDDINGS,
    ENTANGLERS,
    ROTATIONS,
    Architecture,
    SearchSpace,
    SpaceError,
)


def test_every_gene_value_round_trips_through_encoding_and_text():
    space = SearchSpace(embeddings=EMBEDDINGS)  # every known embedding, not only the default space's
    for emb, rot, ent in itertools.product(EMBEDDINGS, ROTATIONS, ENTANGLERS):
        arch = Architecture(emb, 5, 3, rot, ent)
        assert space.decode(space.encode(arch)) == arch
        assert Architecture.parse(arch.canonical()) == arch
        assert Architecture.from_dict(arch.to_dict()) == arch


def test_architecture_is_hashable_and_key_is_content_based():
    a = Architecture("angle-y", 8, 2, "ry-rz", "ring")
    b = Architecture.parse("angle-y|q8|l2|ry-rz|ring|z")
    assert a == b and hash(a) == hash(b) and a.key() == b.key()
    assert len({a, b, Architecture("angle-y", 8, 3, "ry-rz", "ring")}) == 2
    assert a.key() != Architecture("angle-x", 8, 2, "ry-rz", "ring").key()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"embedding": "angle-w"}, "unknown embedding 'angle-w'"),
        ({"n_qubits": 21}, "n_qubits=21 is out of range; use a value in 2..20"),
        ({"n_qubits": 1}, "n_qubits=1 is out of range"),
        ({"n_layers": 0}, "n_layers=0 is out of range"),
        ({"n_layers": 2.0}, "n_layers must be an integer"),
        ({"rotation": "rz"}, "unknown rotation 'rz'"),
        ({"entangler": "star"}, "unknown entangler 'star'"),
    ],
)
def test_bad_genes_name_the_value(kwargs, fragment):
    base = {"embedding": "angle-y", "n_qubits": 4, "n_layers": 2, "rotation": "ry", "entangler": "ring"}
    with pytest.raises(SpaceError, match=fragment):
        Architecture(**(base | kwargs))


def test_feature_counts_are_checked_not_adjusted():
    Architecture("amplitude", 2, 1, "ry", "none").check_features(4)
    Architecture("amplitude", 3, 1, "ry", "none").check_features(5)
    with pytest.raises(SpaceError, match="at most 4 features, got 5"):
        Architecture("amplitude", 2, 1, "ry", "none").check_features(5)
    with pytest.raises(SpaceError, match="exactly 4 features, got 3"):
        Architecture("angle-x", 4, 1, "ry", "none").check_features(3)


def test_restricted_space_bounds_sampling_and_rejections():
    space = SearchSpace(embeddings=("angle-y", "iqp"), qubits=(2, 4), layers=(1, 2), entanglers=("ring", "sparse"))
    rng = np.random.default_rng(3)
    seen = {space.sample(rng) for _ in range(300)}
    assert {a.embedding for a in seen} == {"angle-y", "iqp"}
    assert {a.n_qubits for a in seen} == {2, 3, 4}
    assert len(seen) <= space.size == 2 * 3 * 2 * 4 * 2
    with pytest.raises(SpaceError, match="n_qubits=5 is outside"):
        space.encode(Architecture("iqp", 5, 1, "ry", "ring"))
    with pytest.raises(SpaceError, match="gene n_qubits=7"):
        space.decode([0, 7, 1, 0, 0])
    with pytest.raises(SpaceError, match="lower bound must be <= upper"):
        SearchSpace(qubits=(5, 3))
    with pytest.raises(SpaceError, match="unknown entangler"):
        SearchSpace(entanglers=("ring", "star"))


def test_sandwich_corners_are_extremes():
    space = SearchSpace(qubits=(3, 6), layers=(1, 4))
    big, small = space.largest(), space.smallest()
    assert (big.n_qubits, big.n_layers, big.rotation, big.entangler) == (6, 4, "rx-ry-rz", "full")
    assert (small.n_qubits, small.n_layers, small.rotation, small.entangler) == (3, 1, "ry", "none")
    assert big.n_weights == max(space.decode(g).n_weights for g in [space.encode(big), space.encode(small)])


def test_parse_rejects_garbage_with_the_expected_form():
    with pytest.raises(SpaceError, match="expected 'EMBEDDING"):
        Architecture.parse("angle-y q8 l2")
