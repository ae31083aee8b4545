"""`firstparty operators ...`: create, list, disable, enable, set-role, reset-password.

A password is asked twice on the terminal, or read from the first line of standard input with
`--password-stdin` (for scripts); it is never an argument (shell history, `ps`). Every change is
written to the audit log as actor `cli`.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import Any

from firstparty.operators import accounts, audit
from firstparty.operators.accounts import OperatorError, Role

ROLES = [r.value for r in Role]


def add_arguments(sub: Any) -> None:
    """The `operators` command and its actions, on the main parser's subcommands."""
    ops = sub.add_parser("operators", help="admin UI accounts: create, list, disable, set-role")
    ops_sub = ops.add_subparsers(metavar="ACTION")
    create = ops_sub.add_parser("create", help="create an account (the password is asked)")
    create.add_argument("email")
    create.add_argument("--role", choices=ROLES, required=True, help="viewer reads; operator acts")
    create.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    create.set_defaults(handler=_create)
    for name, about, handler in (
        ("disable", "refuse an account's sign-ins and end its sessions", _disable),
        ("enable", "accept a disabled account's sign-ins again", _enable),
    ):
        act = ops_sub.add_parser(name, help=about)
        act.add_argument("email")
        act.set_defaults(handler=handler)
    role = ops_sub.add_parser("set-role", help="change an account's role (ends its sessions)")
    role.add_argument("email")
    role.add_argument("--role", choices=ROLES, required=True)
    role.set_defaults(handler=_set_role)
    reset = ops_sub.add_parser("reset-password", help="set a new password (ends its sessions)")
    reset.add_argument("email")
    reset.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    reset.set_defaults(handler=_reset_password)
    ops_sub.add_parser("list", help="every account: role, state, last sign-in").set_defaults(
        handler=_list
    )
    ops.set_defaults(handler=_list)


def _with_engine(args: argparse.Namespace, work: Callable[[Any], int]) -> int:
    from firstparty import cli

    engine = cli.open_database(cli.load_settings(args))
    try:
        return work(engine)
    finally:
        engine.dispose()


def _password(args: argparse.Namespace, email: str) -> str:
    """The new password, checked before the database is touched."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not sys.stdin.isatty():
        raise OperatorError("no terminal to ask the password on: give it with --password-stdin")
    else:
        password = getpass.getpass(f"password for {email}: ")
        if getpass.getpass("the same again: ") != password:
            raise OperatorError("the two passwords differ; nothing changed")
    problem = accounts.password_problem(password, email)
    if problem:
        raise OperatorError(f"{problem}; nothing changed")
    return password


def _create(args: argparse.Namespace) -> int:
    email = accounts.normalise_email(args.email)
    password = _password(args, email)

    def work(engine: Any) -> int:
        role = Role(args.role)
        made = accounts.create(engine, email=email, password=password, role=role, actor=audit.CLI)
        print(f"created {made.role} {made.email}: sign in at /admin/login")
        return 0

    return _with_engine(args, work)


def _list(args: argparse.Namespace) -> int:
    def work(engine: Any) -> int:
        found = accounts.listing(engine)
        if not found:
            print("no operators yet: firstparty operators create EMAIL --role operator")
        for op in found:
            state = "disabled" if op.disabled_at else "active"
            last = op.last_sign_in_at.strftime("%Y-%m-%d %H:%M UTC") if op.last_sign_in_at else "-"
            print(f"{op.email:<40} {op.role:<9} {state:<9} last sign-in {last}")
        return 0

    return _with_engine(args, work)


def _disable(args: argparse.Namespace) -> int:
    def work(engine: Any) -> int:
        done = accounts.disable(engine, email=args.email, actor=audit.CLI)
        print(f"disabled {done.email}: their sessions end now")
        return 0

    return _with_engine(args, work)


def _enable(args: argparse.Namespace) -> int:
    def work(engine: Any) -> int:
        done = accounts.enable(engine, email=args.email, actor=audit.CLI)
        print(f"enabled {done.email}")
        return 0

    return _with_engine(args, work)


def _set_role(args: argparse.Namespace) -> int:
    def work(engine: Any) -> int:
        done = accounts.set_role(engine, email=args.email, role=Role(args.role), actor=audit.CLI)
        print(f"{done.email} is now {done.role}; their sessions end (they sign in again)")
        return 0

    return _with_engine(args, work)


def _reset_password(args: argparse.Namespace) -> int:
    email = accounts.normalise_email(args.email)
    password = _password(args, email)

    def work(engine: Any) -> int:
        done = accounts.reset_password(engine, email=email, password=password, actor=audit.CLI)
        print(f"new password set for {done.email}; their sessions end")
        return 0

    return _with_engine(args, work)
