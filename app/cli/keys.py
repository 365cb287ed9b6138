"""`trainserve keys`: create, revoke and list API keys, straight in the database. Each
creation and revocation is written to the audit log (via `cli`) with the change itself."""

import argparse
import sys

from sqlalchemy.orm import Session, sessionmaker

from app.keys.service import KEY_PREFIX, Role, any_owner, create_key, list_keys, revoke_key
from core import audit
from core.config import get_settings
from core.db.engine import make_engine, make_sessionmaker, session_scope

ROLE_HELP = ("admin: everything, on every owner's resources; member: everything on its "
             "owner's resources (the default); viewer: read-only (lists, gets, metrics, "
             "events, predictions), 403 on every change")


def _sessions() -> sessionmaker[Session]:
    return make_sessionmaker(make_engine(get_settings()))


def _create(session: Session, owner_name: str, role: Role) -> str:
    new = create_key(session, owner_name=owner_name, role=role)
    audit.record(session, action="key.create", outcome="ok", via=audit.Via.CLI,
                 target=f"key {new.prefix} ({new.role}) of {new.owner_name}",
                 owner_id=new.owner_id, owner_name=new.owner_name)
    return new.key


def first_admin_key() -> str | None:
    """On the service's first start (no owner yet), a new admin key; otherwise None."""
    with session_scope(_sessions()) as session:
        first_start = not any_owner(session)
        return _create(session, "admin", Role.ADMIN) if first_start else None


def cmd_keys_create(args: argparse.Namespace) -> int:
    if args.admin and args.role not in (None, Role.ADMIN):
        print(f"--admin and --role {args.role} disagree: give one", file=sys.stderr)
        return 2
    role = Role.ADMIN if args.admin else Role(args.role or Role.MEMBER)
    with session_scope(_sessions()) as session:
        key = _create(session, args.name, role)
    print(key)
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    # A whole key is never echoed back (nor written to the audit log): its prefix says
    # which one was meant.
    whole = args.key.startswith(KEY_PREFIX) and len(args.key) > 10
    shown = args.key[:10] + "..." if whole else args.key
    with session_scope(_sessions()) as session:
        prefixes = revoke_key(session, which=args.key)
        audit.record(session, action="key.revoke", via=audit.Via.CLI,
                     outcome="ok" if prefixes else "not_found",
                     target=", ".join(prefixes) if prefixes else shown)
    if not prefixes:
        print(f"no active key matches {shown!r}: give the whole key, its first 10 characters "
              "(as `keys list` shows them) or its owner's name", file=sys.stderr)
        return 1
    print(f"revoked {len(prefixes)} key(s) matching {shown!r}", file=sys.stderr)
    return 0


def cmd_keys_list(_: argparse.Namespace) -> int:
    with session_scope(_sessions()) as session:
        rows = list_keys(session)
    print(f"{'PREFIX':<12}{'OWNER':<20}{'ROLE':<7}{'CREATED':<22}{'LAST USED':<22}REVOKED")
    for key, owner in rows:
        when = [f"{t:%Y-%m-%d %H:%M:%S}" if t else "-"
                for t in (key.created_at, key.last_used_at, key.revoked_at)]
        print(f"{key.prefix:<12}{owner.name[:19]:<20}{key.role:<7}{when[0]:<22}{when[1]:<22}"
              f"{when[2]}")
    return 0


def add_parsers(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    keys = commands.add_parser("keys", help="API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser(
        "create", help="print a new key as the only line on stdout",
        description=f"Print a new key as the only line on stdout. Roles: {ROLE_HELP}.")
    create.add_argument("name", help="the owner's name; created if new")
    create.add_argument("--role", choices=[r.value for r in Role], default=None,
                        help="what the key may do (default: member)")
    create.add_argument("--admin", action="store_true", help="the same as --role admin")
    create.set_defaults(func=cmd_keys_create)
    revoke = key_commands.add_parser(
        "revoke", help="revoke a key, given whole or by its first 10 characters, or every key "
        "of an owner, given by name")
    revoke.add_argument("key", help="the whole key, its first 10 characters, or an owner's name")
    revoke.set_defaults(func=cmd_keys_revoke)
    key_commands.add_parser("list", help="every key's prefix, owner, role and last use (the "
                            "keys themselves are not stored)").set_defaults(func=cmd_keys_list)
