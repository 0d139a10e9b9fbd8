"""The shared discrete search: moves, the local-search step (best move plus the improving moves away from it), the
kicks (seeded CPU draws, the same as before they were shared) and the projection residual."""
import pytest
import torch

from lora_leak_lib.attacks import search

TARGET = [101, 5, 6, 7, 8, 9, 10, 102]


def mismatches(sentences):
    """A toy score to descend on: how many positions differ from ``TARGET``."""
    return torch.tensor([float(sum(a != b for a, b in zip(s, TARGET))) for s in sentences], dtype=torch.float64)


def test_substitutions_and_combine_make_moves_on_different_positions_at_once():
    ids = [101, 1, 2, 3, 4, 102]
    assert search.substituted(ids, 2, 9) == [101, 1, 9, 3, 4, 102] and ids == [101, 1, 2, 3, 4, 102]
    assert search.substitution(ids, 2, 9) == ([101, 1, 9, 3, 4, 102], {2})
    swap = (search.swapped(ids, 1, 2), {1, 2})
    assert search.combine(ids, [swap, search.substitution(ids, 4, 9)]) == [101, 2, 1, 3, 9, 102]
    batch = [(101, 1, 2, 102), (101, 3, 4, 102)]
    exchange = ([(101, 3, 2, 102), (101, 1, 4, 102)], {(0, 1), (1, 1)})
    substitute = ([(101, 1, 2, 102), (101, 3, 7, 102)], {(1, 2)})
    assert search.combine_batch(batch, [exchange, substitute]) == [(101, 3, 2, 102), (101, 1, 7, 102)]


def test_improving_moves_away_from_each_other_are_combined_and_neighbours_are_not():
    ids = [101, 5, 1, 7, 2, 9, 3, 102]  # three wrong tokens, at 2, 4 and 6
    moves = [search.substitution(ids, p, TARGET[p]) for p in (2, 4, 6)] + [search.substitution(ids, 3, 0)]
    values = mismatches([m[0] for m in moves])
    taken = search.disjoint_improvements(moves, values, torch.argsort(values).tolist(), threshold=3.0)
    assert sorted(min(places) for _, places in taken) == [2, 4, 6]  # two apart; the worsening move at 3 is not
    assert search.beside({4}) == {3, 4, 5} and search.beside({(1, 4)}) == {(1, 3), (1, 4), (1, 5)}
    assert search.descent_step(ids, moves, mismatches, threshold=3.0) == (TARGET, 0.0)
    close = [search.substitution(ids, 2, TARGET[2]), search.substitution(ids, 3, 11)]  # next to each other
    assert search.disjoint_improvements(close, torch.tensor([2.0, 2.5]), [0, 1], threshold=3.0) == close[:1]


def test_the_step_keeps_the_best_move_when_the_combination_is_worse():
    ids = [1, 2, 3, 4, 5]
    moves = [([9, 2, 3, 4, 5], {0}), ([1, 2, 9, 4, 5], {2})]
    score = lambda sentences: torch.tensor([0.0 if s == [9, 2, 3, 4, 5] else  # noqa: E731
                                            1.0 if s == [1, 2, 9, 4, 5] else 5.0 for s in sentences])
    assert search.descent_step(ids, moves, score, threshold=2.0) == ([9, 2, 3, 4, 5], 0.0)


def test_no_improving_move_or_no_move_at_all_is_a_local_minimum():
    assert search.descent_step(TARGET, [search.substitution(TARGET, 1, 0)], mismatches, threshold=0.0) is None
    assert search.descent_step(TARGET, [], mismatches, threshold=1.0) is None


def test_kicks_are_seeded_cpu_draws_and_reproducible(device):
    table = 1000 + torch.arange(8 * 5, device=device).reshape(8, 5)  # candidate tokens per position, on the device
    draws = []
    for _ in range(2):
        generator = torch.Generator().manual_seed(3)
        inner = search.random_inner_substitutions(TARGET, table, 3, generator)
        anywhere = search.random_substitutions(TARGET, table, 3, generator)
        moves = search.random_moves(inner + anywhere, 2, generator)
        draws.append((inner, anywhere, moves))
    assert draws[0] == draws[1]
    inner, anywhere, _ = draws[0]
    assert all(0 < p < len(TARGET) - 1 for _, places in inner for p in places)  # [CLS] and [SEP] stay
    assert len({p for _, places in inner for p in places}) == 3
    kicked = search.kicked(TARGET, inner)
    assert kicked[0] == 101 and kicked[-1] == 102 and sum(a != b for a, b in zip(kicked, TARGET)) == 3
    assert search.random_inner_substitutions(TARGET, table, 3, torch.Generator().manual_seed(4)) != inner


def test_the_kicks_draw_exactly_as_the_attacks_drew_before_they_were_shared(device):
    table = torch.arange(8 * 5, device=device).reshape(8, 5)
    old, new = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    expected = list(TARGET)  # span.perturb, as it was
    for p in (torch.randperm(len(expected) - 2, generator=old, device="cpu")[:3] + 1).tolist():
        expected[p] = int(table[p, torch.randint(table.shape[1], (1,), generator=old, device="cpu")])
    assert search.kicked(TARGET, search.random_inner_substitutions(TARGET, table, 3, new)) == expected
    expected = list(TARGET)  # DLG.search's kick, as it was
    positions = torch.randint(len(expected), (4,), generator=old, device="cpu")
    picks = torch.randint(table.shape[1], (4,), generator=old, device="cpu")
    for p, k in zip(positions.tolist(), picks.tolist()):
        expected[p] = int(table[p][k])
    assert search.kicked(TARGET, search.random_substitutions(TARGET, table, 4, new)) == expected
    moves = [search.substitution(TARGET, p, 0) for p in range(1, 7)]  # deep_refine's kick, as it was
    expected = list(TARGET)
    for i in torch.randperm(len(moves), generator=old, device="cpu")[:3].tolist():
        expected = search.combine(expected, [moves[i]])
    assert search.kicked(TARGET, search.random_moves(moves, 3, new)) == expected
    assert torch.equal(torch.randint(1000, (4,), generator=old), torch.randint(1000, (4,), generator=new))


@pytest.mark.parametrize("n", [1, 5, 12])
def test_the_residual_is_the_explicit_projection(device, n):
    generator = torch.Generator().manual_seed(n)
    d, k = 16, 6
    basis = torch.linalg.qr(torch.randn(d, k, generator=generator, dtype=torch.float64))[0].T.to(device)  # (k, d)
    inputs = torch.randn(n, d, generator=generator, dtype=torch.float64).to(device)               # X (n, d)
    projection = inputs.T @ torch.linalg.pinv(inputs @ inputs.T) @ inputs                           # P_X (d, d)
    explicit = (basis - basis @ projection).pow(2).sum()
    u = search.input_basis(inputs)
    assert u.shape == (d, n) and torch.allclose(u.T @ u, torch.eye(n, dtype=u.dtype, device=device), atol=1e-12)
    assert torch.allclose(search.unexplained(basis, u), basis - basis @ projection, atol=1e-12)
    assert search.subspace_residual(basis, inputs) == pytest.approx(float(explicit), rel=1e-10, abs=1e-12)
    assert float(search.projection_residuals(basis, u)) == pytest.approx(float(explicit), rel=1e-10, abs=1e-12)
    assert search.subspace_residual(basis, torch.cat([inputs, basis])) < 1e-20  # inputs that contain the span


def test_projection_residuals_score_a_batch_of_candidates_one_value_each(device):
    generator = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(16, 4, generator=generator, dtype=torch.float64))[0].T.to(device)
    candidates = torch.randn(3, 7, 16, generator=generator, dtype=torch.float64).to(device)  # (N, n, d)
    together = search.projection_residuals(basis, search.input_basis(candidates))
    one_by_one = [search.subspace_residual(basis, c) for c in candidates]
    assert together.shape == (3,) and together.tolist() == pytest.approx(one_by_one, rel=1e-10)


def test_the_gram_route_gives_the_qr_route_s_residuals_and_drops_dependent_inputs(device):
    generator = torch.Generator().manual_seed(1)
    d, n, k = 32, 10, 4
    basis = torch.linalg.qr(torch.randn(d, k, generator=generator, dtype=torch.float64))[0].T.to(device)
    candidates = torch.randn(5, n, d, generator=generator, dtype=torch.float64).to(device)
    candidates[1, :k] = basis                          # contains the span: residual 0
    candidates[2, 3] = candidates[2, 7]                # two inputs the same: the Gram matrix is singular
    candidates[3, 3] = candidates[3, 7] * (1 + 1e-9)   # nearly the same: below PIVOT
    by_gram = search.gram_residuals(basis, candidates)
    by_qr = search.projection_residuals(basis, search.input_basis(candidates))
    assert by_gram.shape == (5,) and by_gram.dtype == torch.float64
    independent = [0, 1, 4]
    assert torch.allclose(by_gram[independent], by_qr[independent], rtol=1e-10, atol=1e-12)  # float64, k = 4
    assert abs(float(by_gram[1])) < 1e-12 and float(by_gram[0]) > 0.1
    for c in (2, 3):  # the repeated input adds nothing: the residual of the set without it (QR would add rounding)
        without = torch.cat([candidates[c, :3], candidates[c, 4:]])
        assert float(by_gram[c]) == pytest.approx(search.subspace_residual(basis, without), rel=1e-6)
