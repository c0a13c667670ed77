"""Felix's calculation layer: pure, incremental, no kernel access.

Datastore updates go in (:class:`felix.calc.graph.CalcGraph`); per-endpoint
ordered policies, policy/profile rules and IP-set memberships come out, as
calls on a :class:`felix.calc.graph.DataplaneSink`.
"""
