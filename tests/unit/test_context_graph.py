"""The keyterm context graph: Aho-Corasick matches and the bonus a token sequence keeps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emostt.inference.context_graph import ContextGraph, bonus_of, term_rate

B, CAP = 1.5, 4.5

token_seqs = st.lists(st.integers(1, 5), min_size=1, max_size=4)
term_lists = st.lists(st.tuples(st.sampled_from("abcdef"), token_seqs), max_size=6)
texts = st.lists(st.integers(1, 6), max_size=30)


def first_ends(tokens: list[int], terms: list[tuple[str, list[int]]]) -> dict[str, int]:
    """Each occurring label and where its first occurrence ends, by brute force."""
    found: dict[str, int] = {}
    for end in range(1, len(tokens) + 1):
        for label, ids in terms:
            if len(ids) <= end and tokens[end - len(ids) : end] == ids:
                found.setdefault(label, end)
    return found


@given(term_lists, texts)
def test_the_graph_keeps_exactly_the_specified_bonus(
    terms: list[tuple[str, list[int]]], tokens: list[int]
) -> None:
    graph = ContextGraph(terms, B, CAP)
    assert graph.total_bonus(tokens) == pytest.approx(bonus_of(tokens, terms, B, CAP), abs=1e-9)


@given(term_lists, texts)
def test_the_kept_bonus_is_bounded_by_the_token_bonus_per_decoded_token(
    terms: list[tuple[str, list[int]]], tokens: list[int]
) -> None:
    total = ContextGraph(terms, B, CAP).total_bonus(tokens)
    assert -1e-9 <= total <= B * len(tokens) + 1e-9


@given(term_lists, texts)
def test_matches_are_every_occurring_term_overlaps_included(
    terms: list[tuple[str, list[int]]], tokens: list[int]
) -> None:
    got = ContextGraph(terms, B, CAP).matches(tokens)
    ends = first_ends(tokens, terms)
    assert sorted(got) == sorted(ends)
    assert [ends[label] for label in got] == sorted(ends.values())


@given(term_lists, texts)
def test_after_every_token_the_bonus_less_the_partial_match_is_the_prefix_bonus(
    terms: list[tuple[str, list[int]]], tokens: list[int]
) -> None:
    graph = ContextGraph(terms, B, CAP)
    state, running = graph.start, 0.0
    for end, token in enumerate(tokens, 1):
        state, delta = graph.forward(state, token)
        running += delta
        assert graph.partial(state) >= 0.0
        assert running + graph.finalize(state) == pytest.approx(
            bonus_of(tokens[:end], terms, B, CAP), abs=1e-9
        )


def test_overlapping_and_nested_terms_match_without_stacking_their_bonus() -> None:
    new, york, city, good = 10, 11, 12, 13
    terms = [("new york", [new, york]), ("york", [york]), ("new york city", [new, york, city])]
    graph = ContextGraph(terms, B, CAP)
    assert graph.matches([good, new, york, city]) == ["new york", "york", "new york city"]
    # Three tokens covered once each, at the one-token rate.
    assert graph.total_bonus([new, york, city]) == pytest.approx(3 * B)
    assert graph.total_bonus([new, york]) == pytest.approx(2 * B)
    assert graph.total_bonus([york]) == pytest.approx(B)
    # The partial "new" is taken back; "good" matches nothing.
    assert graph.total_bonus([new, good]) == 0.0
    assert graph.matches([new, good, york]) == ["york"]


def test_a_long_term_is_capped_and_a_partial_match_is_given_back() -> None:
    graph = ContextGraph([("name", [1, 2, 3, 4, 5, 6])], B, CAP)
    assert graph.total_bonus([1, 2, 3, 4, 5, 6]) == pytest.approx(CAP)
    assert term_rate(6, B, CAP) == pytest.approx(CAP / 6)
    state, held = graph.start, 0.0
    for token in [1, 2, 3, 4]:
        state, delta = graph.forward(state, token)
        held += delta
    assert held == pytest.approx(CAP)  # the partial match lifts the hypothesis meanwhile
    state, delta = graph.forward(state, 9)
    assert held + delta == pytest.approx(0.0)  # and a break takes it all back
    assert graph.partial(state) == 0.0


def test_spellings_of_one_term_count_once() -> None:
    terms = [("停下", [7, 1, 2]), ("停下", [1, 2])]  # with and without the word-start piece
    graph = ContextGraph(terms, B, CAP)
    assert graph.matches([7, 1, 2]) == ["停下"]
    assert graph.total_bonus([7, 1, 2]) == pytest.approx(3 * B)
    assert graph.total_bonus([5, 1, 2]) == pytest.approx(2 * B)
    assert graph.labels == ("停下",)


def test_an_empty_graph_is_falsy_and_inert() -> None:
    graph = ContextGraph([("x", [])], B, CAP)
    assert not graph and graph.num_states == 1
    assert graph.total_bonus([1, 2, 3]) == 0.0
    assert graph.matches([1, 2, 3]) == []
    with pytest.raises(ValueError):
        ContextGraph([], -1.0, CAP)


def test_a_term_repeated_right_after_itself_is_paid_once() -> None:
    me, alone, new, york = 1, 2, 3, 4
    graph = ContextGraph([("me", [me]), ("alone", [alone]), ("new york", [new, york])], B, CAP)
    assert graph.total_bonus([me, me]) == pytest.approx(B)
    assert graph.total_bonus([me, alone]) == pytest.approx(2 * B)
    assert graph.total_bonus([me, alone, me]) == pytest.approx(3 * B)
    assert graph.total_bonus([new, york, new, york]) == pytest.approx(2 * B)
    assert graph.total_bonus([new, york, me, new, york]) == pytest.approx(5 * B)
    assert graph.matches([me, me]) == ["me"]
