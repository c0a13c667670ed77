"""``calicoctl policy explain``: why a connection is allowed or denied.

Reads the endpoints, profiles, tiers, policies, network sets and staged
policies from the datastore and decides the flow with
:mod:`felix.calc.evaluate` — the calc graph Felix runs on each node, then the
data plane's order of evaluation: the egress side of the source endpoint,
then the ingress side of the destination. Prints every policy and profile
considered, the rule that decided (or the end-of-tier / no-match deny), the
verdict, and with staged policies what would happen if they were enforced.
"""
from __future__ import annotations

import argparse
import json
from typing import Any, Callable, Optional

from calicoctl.boxtable import render

POLICY_DATA_KINDS = ("WorkloadEndpoint", "Profile", "Tier", "NetworkPolicy", "GlobalNetworkPolicy",
                     "NetworkSet", "GlobalNetworkSet", "StagedNetworkPolicy", "StagedGlobalNetworkPolicy",
                     "StagedKubernetesNetworkPolicy")


def add_parser(sub: Any, add_config: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("policy", help="Explain policy decisions.", description="Explain policy decisions.")
    psub = p.add_subparsers(dest="policy_command", metavar="<command>", parser_class=type(p))
    psub.required = True
    q = psub.add_parser(
        "explain", help="Show which policy and rule allow or deny a connection.",
        description="Walk the tiers, policies (in order) and profiles that apply to the egress of the source "
                    "and the ingress of the destination, as Felix evaluates them, and show each policy "
                    "considered, the rule that decided and the verdict. Staged policies are reported as "
                    "'would allow' / 'would deny'.",
        epilog="Examples:\n  calicoctl policy explain --from prod/frontend --to prod/db --port 5432\n"
               "  calicoctl policy explain --from 10.0.0.5 --to prod/web --port 53 --protocol UDP -o json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--from", dest="source", required=True, metavar="NS/POD|IP", help="Source pod or address.")
    q.add_argument("--to", dest="destination", required=True, metavar="NS/POD|IP",
                   help="Destination pod or address.")
    q.add_argument("--port", type=int, metavar="N", help="Destination port (ICMP: the ICMP type; default echo).")
    q.add_argument("--protocol", default="TCP", metavar="P", help="TCP, UDP, SCTP, ICMP, ICMPv6 or a number "
                                                                 "[default: TCP].")
    q.add_argument("-o", "--output", default="table", choices=("table", "json"), help="Output format.")
    add_config(q)


def load_cluster(backend: Any) -> Any:
    """Every resource policy evaluation needs, from the datastore."""
    from datastore.errors import DatastoreError
    from datastore.keys import ListOptions
    from datastore.kinds import KINDS
    from felix.calc.evaluate import Cluster

    resources: list[dict[str, Any]] = []
    for kind in POLICY_DATA_KINDS:
        if kind not in KINDS:
            continue
        try:
            resources.extend(kv.value for kv in backend.list(ListOptions(kind)).items)
        except DatastoreError:
            if not kind.startswith("Staged"):
                raise
    return Cluster(resources)


def explain(backend: Any, source: str, destination: str, port: Optional[int], protocol: str) -> Any:
    from felix.calc.evaluate import make_flow

    cluster = load_cluster(backend)
    src_ip, _ = cluster.resolve(source)
    dst_ip, _ = cluster.resolve(destination)
    return cluster.explain(make_flow(src_ip, dst_ip, protocol, port))


def _who(ep: Any, ip: str) -> str:
    return f"{ep.namespace}/{ep.pod} ({ip})" if ep is not None else f"{ip} (not a workload endpoint)"


def _side_table(side: Any) -> str:
    rows = []
    for n, s in enumerate(side.steps, 1):
        name = s.name if s.kind in ("policy", "profile") else ("(end of tier)" if s.kind == "tier-default"
                                                               else "(no policy or profile matched)")
        if s.staged:
            name = "staged:" + name
        result = {"no-match": "no match"}.get(s.result, s.result)
        rule = str(s.rule) if s.rule is not None else "-"
        if s.logged:
            rule += f" (logged by {', '.join(map(str, s.logged))})"
        rows.append([str(n), s.tier or "-", s.kind, name, rule, result])
    return render(["#", "TIER", "KIND", "POLICY / PROFILE", "RULE", "RESULT"], rows, right=(0,))


def format_table(exp: Any) -> str:
    f = exp.flow
    what = f"{f.protocol_name}/{f.dst_port}" if f.dst_port is not None else f.protocol_name
    if f.icmp_type is not None:
        what = f"{f.protocol_name} type {f.icmp_type}"
    lines = [f"Flow: {_who(exp.source, f.src_ip)} -> {_who(exp.destination, f.dst_ip)} {what}", ""]
    for title, side, ep, ip in (("Egress", exp.egress, exp.source, f.src_ip),
                                ("Ingress", exp.ingress, exp.destination, f.dst_ip)):
        if side is None:
            lines += [f"{title} of {_who(ep, ip)}: no policy applies here (not a local endpoint)", ""]
            continue
        lines.append(f"{title} of {_who(ep, ip)} on node {side.node}: {side.verdict.upper()}")
        lines.append(_side_table(side))
    decider = exp.decider
    if decider is None:
        lines.append(f"Verdict: {exp.verdict.upper()} (neither end is a workload endpoint)")
    else:
        lines.append(f"Verdict: {exp.verdict.upper()} by {decider[0].lower()} {decider[1].describe()}")
    if exp.has_staged:
        sd = exp.staged_decider
        why = f" by {sd[0].lower()} {sd[1].describe()}" if sd else ""
        change = "" if exp.staged_verdict == exp.verdict else " (changes the verdict)"
        lines.append(f"Staged policies: would {exp.staged_verdict.lower()}{why}{change}")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, out: Callable[[str], None]) -> None:
    from calicoctl.commands import CommandError, session_from

    session = session_from(args)
    try:
        try:
            exp = explain(session.backend(), args.source, args.destination, args.port, args.protocol)
        except (LookupError, ValueError) as e:
            raise CommandError(str(e.args[0]) if e.args else str(e)) from None
        if args.output == "json":
            out(json.dumps(exp.to_dict(), indent=2) + "\n")
        else:
            out(format_table(exp))
    finally:
        session.close()
