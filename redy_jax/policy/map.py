"""Per-layer policies: a :class:`PolicyMap` chooses each layer's policy by module path."""

from __future__ import annotations

import fnmatch
import math

import jax
import jax.numpy as jnp

from redy_jax.policy.redy import ReDy
from redy_jax.policy.static import Float, LeadingZeroSkip, Static


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

    @classmethod
    def per_layer(cls, policies, default=None) -> PolicyMap:
        """One policy per layer path (exact matches; ``default``, else static, for the
        rest)."""
        return cls(default=Static() if default is None else default,
                   rules=tuple((_escape(p), q) for p, q in policies.items()))

    def unmatched(self, paths) -> list[str]:
        """Patterns of ``rules`` that match none of ``paths``."""
        return [p for p, _ in self.rules
                if not any(fnmatch.fnmatchcase(path, p) for path in paths)]

    def with_thresholds(self, thresholds) -> PolicyMap:
        """A copy in which each layer of ``thresholds`` (``{path: array}``, exact paths)
        runs the policy its rule gives it, with those thresholds (an exact rule per layer
        ahead of the others; the policies must be ReDy policies)."""
        exact = []
        for path, thr in thresholds.items():
            policy = next((q for pattern, q in self.rules
                           if fnmatch.fnmatchcase(path, pattern)), None)
            if policy is None:
                raise ValueError(f"thresholds for layer {path!r}, which no rule of the policy "
                                 f"map names (rules: {[p for p, _ in self.rules][:8]})")
            if not hasattr(policy, "thresholds"):
                raise ValueError(f"layer {path!r} runs {policy.name}, which has no thresholds")
            exact.append((_escape(path), policy.replace(thresholds=thr)))
        return PolicyMap(self.default, (*exact, *self.rules), self.dense_default,
                         self.depthwise_default)

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


def _escape(path: str) -> str:
    """An ``fnmatch`` pattern matching ``path`` only."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in path)


def policy_from_dict(d: dict):
    """The policy a ``to_dict()`` description names."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind == "float":
        return Float()
    if kind == "static":
        return Static()
    if kind == "lzs":
        return LeadingZeroSkip(granularity=d.get("granularity", "window"))
    if kind == "redy":
        return ReDy(thresholds=jnp.asarray(d["thresholds"], jnp.float32),
                    granularity=d.get("granularity", "window"),
                    statistic=d.get("statistic", "std"), n_min=d.get("n_min", 0),
                    offsets=d.get("offsets", True),
                    clip_k=math.inf if d.get("clip_k") is None else float(d["clip_k"]))
    raise ValueError(f"policy kind must be one of float, static, lzs, redy; got {kind!r}")


def as_policy_map(policy) -> PolicyMap:
    """A single policy applies to every layer; a PolicyMap passes through."""
    return policy if isinstance(policy, PolicyMap) else PolicyMap(default=policy)


__all__ = ["PolicyMap", "as_policy_map", "policy_from_dict"]
