"""Per-layer policies: a :class:`PolicyMap` chooses each layer's policy by module path."""

from __future__ import annotations

import fnmatch

import jax


@jax.tree_util.register_pytree_node_class
class PolicyMap:
    """Per-layer policy by module path: the first matching ``fnmatch`` pattern in
    ``rules`` (a sequence of ``(pattern, policy)``) wins, else ``default`` (or
    ``dense_default`` / ``depthwise_default`` for those layer kinds, when set: the paper
    treats conv layers only). A pytree: patterns are static, policies are children."""

    def __init__(self, default, rules=(), dense_default=None, depthwise_default=None):
        self.default = default
        self.rules = tuple((str(p), q) for p, q in rules)
        self.dense_default = dense_default
        self.depthwise_default = depthwise_default

    def tree_flatten(self):
        patterns = tuple(p for p, _ in self.rules)
        children = (self.default, tuple(q for _, q in self.rules), self.dense_default,
                    self.depthwise_default)
        return children, patterns

    @classmethod
    def tree_unflatten(cls, patterns, children):
        default, policies, dense, depthwise = children
        return cls(default, tuple(zip(patterns, policies, strict=True)), dense, depthwise)

    def for_layer(self, path: str, kind: str):
        for pattern, policy in self.rules:
            if fnmatch.fnmatchcase(path, pattern):
                return policy
        if kind == "dense" and self.dense_default is not None:
            return self.dense_default
        if kind == "depthwise" and self.depthwise_default is not None:
            return self.depthwise_default
        return self.default

    def __repr__(self):
        return (f"PolicyMap(default={self.default!r}, rules={len(self.rules)}, "
                f"dense_default={self.dense_default!r}, "
                f"depthwise_default={self.depthwise_default!r})")


def as_policy_map(policy) -> PolicyMap:
    """A single policy applies to every layer; a PolicyMap passes through."""
    return policy if isinstance(policy, PolicyMap) else PolicyMap(default=policy)


__all__ = ["PolicyMap", "as_policy_map"]
