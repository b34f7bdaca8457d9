"""Provisioning: a CA per experiment, kits per party, owner-only keys, nothing overwritten."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from fedsilo.errors import ConfigError, KitError
from fedsilo.experiment.config import load_config
from fedsilo.experiment.provision import (
    CA_DIR,
    CERT,
    CREDENTIAL,
    KEY,
    SERVER,
    TASK,
    add_silo,
    credential_hash,
    kit_problems,
    load_kit,
    provision,
)


def _cn(kit_dir: Path) -> str:
    cert = x509.load_pem_x509_certificate((kit_dir / CERT).read_bytes())
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_provision_writes_a_kit_per_party_signed_by_one_ca(make_experiment, tmp_path: Path) -> None:
    config, _ = load_config(make_experiment())
    report = provision(config, tmp_path / "kits", "fl.example.org:7355")
    kits = tmp_path / "kits"
    assert sorted(p.name for p in kits.iterdir()) == sorted([CA_DIR, SERVER, "a", "b", "c"])
    assert [k.name for k in report.kits] == [SERVER, "a", "b", "c"]
    for name in ("a", "b", "c"):
        kit = load_kit(kits / name)
        assert (kit.role, kit.name, kit.server_address) == ("silo", name, "fl.example.org:7355")
        assert _cn(kits / name) == name  # the certificate names the silo: that is its identity
        assert kit_problems(kit) == []
        assert (kits / name / TASK).read_bytes() == config.task.read_bytes()
        for private in (KEY, CREDENTIAL):
            assert stat.S_IMODE((kits / name / private).stat().st_mode) == 0o600
    server = load_kit(kits / SERVER)
    assert kit_problems(server) == []
    assert server.silo_credentials == {n: credential_hash(load_kit(kits / n).credential) for n in ("a", "b", "c")}
    san = x509.load_pem_x509_certificate(server.cert_pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert "fl.example.org" in san.value.get_values_for_type(x509.DNSName)
    assert stat.S_IMODE((kits / CA_DIR / "ca.key").stat().st_mode) == 0o600
    credentials = {load_kit(kits / n).credential for n in ("a", "b", "c")}
    assert len(credentials) == 3


def test_provision_refuses_to_overwrite_and_add_silo_touches_no_other_kit(make_experiment, tmp_path: Path) -> None:
    config, _ = load_config(make_experiment())
    kits = tmp_path / "kits"
    provision(config, kits)
    before = {p: p.read_bytes() for p in kits.rglob("*") if p.is_file() and p.parent.name != SERVER}
    with pytest.raises(KitError, match="already holds kits"):
        provision(config, kits)
    path = add_silo(config, kits, "d")
    assert load_kit(path).name == "d" and kit_problems(load_kit(path)) == []
    assert {p: p.read_bytes() for p in before} == before  # CA and other silos untouched
    server = json.loads((kits / SERVER / "kit.json").read_text())
    assert sorted(server["silos"]) == ["a", "b", "c", "d"]
    with pytest.raises(KitError, match="already exists"):
        add_silo(config, kits, "a")
    with pytest.raises(ConfigError):
        add_silo(config, kits, "bad name!")


def test_kit_problems_finds_expiry_a_foreign_ca_and_loose_permissions(make_experiment, tmp_path: Path) -> None:
    config, _ = load_config(make_experiment())
    provision(config, tmp_path / "one")
    provision(config, tmp_path / "two")
    kit = load_kit(tmp_path / "one" / "a")
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=400)
    assert any("expired" in p for p in kit_problems(kit, now=later))
    foreign = tmp_path / "one" / "a" / "ca.crt"
    foreign.write_bytes((tmp_path / "two" / CA_DIR / "ca.crt").read_bytes())
    (tmp_path / "one" / "a" / KEY).chmod(0o644)
    problems = kit_problems(load_kit(tmp_path / "one" / "a"))
    assert any("not signed by" in p for p in problems)
    assert any("readable by others" in p for p in problems)


def test_a_damaged_kit_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(KitError, match="not a fedsilo kit"):
        load_kit(tmp_path)
    (tmp_path / "kit.json").write_text('{"role": "silo"}')
    with pytest.raises(KitError, match="incomplete or damaged"):
        load_kit(tmp_path)


def test_provision_cli_prints_the_kits_and_refuses_a_bad_address(cli, make_experiment, tmp_path: Path) -> None:
    exp = make_experiment()
    result = cli("provision", exp, "--out", tmp_path / "k", "--server-address", "fl.example.org:7355")
    assert result.exit_code == 0, result.stderr
    assert "fl.example.org:7355" in result.stdout
    again = cli("provision", exp, "--out", tmp_path / "k")
    assert again.exit_code == 9 and "already holds kits" in again.stderr
    bad = cli("provision", exp, "--out", tmp_path / "k2", "--server-address", "nohost")
    assert bad.exit_code == 2 and "HOST:PORT" in bad.stderr
    added = cli("provision", exp, "--out", tmp_path / "k", "--add-silo", "d")
    assert added.exit_code == 0 and (tmp_path / "k" / "d" / CERT).is_file()
