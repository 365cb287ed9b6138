"""`trainserve keys revoke` takes the whole key, its 10-character prefix, or the owner's name."""

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app import cli
from app.cli import keys as key_commands
from app.keys.service import create_key, hash_key, owner_for_key_hash
from core.config import Settings
from core.db.engine import make_engine, make_sessionmaker, session_scope
from core.db.tables import Base


@pytest.fixture
def sessions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> sessionmaker[Session]:
    settings = Settings(data_dir=tmp_path)
    Base.metadata.create_all(make_engine(settings))
    monkeypatch.setattr(key_commands, "get_settings", lambda: settings)
    return make_sessionmaker(make_engine(settings))


def _keys(sessions: sessionmaker[Session], owner: str, count: int) -> list[str]:
    with session_scope(sessions) as session:
        return [create_key(session, owner_name=owner).key for _ in range(count)]


def _works(sessions: sessionmaker[Session], key: str) -> bool:
    with sessions() as session:
        return owner_for_key_hash(session, hash_key(key)) is not None


@pytest.mark.parametrize("form", ["whole", "prefix"])
def test_one_key_by_its_whole_text_or_its_prefix(sessions: sessionmaker[Session], form: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    mine, other = _keys(sessions, "alice", 2)
    given = mine if form == "whole" else mine[:10]
    assert cli.main(["keys", "revoke", given]) == 0
    assert not _works(sessions, mine) and _works(sessions, other)
    err = capsys.readouterr().err
    assert "revoked 1 key(s)" in err and mine not in err  # a whole key is never echoed
    assert cli.main(["keys", "revoke", given]) == 1  # already revoked: nothing matches
    assert "no active key matches" in capsys.readouterr().err


def test_every_key_of_an_owner_by_name(sessions: sessionmaker[Session],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    alice = _keys(sessions, "alice", 2)
    (bob,) = _keys(sessions, "bob", 1)
    assert cli.main(["keys", "revoke", "alice"]) == 0
    assert "revoked 2 key(s) matching 'alice'" in capsys.readouterr().err
    assert not any(_works(sessions, key) for key in alice) and _works(sessions, bob)


def test_nothing_matches(sessions: sessionmaker[Session],
                         capsys: pytest.CaptureFixture[str]) -> None:
    (key,) = _keys(sessions, "alice", 1)
    assert cli.main(["keys", "revoke", "nobody"]) == 1
    assert cli.main(["keys", "revoke", key + "x"]) == 1  # a wrong whole key
    err = capsys.readouterr().err
    assert "no active key matches 'nobody'" in err and key not in err
    assert _works(sessions, key)
