"""What `mailfakes list` and `show` pay for, and that paying less weakened no check.

get(id) reads its own file only, yet a broken file elsewhere still fails
load_catalogue() and `mailfakes validate`; the cache of decoded TOML never
hides an edit nor skips a check; the value classes that replace dataclasses
behave as dataclasses did. Default worlds share the process's CA, each with
its own directory, and every bad certificate still fails for its own reason
whichever world's ca_file the client trusts; they share the process's loop
thread and nothing else, also across a fork. The per-user certificate cache
refuses and remakes what it cannot trust. The plugin warms up at collection
end only for a session that uses it. Figures are in benchmarks/bench_start.py
and bench_plugin.py, not here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import select
import signal
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mailfakes import World, catalogue, certs
from mailfakes.catalogue import ScenarioError, UnknownScenario
from mailfakes.certs import CertAuthority, CertCache, default_cache, shared_authority
from mailfakes.runtime import SHARED_THREAD_NAME, Runtime, default_runtime
from mailfakes.spec import HostSpec, Reply, SmtpPlan
from probe import RawSMTP, client_context, resolve_a

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
        assert view.ca_file.read_bytes() == owner.ca_pem  # its directory is made when first needed
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


# -- one runtime per process, isolation kept -------------------------------------

PLAIN_AND_TLS = {"zone": "test", "hosts": {"mx.contoso.test": {}, "plain.contoso.test": {"tls": "none"}}}


def greets(world: World, host: str = "plain.contoso.test") -> bool:
    try:
        c = RawSMTP.connect(world.address_of(host), world.port)
    except OSError:
        return False
    try:
        return c.reply().code == 220
    finally:
        c.close()


def test_default_worlds_share_one_thread_and_nothing_else() -> None:
    first, second = World(PLAIN_AND_TLS).start(), World(PLAIN_AND_TLS).start()
    try:
        runtime = default_runtime()
        assert first._sync_runtime is runtime and second._sync_runtime is runtime
        assert runtime.thread is not None and runtime.thread.name == SHARED_THREAD_NAME
        assert [t.name for t in threading.enumerate()].count(SHARED_THREAD_NAME) == 1
        assert first.subnet != second.subnet
        assert set(first.hosts.values()).isdisjoint(second.hosts.values())
        assert (first.dns_host, first.dns_port) != (second.dns_host, second.dns_port)
        assert first.ca_file.parent != second.ca_file.parent
        first_dir = first.ca_file.parent
        first.stop()
        assert not greets(first)
        assert not first_dir.exists()
        assert runtime.running and greets(second)  # the other world, and the thread, carry on
        assert handshake(second, "mx.contoso.test", second.ca_file) is None
        assert resolve_a(second.dns_host, second.dns_port, "plain.contoso.test").addresses == [
            second.address_of("plain.contoso.test")
        ]
    finally:
        first.stop()
        second.stop()
    assert default_runtime() is runtime  # still the one thread, for the next world


def test_a_world_given_its_own_runtime_runs_there() -> None:
    with Runtime() as private:
        world = World(PLAIN_AND_TLS, runtime=private).start()
        try:
            assert world._sync_runtime is private and private.thread is not default_runtime().thread
            assert greets(world)
        finally:
            world.stop()
        assert private.running  # a world's stop leaves the runtime it was given running


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_gets_its_own_runtime_and_leaves_the_parents_keys() -> None:
    parent_world = World(PLAIN_AND_TLS).start()
    try:
        parent_dir = parent_world.ca_file.parent
        parent_thread = default_runtime().thread
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report through the pipe, never return into pytest
            code = 1
            try:
                os.close(read)
                child_world = World(PLAIN_AND_TLS).start(timeout=10)
                ok = greets(child_world) and default_runtime().thread is not parent_thread
                child_world.stop()
                parent_world.ca.close()  # type: ignore[union-attr]  (the child's copy of the object)
                code = 0 if ok else 2
            finally:
                os.write(write, bytes([code]))
                os._exit(code)
        os.close(write)
        ready, _, _ = select.select([read], [], [], 30)
        outcome = os.read(read, 1) if ready else b""
        os.close(read)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        assert outcome == b"\x00"
        assert parent_dir.exists()  # the child's close did not remove the parent's key directory
        assert (
            greets(parent_world) and handshake(parent_world, "mx.contoso.test", parent_world.ca_file) is None
        )
    finally:
        parent_world.stop()


# -- the per-user certificate cache ------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path) -> CertCache:
    return CertCache(tmp_path / "cache" / "certs")


def entries(cache: CertCache) -> dict[str, dict[str, object]]:
    """Each entry's meta.json, by entry name."""
    return {
        p.name: json.loads((p / "meta.json").read_text())
        for p in cache.root.iterdir()
        if not p.name.startswith(".")
    }


def leaf_entry(cache: CertCache, kind: str = "valid") -> Path:
    (name,) = [n for n, meta in entries(cache).items() if meta.get("kind") == kind]
    return cache.root / name


def test_the_cache_gives_the_next_authority_the_same_ca_and_leaves(cache: CertCache) -> None:
    with CertAuthority(cache=cache) as first:
        leaf = first.issue("mx.contoso.test").leaf_pem
    with CertAuthority(cache=cache) as second:
        assert second.cache is cache
        assert second.issue("mx.contoso.test").leaf_pem == leaf
        assert second.issue("mx.contoso.test").cert_file.parent == second.directory  # its own copy
        out = handshake_with(second, "mx.contoso.test")
        assert out is None
    assert stat.S_IMODE(cache.root.stat().st_mode) == 0o700
    for entry in cache.root.iterdir():
        assert stat.S_IMODE(entry.stat().st_mode) == 0o700
        assert {stat.S_IMODE(f.stat().st_mode) for f in entry.iterdir()} == {0o600}


def handshake_with(ca: CertAuthority, host: str) -> int | None:
    world = {"zone": "test", "hosts": {host: {}}}
    with Runtime() as runtime:
        runtime._ca = ca.lend()  # the world presents what this authority issued
        with World(world, runtime=runtime) as w:
            return handshake(w, host, ca.ca_file)


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda entry: (entry / "key.pem").chmod(0o644), id="key-readable-by-others"),
        pytest.param(lambda entry: entry.chmod(0o755), id="entry-open-to-others"),
        pytest.param(
            lambda entry: (entry / "cert.pem").write_bytes((entry / "cert.pem").read_bytes()[:-40]),
            id="certificate-truncated",
        ),
        pytest.param(lambda entry: (entry / "meta.json").write_text("{"), id="meta-unreadable"),
        pytest.param(lambda entry: (entry / "omitted.pem").unlink(), id="file-missing"),
    ],
)
def test_a_spoiled_cache_entry_is_refused_and_made_again(cache: CertCache, spoil: Any) -> None:
    with CertAuthority(cache=cache) as first:
        before = first.issue("mx.contoso.test").leaf_pem
    entry = leaf_entry(cache)
    spoil(entry)
    with CertAuthority(cache=cache) as second:
        again = second.issue("mx.contoso.test")
        assert again.leaf_pem != before  # not the spoiled one: a new certificate
        assert handshake_with(second, "mx.contoso.test") is None
    remade = leaf_entry(cache)
    assert {stat.S_IMODE(f.stat().st_mode) for f in remade.iterdir()} == {0o600}
    assert (remade / "cert.pem").read_bytes() == again.leaf_pem


def test_a_cache_directory_open_to_others_is_emptied_and_made_private(cache: CertCache) -> None:
    with CertAuthority(cache=cache) as first:
        ca_before = first.ca_pem
    cache.root.chmod(0o755)
    fresh = CertCache(cache.root)
    with CertAuthority(cache=fresh) as second:
        assert second.ca_pem != ca_before
    assert stat.S_IMODE(cache.root.stat().st_mode) == 0o700


def test_a_cache_directory_that_is_a_link_is_not_used(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(target)
    linked = CertCache(tmp_path / "link")
    assert not linked.usable()
    with CertAuthority(cache=linked) as ca:
        assert ca.cache is None
        ca.issue("mx.contoso.test")
    assert list(target.iterdir()) == []


def test_an_old_cached_ca_is_replaced_with_its_leaves(
    cache: CertCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    with CertAuthority(cache=cache) as first:
        first.issue("mx.contoso.test")
        ca_before = first.ca_pem
    assert len(entries(cache)) == 2
    later = certs._now() + certs.CA_MAX_AGE + dt.timedelta(hours=1)
    monkeypatch.setattr(certs, "_now", lambda: later)
    with CertAuthority(cache=cache) as second:
        assert second.ca_pem != ca_before
        left = entries(cache)
        assert len(left) == 1 and "made" in next(iter(left.values()))  # the new CA; the old leaf is gone


def test_a_cached_leaf_about_to_change_kind_is_made_again(
    cache: CertCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    with CertAuthority(cache=cache) as first:
        early = first.issue("mx.contoso.test", "not_yet_valid")
    later = early.not_before - dt.timedelta(minutes=30)
    monkeypatch.setattr(certs, "_now", lambda: later)
    with CertAuthority(cache=cache) as second:
        again = second.issue("mx.contoso.test", "not_yet_valid")
        assert again.leaf_pem != early.leaf_pem and again.not_before > later


def test_the_cache_is_chosen_by_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILFAKES_CERT_CACHE", "off")
    assert default_cache() is None
    monkeypatch.setenv("MAILFAKES_CERT_CACHE", str(tmp_path / "mine"))
    assert default_cache().root == tmp_path / "mine"  # type: ignore[union-attr]
    monkeypatch.delenv("MAILFAKES_CERT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache().root == tmp_path / "xdg" / "mailfakes" / "certs"  # type: ignore[union-attr]
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # the XDG spec: ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache().root == tmp_path / "home" / ".cache" / "mailfakes" / "certs"  # type: ignore[union-attr]


def test_a_warm_cache_serves_without_trustme_or_cryptography(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from mailfakes import World\n"
        "w = World({'zone': 'test', 'hosts': {'mx.contoso.test': {}}}).start()\n"
        "w.stop()\n"
        "print(' '.join(m for m in ('trustme', 'cryptography') if m in sys.modules) or 'none')\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    env.pop("MAILFAKES_CERT_CACHE", None)
    outputs = [
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True, env=env
        ).stdout.strip()
        for _ in range(2)  # the first run makes the CA and the leaf, the second reads them
    ]
    assert outputs == ["trustme cryptography", "none"]


# -- the plugin makes its runtime when collection ends -----------------------------

WARM_CONFTEST = """
import threading

seen = []


def pytest_runtest_setup(item):
    seen.append(sorted(t.name for t in threading.enumerate() if t.name.startswith("mailfakes")))


def pytest_sessionfinish(session):
    print("\\nthreads before the first test:", seen[0] if seen else None)
"""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            "import pytest\n\n@pytest.mark.mail_scenarios('baseline-delivered')\n"
            "def test_it(mail_scenario):\n    assert mail_scenario.port\n",
            "['mailfakes-world']",
            id="uses-mailfakes",
        ),
        pytest.param("def test_it():\n    pass\n", "[]", id="does-not"),
    ],
)
def test_the_plugin_warms_up_only_for_a_session_that_needs_it(
    tmp_path: Path, body: str, expected: str
) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(WARM_CONFTEST)
    (tmp_path / "test_user.py").write_text(body)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"threads before the first test: {expected}" in done.stdout


# -- what a start leaves for later -------------------------------------------------


def test_a_world_starts_without_dnslib_and_its_first_query_is_answered() -> None:
    # dnslib is imported by the first packet (or by serve, after its ready line).
    probe = (
        "import sys\n"
        "import dns.message, dns.query, dns.rdatatype\n"
        "from mailfakes import World\n"
        "w = World({'zone': 'contoso.test', 'hosts': {'mx.contoso.test': {}}}).start()\n"
        "before = 'dnslib' in sys.modules\n"
        "q = dns.message.make_query('mx.contoso.test', 'A')\n"
        "r = dns.query.udp(q, w.dns_host, port=w.dns_port, timeout=5)\n"
        "answer = [rd.address for rrset in r.answer for rd in rrset]\n"
        "import json\n"
        "print(json.dumps([before, answer, w.address_of('mx.contoso.test')]))\n"
        "w.stop()\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    before, answer, address = json.loads(done.stdout)
    assert before is False
    assert answer == [address]


def test_a_command_start_pauses_the_collector_until_it_says_started() -> None:
    import gc

    from mailfakes.command import pause_collector, started

    assert gc.isenabled()
    frozen_before = gc.get_freeze_count()
    try:
        pause_collector()
        assert not gc.isenabled()
        started()
        assert gc.isenabled()
        assert gc.get_freeze_count() > frozen_before
        started()  # once only
        assert gc.isenabled()
        gc.disable()  # a caller's choice is kept
        pause_collector()
        started()
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


def test_main_called_with_arguments_leaves_the_collector_alone(capsys: pytest.CaptureFixture[str]) -> None:
    import gc

    from mailfakes.cli import main

    frozen_before = gc.get_freeze_count()
    assert main(["list", "--code", "success"]) == 0
    assert "baseline-delivered" in capsys.readouterr().out
    assert gc.isenabled() and gc.get_freeze_count() == frozen_before
