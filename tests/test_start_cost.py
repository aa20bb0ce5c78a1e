"""What `mailfakes list` and `show` pay for, and that paying less weakened no check.

get(id) reads its own file only, yet a broken file elsewhere still fails
load_catalogue() and `mailfakes validate`; the cache of decoded TOML never
hides an edit nor skips a check; the value classes that replace dataclasses
behave as dataclasses did. Default worlds share the process's CA, each with
its own directory, and every bad certificate still fails for its own reason
whichever world's ca_file the client trusts. Figures are in
benchmarks/bench_start.py, not here.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mailfakes import World, catalogue, certs
from mailfakes.catalogue import ScenarioError, UnknownScenario
from mailfakes.certs import CertAuthority, shared_authority
from mailfakes.spec import HostSpec, Reply, SmtpPlan
from probe import RawSMTP, client_context

GOOD = "baseline-delivered"


@pytest.fixture
def own_catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A catalogue directory of the test's own, standing for the package's, cache allowed."""
    directory = tmp_path / "catalogue"
    directory.mkdir()
    (directory / "__init__.py").write_text("")
    real = catalogue.CATALOGUE_DIR / f"{GOOD}.toml"
    (directory / f"{GOOD}.toml").write_bytes(real.read_bytes())
    monkeypatch.setattr(catalogue, "CATALOGUE_DIR", directory)
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    catalogue.clear_cache()
    yield directory
    catalogue.clear_cache()


def test_get_reads_its_own_file_only(own_catalogue: Path) -> None:
    (own_catalogue / "broken.toml").write_text('id = "broken"\ncode = \n')
    assert catalogue.get(GOOD).id == GOOD
    with pytest.raises(ScenarioError, match=r"broken\.toml: line 2, column \d+: invalid TOML"):
        catalogue.load_catalogue()


def test_get_of_a_broken_file_reports_it(own_catalogue: Path) -> None:
    text = (own_catalogue / f"{GOOD}.toml").read_text()
    (own_catalogue / f"{GOOD}.toml").write_text(text.replace('rfc3463 = "', 'rfc3463 = "9'))
    with pytest.raises(ScenarioError, match=r"rfc3463: '9"):
        catalogue.get(GOOD)


def test_a_miss_still_suggests_close_ids(own_catalogue: Path) -> None:
    with pytest.raises(UnknownScenario) as err:
        catalogue.get("baseline-deliverd")
    assert err.value.suggestions == (GOOD,)
    with pytest.raises(UnknownScenario):
        catalogue.get("../catalogue/baseline-delivered")


def test_cached_toml_is_checked_again_on_every_load(own_catalogue: Path) -> None:
    bad = own_catalogue / "bad-value.toml"
    text = (own_catalogue / f"{GOOD}.toml").read_text().replace(GOOD, "bad-value")
    bad.write_text(text.replace('rfc3463 = "', 'rfc3463 = "9'))
    for _ in range(2):  # the first load writes the cache, the second reads it
        with pytest.raises(ScenarioError, match=r"bad-value\.toml: rfc3463: '9"):
            catalogue.load_catalogue()
        catalogue.clear_cache()
    assert list(own_catalogue.glob("__pycache__/catalogue.*.marshal"))


def test_an_edit_after_caching_is_seen(own_catalogue: Path) -> None:
    other = own_catalogue / "second-one.toml"
    text = (own_catalogue / f"{GOOD}.toml").read_text().replace(GOOD, "second-one")
    other.write_text(text)
    assert set(catalogue.load_catalogue()) == {GOOD, "second-one"}
    catalogue.clear_cache()
    other.write_text(text.replace("[world]", "[world]\nbogus = 1", 1))
    with pytest.raises(ScenarioError, match=r"second-one\.toml: world\.bogus: unknown key"):
        catalogue.load_catalogue()


def test_validate_fails_a_broken_file_beside_good_ones(tmp_path: Path) -> None:
    real = catalogue.CATALOGUE_DIR / f"{GOOD}.toml"
    broken = tmp_path / "not-quite.toml"
    text = real.read_text().replace(GOOD, "not-quite")
    broken.write_text(text.replace("[target]", "[target]\nsmart_hots = 'x.test'", 1))
    proc = subprocess.run(
        [sys.executable, "-m", "mailfakes", "validate", str(real), str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"ok   {real}" in proc.stdout
    assert "FAIL " in proc.stdout and "target.smart_hots: unknown key" in proc.stdout
    assert "1 valid, 1 invalid" in proc.stdout


def test_list_and_show_import_none_of_the_costly_modules() -> None:
    probe = (
        "import sys\n"
        "from mailfakes import catalogue\n"
        "catalogue.get('baseline-delivered')\n"
        "catalogue.load_catalogue()\n"
        "heavy = ('dataclasses', 'inspect', 'tomllib', 'difflib', 'importlib.resources')\n"
        "print(' '.join(m for m in heavy if m in sys.modules) or 'none')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    outputs = [
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True, env=env
        ).stdout.strip()
        for _ in range(2)  # the first run may have to decode (and cache) the files
    ]
    assert outputs[1] == "none"


def test_value_classes_behave_as_frozen_dataclasses() -> None:
    reply = Reply(250, "ok")
    assert repr(reply) == "Reply(code=250, text='ok', enhanced=None, close=None)"
    assert reply == Reply(code=250, text="ok") and reply != Reply(250, "ok", "2.0.0")
    assert hash(reply) == hash(Reply(250, "ok"))
    with pytest.raises(AttributeError):
        reply.code = 500  # type: ignore[misc]
    assert SmtpPlan().replies == {} and SmtpPlan().replies is not SmtpPlan().replies
    assert HostSpec("a.test").smtp == SmtpPlan()
    with pytest.raises(TypeError, match="missing required argument: 'code'"):
        Reply()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        Reply(250, colour="red")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="multiple values for argument 'code'"):
        Reply(250, code=251)  # type: ignore[misc]


# -- one CA per process, a directory per world ----------------------------------

BAD_CERTS = {
    "zone": "test",
    "hosts": {
        "good.contoso.test": {},
        "untrusted.contoso.test": {"cert": "untrusted_ca"},
        "selfsigned.contoso.test": {"cert": "self_signed"},
        "chain.contoso.test": {"cert": "missing_intermediate"},
    },
}


def handshake(world: World, host: str, ca_file: Path) -> int | None:
    """None when the STARTTLS handshake verifies; else OpenSSL's verify code."""
    c = RawSMTP.connect(world.address_of(host), world.port)
    try:
        c.reply()
        c.cmd("EHLO client.test")
        assert c.cmd("STARTTLS").code == 220
        try:
            c.starttls(client_context(str(ca_file)), host)
        except ssl.SSLCertVerificationError as exc:
            return exc.verify_code
        return None
    finally:
        c.close()


def test_default_worlds_share_the_ca_each_in_its_own_directory() -> None:
    with World(BAD_CERTS) as first, World(BAD_CERTS) as second:
        assert first.ca_file != second.ca_file
        assert first.ca_file.parent != second.ca_file.parent
        assert first.ca_file.read_bytes() == second.ca_file.read_bytes()
        kept = second.ca_file
        first.stop()
        assert not first.ca_file.parent.exists()
        assert kept.exists()  # the other world's directory is untouched
        assert handshake(second, "good.contoso.test", kept) is None


def test_every_bad_certificate_fails_for_its_reason_whichever_world_is_trusted() -> None:
    with World(BAD_CERTS) as first, World(BAD_CERTS) as second:
        for client_of in (first, second):
            for server in (first, second):
                assert handshake(server, "untrusted.contoso.test", client_of.ca_file) == 20
                assert handshake(server, "selfsigned.contoso.test", client_of.ca_file) == 18
                assert handshake(server, "chain.contoso.test", client_of.ca_file) == 20


def test_a_closed_shared_authority_is_replaced() -> None:
    first = shared_authority()
    with World(BAD_CERTS) as world:
        assert world.ca_file.read_bytes() == first.ca_pem
    first.close()
    second = shared_authority()
    assert second is not first and not second.closed
    with World(BAD_CERTS) as world:
        assert world.ca_file.read_bytes() == second.ca_pem
        assert handshake(world, "good.contoso.test", world.ca_file) is None


def test_a_lent_view_closes_alone() -> None:
    with CertAuthority() as owner:
        view = owner.lend()
        view.server_context("mx.contoso.test")
        view.close()
        assert not view.directory.exists() and owner.directory.exists()
        with pytest.raises(RuntimeError, match="closed"):
            view.issue("mx.contoso.test")
        assert owner.issue("mx.contoso.test").cert_file.exists()


def test_a_cached_certificate_is_issued_again_before_it_changes_kind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with CertAuthority() as ca:
        early = ca.issue("mx.contoso.test", "not_yet_valid")
        valid = ca.issue("mx.contoso.test", "valid")
        assert ca.issue("mx.contoso.test", "not_yet_valid") is early
        later = early.not_before - dt.timedelta(minutes=30)  # a long-lived process, a day on
        monkeypatch.setattr(certs, "_now", lambda: later)
        again = ca.issue("mx.contoso.test", "not_yet_valid")
        assert again.cert_file != early.cert_file
        assert again.not_before > later
        assert ca.issue("mx.contoso.test", "valid") is valid  # a year left: kept
        ca.server_context("mx.contoso.test", "not_yet_valid")  # loads the new files
