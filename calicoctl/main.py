"""calicoctl: the operator's CLI for Calico resources, IPAM and node status.

Command line (stdlib argparse), dispatch, and upstream's error convention:
errors go to stderr and the exit status is 1; a bad command line prints
``Invalid option: 'calicoctl ...'`` and exits 1 too.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import NoReturn, Sequence

from calicoctl.clientconfig import DEFAULT_CONFIG_PATH
from calicoctl.kinds import resource_list_text

PROG = "calicoctl"
LOG_LEVELS = {
    "panic": logging.CRITICAL + 10,
    "fatal": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}


class Parser(argparse.ArgumentParser):
    """argparse with upstream's exit status (1) and 'Invalid option' text."""

    def error(self, message: str) -> NoReturn:
        argv = " ".join(sys.argv[1:])
        sys.stderr.write(
            f"Invalid option: '{PROG} {argv}'. Use flag '--help' to read about a specific subcommand.\n"
            f"{self.prog}: {message}\n"
        )
        sys.exit(1)


_FMT = argparse.RawDescriptionHelpFormatter


def _resource_types() -> str:
    return "Valid resource types are:\n\n" + resource_list_text() + "\n"


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="CONFIG", default=None,
                   help=f"Path to the file containing connection configuration in YAML or JSON format "
                        f"[default: {DEFAULT_CONFIG_PATH}; when absent the environment is used].")
    p.add_argument("--context", metavar="CONTEXT", help="The name of the kubeconfig context to use.")
    p.add_argument("--allow-version-mismatch", action="store_true",
                   help="Allow client and cluster versions mismatch.")


def _add_namespace(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namespace", metavar="NS",
                   help="Namespace of the resource. Only applicable to NetworkPolicy, NetworkSet and "
                        "WorkloadEndpoint. Uses the default namespace if not specified.")


def _add_file(p: argparse.ArgumentParser, required: bool, verb: str) -> None:
    p.add_argument("-f", "--filename", metavar="FILENAME", required=required,
                   help=f"File to {verb} the resources from; '-' reads stdin; a directory means every "
                        ".yaml, .yml and .json file in it.")
    p.add_argument("-R", "--recursive", action="store_true",
                   help="Process the directory given with -f recursively.")
    p.add_argument("--skip-empty", action="store_true",
                   help="Do not fail when a file or directory given with -f holds no resources.")


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        formatter_class=_FMT,
        description="Manage Calico network and security policy, view and manage endpoint configuration, "
                    "and manage a Calico node instance.",
        epilog=f"See '{PROG} <command> --help' to read about a specific subcommand.",
    )
    parser.add_argument("-l", "--log-level", default="panic", choices=sorted(LOG_LEVELS),
                        metavar="LEVEL", help="Log level: panic, fatal, error, warn, info, debug [default: panic].")
    parser.add_argument("--context", dest="global_context", metavar="CONTEXT",
                        help="The name of the kubeconfig context to use.")
    parser.add_argument("--allow-version-mismatch", dest="global_allow_mismatch", action="store_true",
                        help="Allow client and cluster versions mismatch.")
    sub = parser.add_subparsers(dest="command", metavar="<command>", parser_class=Parser)
    sub.required = True

    # -- create / apply / replace ----------------------------------------
    for name, verb, summary in (
        ("create", "create", "Create resources from a file, directory or stdin."),
        ("replace", "replace", "Replace existing resources from a file, directory or stdin."),
        ("apply", "apply", "Apply resources from a file, directory or stdin: create them if they do not "
                           "exist, replace them if they do."),
    ):
        p = sub.add_parser(name, help=summary, description=summary, formatter_class=_FMT,
                           epilog=_resource_types() + f"\nExamples:\n  {PROG} {name} -f ./policy.yaml\n"
                                  f"  cat policy.json | {PROG} {name} -f -\n")
        _add_file(p, True, verb)
        if name == "create":
            p.add_argument("--skip-exists", action="store_true",
                           help="Skip resources that already exist and count them as created.")
        _add_namespace(p)
        _add_config(p)

    # -- delete ----------------------------------------------------------
    p = sub.add_parser("delete", help="Delete resources identified by file, stdin or kind and names.",
                       description="Delete resources identified by file, directory, stdin, or by kind and names.",
                       formatter_class=_FMT,
                       epilog=_resource_types() + f"\nExamples:\n  {PROG} delete -f ./resources.yaml\n"
                              f"  {PROG} delete ippool pool-1 pool-2\n")
    p.add_argument("kind", nargs="?", metavar="KIND", help="Resource kind (case-insensitive, may be plural).")
    p.add_argument("names", nargs="*", metavar="NAME", help="Resource names.")
    _add_file(p, False, "delete")
    p.add_argument("-s", "--skip-not-exists", action="store_true",
                   help="Skip resources that do not exist and count them as deleted.")
    _add_namespace(p)
    _add_config(p)

    # -- get -------------------------------------------------------------
    p = sub.add_parser("get", help="Display resources identified by file, stdin or kind and names.",
                       description="Display resources identified by file, directory, stdin, or by kind and "
                                   "(optionally) names. Without names, every resource of the kind is listed.",
                       formatter_class=_FMT,
                       epilog=_resource_types() + "\nOutput formats (-o):\n"
                              "  ps              a table (default)\n"
                              "  wide            a table with more columns\n"
                              "  custom-columns=COL,...  a table of the named columns\n"
                              "  yaml, json      the resources, valid as input to every other command\n"
                              "  name            kind/name of each resource\n"
                              "  go-template=TEMPLATE, go-template-file=FILE\n"
                              "                  a Go text/template over the results (a subset: range, if,\n"
                              "                  with, fields, variables, join, len, index, printf, eq...);\n"
                              "                  e.g. -o go-template='{{range .}}{{range .Items}}{{.Name}}\n"
                              "                  {{\"\\n\"}}{{end}}{{end}}'\n"
                              f"\nExamples:\n  {PROG} get ippools\n  {PROG} get -o yaml policy my-policy -n prod\n")
    p.add_argument("kind", nargs="?", metavar="KIND", help="Resource kind (case-insensitive, may be plural).")
    p.add_argument("names", nargs="*", metavar="NAME", help="Resource names.")
    _add_file(p, False, "get")
    p.add_argument("-o", "--output", default="ps", metavar="OUTPUT",
                   help="Output format: ps, wide, custom-columns=..., yaml, json, name, go-template=..., "
                        "go-template-file=... [default: ps].")
    _add_namespace(p)
    p.add_argument("-A", "-a", "--all-namespaces", action="store_true",
                   help="List the requested resources across all namespaces.")
    p.add_argument("--export", action="store_true",
                   help="Strip cluster-specific metadata (only when names are given).")
    _add_config(p)

    # -- patch -----------------------------------------------------------
    p = sub.add_parser("patch", help="Patch a resource in place.", formatter_class=_FMT,
                       description="Patch one resource, identified by kind and name, in place.",
                       epilog=_resource_types() + "\nExamples:\n"
                              f"  {PROG} patch node node-0 -p '{{\"spec\":{{\"bgp\":{{\"routeReflectorClusterID\":"
                              "\"224.0.0.1\"}}}'\n"
                              f"  {PROG} patch ippool pool-1 -t json -p '[{{\"op\":\"replace\",\"path\":"
                              "\"/spec/disabled\",\"value\":true}]'\n")
    p.add_argument("kind", metavar="KIND")
    p.add_argument("names", nargs=1, metavar="NAME")
    p.add_argument("-p", "--patch", required=True, metavar="PATCH", help="The patch, as JSON.")
    p.add_argument("-t", "--type", default="strategic", choices=("strategic", "merge", "json"),
                   help="strategic (default) and merge: JSON merge patch (RFC 7386); json: JSON patch (RFC 6902).")
    _add_namespace(p)
    _add_config(p)

    # -- label -----------------------------------------------------------
    p = sub.add_parser("label", help="Add, update or remove a label of a resource.", formatter_class=_FMT,
                       description="Add or update (KEY=VALUE) or remove (KEY --remove) a label of a resource.",
                       epilog=_resource_types() + "\nExamples:\n"
                              f"  {PROG} label workloadendpoints nginx --namespace=default app=web\n"
                              f"  {PROG} label nodes node1 cluster=frontend --overwrite\n"
                              f"  {PROG} label nodes node1 cluster --remove\n")
    p.add_argument("kind", metavar="KIND")
    p.add_argument("names", nargs=1, metavar="NAME")
    p.add_argument("label", metavar="KEY[=VALUE]")
    p.add_argument("--overwrite", action="store_true", help="Overwrite the value of an existing key.")
    p.add_argument("--remove", action="store_true", help="Remove the key.")
    _add_namespace(p)
    _add_config(p)

    # -- validate --------------------------------------------------------
    p = sub.add_parser("validate", help="Validate resources in a file, directory or stdin without applying them.",
                       description="Validate resources in a file, directory or stdin without applying them.",
                       formatter_class=_FMT, epilog=_resource_types())
    _add_file(p, True, "validate")
    _add_namespace(p)

    # -- ipam ------------------------------------------------------------
    p = sub.add_parser("ipam", help="IP address management.", description="IP address management.",
                       formatter_class=_FMT)
    ipam_sub = p.add_subparsers(dest="ipam_command", metavar="<command>", parser_class=Parser)
    ipam_sub.required = True
    q = ipam_sub.add_parser("show", help="Show IP pool and block utilisation, or one address.",
                            description="Show the utilisation of the IP pools (and blocks), or whether one "
                                        "address is in use and by what.")
    q.add_argument("--ip", metavar="IP", help="Report whether this address is in use, and its attributes.")
    q.add_argument("--show-blocks", action="store_true", help="Show blocks as well as pools.")
    q.add_argument("--show-borrowed", action="store_true", help="Show addresses borrowed from other nodes' blocks.")
    q.add_argument("--show-configuration", action="store_true", help="Show the IPAM configuration.")
    _add_config(q)
    q = ipam_sub.add_parser("check", help="Check the IPAM data for leaks and inconsistencies.",
                            description="Check the integrity of the IPAM data: allocations without a workload "
                                        "or node using them (leaks), addresses in use without an allocation, "
                                        "handles without addresses. Exits 1 when problems are found.")
    q.add_argument("-o", "--output", metavar="FILE", help="Write a machine-readable report to FILE.")
    q.add_argument("--show-all-ips", action="store_true", help="Print every address checked.")
    q.add_argument("--show-problem-ips", action="store_true", help="Print every address with a problem.")
    q.add_argument("--kubeconfig", metavar="KUBECONFIG", help="Path to a kubeconfig (kubernetes datastore).")
    _add_config(q)
    q = ipam_sub.add_parser("release", help="Release addresses.",
                            description="Release one address (--ip) or every leak recorded in an "
                                        "'ipam check -o' report (--from-report).")
    g = q.add_mutually_exclusive_group(required=True)
    g.add_argument("--ip", metavar="IP", help="The address to release.")
    g.add_argument("--from-report", metavar="REPORT", action="append",
                   help="Release the leaked addresses listed in this report; given several times, only "
                        "addresses leaked in every report.")
    q.add_argument("--force", action="store_true", help="Release even if the datastore is not locked "
                                                         "(the report may be stale).")
    _add_config(q)
    q = ipam_sub.add_parser("configure", help="Change the IPAM configuration.",
                            description="Change the IPAM configuration.")
    q.add_argument("--strictaffinity", metavar="true|false",
                   help="Never borrow addresses from blocks affine to other nodes.")
    q.add_argument("--max-blocks-per-host", metavar="N", type=int,
                   help="Maximum number of blocks one node may claim (0: no limit beyond the default).")
    _add_config(q)
    q = ipam_sub.add_parser("split", help="Split an IP pool into smaller pools.", formatter_class=_FMT,
                            description="Split the IP pool given by --cidr or --name into NUMBER (a power of 2) "
                                        "IP pools of equal size, named split-<pool>-<i>.  The datastore must be "
                                        "locked first (calicoctl datastore migrate lock) and unlocked after.",
                            epilog=f"Examples:\n  {PROG} datastore migrate lock\n"
                                   f"  {PROG} ipam split --cidr=172.0.0.0/8 2\n  {PROG} datastore migrate unlock\n")
    q.add_argument("number", metavar="NUMBER", help="How many pools to split the pool into (a power of 2).")
    q.add_argument("--cidr", metavar="CIDR", help="CIDR of the IP pool to split.")
    q.add_argument("--name", metavar="POOL_NAME", help="Name of the IP pool to split.")
    _add_config(q)

    # -- node ------------------------------------------------------------
    p = sub.add_parser("node", help="Calico node management.", description="Calico node management.")
    node_sub = p.add_subparsers(dest="node_command", metavar="<command>", parser_class=Parser)
    node_sub.required = True
    node_sub.add_parser("status", help="Show the status of the Calico node and its BGP peers.",
                        description="Show whether the Calico node is running and the state of its BGP "
                                    "sessions (queried from BIRD's control socket "
                                    "/var/run/calico/bird.ctl, then /var/run/bird/bird.ctl).")
    q = node_sub.add_parser("diags", help="Gather diagnostics from this Calico node into a tarball.",
                            description="Gather this node's diagnostics (routes, links, nftables/iptables, "
                                        "sockets, BIRD state, Calico logs) into diags-<time>.tar.gz in a new "
                                        "directory under $TMPDIR (default /tmp).  Must run as root, on the node.")
    q.add_argument("--log-dir", default="/var/log/calico", metavar="LOG_DIR",
                   help="The directory containing Calico logs [default: /var/log/calico].")
    q.add_argument("--allow-version-mismatch", action="store_true", help="Allow client and cluster versions mismatch.")

    # -- datastore -------------------------------------------------------
    p = sub.add_parser("datastore", help="Calico datastore management.", description="Calico datastore management.")
    ds_sub = p.add_subparsers(dest="datastore_command", metavar="<command>", parser_class=Parser)
    ds_sub.required = True
    q = ds_sub.add_parser("migrate", help="Lock or unlock the datastore.",
                          description="Lock the datastore (ClusterInformation datastoreReady=false: Calico "
                                      "takes no new work) or unlock it again.")
    mig_sub = q.add_subparsers(dest="migrate_command", metavar="<command>", parser_class=Parser)
    mig_sub.required = True
    for name, text in (("lock", "Lock the datastore."), ("unlock", "Unlock the datastore.")):
        r = mig_sub.add_parser(name, help=text, description=text)
        _add_config(r)

    from calicoctl import explain  # policy explain
    explain.add_parser(sub, _add_config)

    # -- version ---------------------------------------------------------
    p = sub.add_parser("version", help="Display the version of calicoctl and of the cluster.",
                       description="Display the client version and, unless --client is given, the cluster's "
                                   "version and type from the datastore (which must be reachable).")
    p.add_argument("--client", action="store_true", help="Only show the client version.")
    p.add_argument("--poll", metavar="DURATION", help="Poll the cluster information at this interval (e.g. 1s, 1m).")
    _add_config(p)

    # -- completion ------------------------------------------------------
    p = sub.add_parser("completion", help="Print a shell completion script.",
                       description="Print a shell completion script, e.g. source <(calicoctl completion bash).")
    p.add_argument("shell", choices=("bash",))
    return parser


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def dispatch(args: argparse.Namespace, parser: Parser) -> None:
    from calicoctl.commands import RUNNERS

    if args.command in RUNNERS:
        RUNNERS[args.command](args, _out)
    elif args.command == "ipam":
        from calicoctl import ipamcmd

        ipamcmd.run(args, _out)
    elif args.command == "node":
        from calicoctl import nodestatus

        nodestatus.run(args, _out)
    elif args.command == "datastore":
        from calicoctl import datastorecmd

        datastorecmd.run(args, _out)
    elif args.command == "policy":
        from calicoctl import explain

        explain.run(args, _out)
    elif args.command == "version":
        from calicoctl import version

        version.run(args, _out)
    elif args.command == "completion":
        from calicoctl import completion

        _out(completion.bash_script(parser))


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=LOG_LEVELS[args.log_level], stream=sys.stderr,
                        format="%(asctime)s [%(levelname)s] %(name)s: %(message)s")
    if getattr(args, "context", None) is None and args.global_context:
        args.context = args.global_context
    if getattr(args, "context", None):
        os.environ["K8S_CURRENT_CONTEXT"] = args.context  # read by the Kubernetes datastore
    from calicoctl.commands import CommandError

    try:
        dispatch(args, parser)
    except CommandError as e:
        sys.stdout.flush()
        sys.stderr.write(f"{e}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
