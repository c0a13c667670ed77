"""``calicoctl completion bash``: a bash completion script generated from the
argparse tree (commands, sub-commands, options) plus resource kinds for the
KIND argument and file names after ``-f``."""
from __future__ import annotations

import argparse

from calicoctl.kinds import TABLES

KIND_COMMANDS = ("get", "delete", "patch", "label")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    opts: list[str] = []
    for action in parser._actions:
        opts.extend(o for o in action.option_strings)
    return sorted(set(opts))


def _words(parser: argparse.ArgumentParser, path: str, table: dict[str, str]) -> None:
    subs = _subparsers(parser)
    table[path] = " ".join(sorted(subs) + _options(parser))
    for name, sub in subs.items():
        _words(sub, f"{path} {name}".strip(), table)


def bash_script(parser: argparse.ArgumentParser) -> str:
    table: dict[str, str] = {}
    _words(parser, "", table)
    kinds = sorted({alias for t in TABLES.values() for alias in t.aliases} | {t.kind for t in TABLES.values()})
    cases = "\n".join(f'        "{path}") words="{words}" ;;' for path, words in sorted(table.items()))
    return f"""# bash completion for calicoctl
# Use: source <(calicoctl completion bash)
_calicoctl() {{
    local cur prev path words i w kind=""
    COMPREPLY=()
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    case "$prev" in
        -f|--filename|-c|--config|--from-report|--kubeconfig)
            COMPREPLY=( $(compgen -f -- "$cur") ); return 0 ;;
        -o|--output)
            if [[ "${{COMP_WORDS[1]}}" == get ]]; then
                COMPREPLY=( $(compgen -W "ps wide yaml json name custom-columns=" -- "$cur") ); return 0
            fi
            COMPREPLY=( $(compgen -f -- "$cur") ); return 0 ;;
        -l|--log-level)
            COMPREPLY=( $(compgen -W "panic fatal error warn info debug" -- "$cur") ); return 0 ;;
    esac
    path=""
    for ((i=1; i<COMP_CWORD; i++)); do
        w="${{COMP_WORDS[i]}}"
        [[ "$w" == -* ]] && continue
        case "$path" in
            "") [[ " {' '.join(sorted(_subparsers(parser)))} " == *" $w "* ]] && path="$w" ;;
            ipam|node|datastore|"datastore migrate") path="$path $w" ;;
            {'|'.join(KIND_COMMANDS)})
                if [[ -z "$kind" ]]; then kind="$w"; fi ;;
        esac
    done
    case "$path" in
        {'|'.join(KIND_COMMANDS)})
            if [[ "$cur" != -* && -z "$kind" ]]; then
                COMPREPLY=( $(compgen -W "{' '.join(kinds)}" -- "$cur") ); return 0
            fi ;;
    esac
    case "$path" in
{cases}
        *) words="" ;;
    esac
    COMPREPLY=( $(compgen -W "$words" -- "$cur") )
    return 0
}}
complete -F _calicoctl calicoctl
"""
