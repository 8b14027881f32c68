"""Walking jaxprs: what a traced program actually runs."""

import jax


def equations(jaxpr):
    """Every equation of a jaxpr and of its sub-jaxprs (jit, map, cond, custom rules)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for p in eqn.params.values():
            for sub in p if isinstance(p, tuple | list) else (p,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    yield from equations(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    yield from equations(sub)
