"""The allocation step of the per-layer search (redy_jax.search.propose) on hand-made
sensitivity tables: which choices each multiplier proposes."""

from redy_jax.search import LayerOption, propose


def opt(name):
    return LayerOption(name, quant=None, policy=None)


def names(choice):
    return {p: o.name for p, o in choice.items()}


# Layer a: a cheaper option that costs loss. Layer b: a dearer option that buys loss back
# (a wider code), and a cheaper one that costs a lot of loss.
TABLE = {
    "a": [(10.0, 0.0, opt("a0")), (4.0, 1.0, opt("a_cheap"))],
    "b": [(10.0, 0.0, opt("b0")), (12.0, -1.0, opt("b_wide")), (9.0, 5.0, opt("b_cheap"))],
}


def test_without_credit_a_gain_is_never_bought():
    props = [names(c) for _, c in propose(TABLE, 16)]
    assert props, "the savings must give candidates"
    assert all(c["b"] != "b_wide" for c in props)
    # from cautious (the base: every multiplier sits just above a breakpoint) to
    # aggressive (the best saving per unit of loss first)
    assert props[0] == {"a": "a0", "b": "b0"}
    assert {"a": "a_cheap", "b": "b0"} in props
    lams = [lam for lam, _ in propose(TABLE, 16)]
    assert lams == sorted(lams, reverse=True)


def test_with_credit_the_gain_pays_for_a_saving_elsewhere():
    """a_cheap saves 6 for +1 loss, b_wide costs 2 for -1: together they save 4 at equal
    loss; only a signed price of the loss proposes them together."""
    props = [names(c) for _, c in propose(TABLE, 16, credit_gains=True)]
    assert {"a": "a_cheap", "b": "b_wide"} in props
    assert len({tuple(sorted(c.items())) for c in props}) == len(props)  # distinct


def test_no_option_saves_nothing_to_propose():
    table = {"a": [(10.0, 0.0, opt("a0")), (12.0, 0.5, opt("worse"))]}
    assert propose(table, 8) == []
    assert propose(table, 8, credit_gains=True) == []
